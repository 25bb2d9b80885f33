"""Does a study use every core? The same 16 fixed digits configurations with ``--workers 1`` and the default.

    .venv/bin/python benchmarks/workers.py [--repeats 1] [--epochs 25] [--variants 1,auto] [--no-write]

Method (nnstudy is not modified): 16 configurations are drawn once from the compare search space
(``random.Random(16)``: fixed, so every run of this script trains the same ones) and enqueued with
``nnstudy run spec.toml --enqueue configs.json --n-trials 16 --pruner none``; digits, val_loss,
``--epochs`` epochs at most (patience 5). Each variant runs in a fresh folder with fresh stores; the
variants alternate per repeat (``1, auto, 1, auto, ...``) so that a change of the machine's load
touches both. ``auto`` passes no ``--workers`` at all: it is what a user gets by default. For each
variant: wall time of the whole command, CPU seconds (user + system of it and its children), CPU
utilisation (CPU ÷ wall, 100% = one core) and the trial values by trial number, which must be
identical between variants up to the last digits (each trial's seed and thread count decide its curve,
not the worker it ran in; ``--workers 1`` trains with every core, a worker with one thread: a differing
trial is listed with the largest relative difference). Prints **wall(--workers 1) ÷ wall(default)**, median over repeats (target ≥ 1.7 on 2 cores),
and writes the ``workers`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import NNSTUDY, child_env, command_line, machine, machine_md, md_table, write_section

TARGET = 1.7
STUDY = "bench-workers"
N_CONFIGS = 16
SPACE: dict[str, list[Any]] = {
    "optimizer": ["sgd", "adam", "rmsprop", "adagrad", "adadelta"],
    "batch_size": [16, 32, 64, 128],
    "depth": [0, 1, 2, 3],
    "units": [16, 32, 64, 128],
    "activation": ["relu", "tanh", "sigmoid", "elu"],
}


def configs() -> list[dict[str, Any]]:
    """The 16 fixed configurations (the same on every run of this script)."""
    rng = random.Random(16)
    out = []
    for _ in range(N_CONFIGS):
        config = {key: rng.choice(values) for key, values in SPACE.items()}
        config["learning_rate"] = round(10 ** rng.uniform(-4, -1), 6)
        config["dropout"] = round(rng.uniform(0.0, 0.5), 3)
        out.append(config)
    return out


def spec_text(epochs: int) -> str:
    return f"""# written by benchmarks/workers.py
[study]
name = "{STUDY}"
metric = "val_loss"
sampler = "random"
pruner = "none"
seed = 42

[data]
source = "digits"
task = "multiclass"

[train]
max_epochs = {epochs}
early_stopping_patience = 5

[search]
learning_rate = {{ low = 1e-4, high = 1e-1, log = true }}
optimizer = {json.dumps(SPACE["optimizer"])}
batch_size = {json.dumps(SPACE["batch_size"])}
dropout = {{ low = 0.0, high = 0.5 }}
depth = {{ low = 0, high = 3 }}
units = {json.dumps(SPACE["units"])}
activation = {json.dumps(SPACE["activation"])}
"""


def run_variant(variant: str, epochs: int, work: Path) -> dict[str, Any]:
    (work / "spec.toml").write_text(spec_text(epochs))
    (work / "configs.json").write_text(json.dumps(configs()))
    cmd = [NNSTUDY, "run", "spec.toml", "--enqueue", "configs.json", "--n-trials", str(N_CONFIGS), "--no-progress"]
    if variant != "auto":
        cmd += ["--workers", variant]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=child_env(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{variant}: exit {proc.returncode} in {work}:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with sqlite3.connect(f"file:{work}/mlruns/optuna.db?mode=ro", uri=True) as db:
        values = dict(db.execute("SELECT t.number, v.value FROM trials t JOIN trial_values v "
                                 "ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE'").fetchall())
        processes = {row[0] for row in db.execute(
            "SELECT value_json FROM trial_user_attributes WHERE key = 'pid'").fetchall()}
    if len(values) != N_CONFIGS:
        raise SystemExit(f"{variant}: {len(values)} complete trials, expected {N_CONFIGS} ({work})")
    return {"variant": variant, "wall": wall, "cpu": cpu, "values": values, "processes": len(processes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--variants", default="1,auto", help="--workers values; auto: the default (no flag)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    info = machine()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        for variant in variants:
            with tempfile.TemporaryDirectory(prefix=f"nnstudy-workers-{variant}-") as tmp:
                result = run_variant(variant, args.epochs, Path(tmp))
            runs[variant].append(result)
            print(f"repeat {repeat + 1}/{args.repeats} --workers {variant}: {result['wall']:.1f} s wall, "
                  f"{result['cpu']:.1f} s CPU ({100 * result['cpu'] / result['wall']:.0f}%), "
                  f"{result['processes']} training process(es)", flush=True)

    base = variants[0]
    reference = runs[base][0]["values"]
    rows, lines = [], []
    for variant in variants:
        walls = [r["wall"] for r in runs[variant]]
        utils = [100 * r["cpu"] / r["wall"] for r in runs[variant]]
        ratios = [b["wall"] / r["wall"] for b, r in zip(runs[base], runs[variant])]
        differing = sorted({n for r in runs[variant] for n, v in r["values"].items() if v != reference[n]})
        worst = max((abs(v - reference[n]) / max(abs(reference[n]), 1e-12)
                     for r in runs[variant] for n, v in r["values"].items()), default=0.0)
        rows.append([f"`--workers {variant}`" if variant != "auto" else "default (auto)",
                     " / ".join(f"{w:.1f}" for w in (min(walls), statistics.median(walls), max(walls))),
                     f"{statistics.median(utils):.0f}%", str(runs[variant][0]["processes"]),
                     f"{statistics.median(ratios):.2f}",
                     "identical" if not differing else
                     f"differ in trials {differing} (largest relative difference {worst:.1e}: `--workers 1` trains "
                     "with every core, a worker with one thread, and a reduction may sum in another order)"])
    auto = "auto" if "auto" in variants else variants[-1]
    ratio = statistics.median([b["wall"] / r["wall"] for b, r in zip(runs[base], runs[auto])])
    verdict = "met" if ratio >= TARGET else f"NOT met (distance {TARGET - ratio:.2f})"
    cores = len(os.sched_getaffinity(0))
    table = md_table(["variant", "wall s (min / median / max)", "CPU ÷ wall", "training processes",
                      f"wall(--workers {base}) ÷ wall", "trial values vs first"], rows)
    lines.append(f"**wall(--workers {base}) ÷ wall({auto}) = {ratio:.2f}** on {cores} cores "
                 f"(median of {args.repeats}; target ≥ {TARGET}: {verdict})")
    print(table)
    print(lines[0])
    if not args.no_write:
        body = (f"## Every core by default (workers)\n\n`{command_line()}`: {N_CONFIGS} fixed digits configurations "
                f"(enqueued; ≤ {args.epochs} epochs, patience 5, no pruning), each variant in fresh stores, "
                f"variants alternating.\n\n{machine_md(info)}\n\n{table}\n\n{lines[0]}\n")
        write_section("workers", body)


if __name__ == "__main__":
    main()
