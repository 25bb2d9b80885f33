"""Does a trial cost only its epochs? A 150-trial, 2-epoch study with compiled models reused and without.

    .venv/bin/python benchmarks/reuse.py [--n-trials 150] [--epochs 2] [--no-write]

Method (nnstudy is not modified): ``studies/pass_fail.toml`` with ``[study] n_trials``, ``pruner = "none"``,
no timeout and ``[train] max_epochs = --epochs``, once with ``[train].reuse_compiled = true`` (the default)
and once with ``false``, each ``nnstudy run SPEC --workers 1`` (one process: the per-trial cost, not the
parallelism) in fresh stores, one after the other. Per-trial time = the Optuna trial's datetime_start →
datetime_complete; the hit rate is the share of runs tagged ``nnstudy.reused_compiled = true``. Both runs
must give every trial the same parameters and value (reuse draws the fresh model's curve bit for bit).
Prints the median per-trial time of each (target with reuse: ≤ 0.4 s) and off ÷ on, and writes the
``reuse`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import NNSTUDY, ROOT, child_env, command_line, machine, machine_md, md_table, write_section

TARGET_S = 0.4


def spec_text(n_trials: int, epochs: int, reuse: bool) -> str:
    base = tomllib.loads((ROOT / "studies" / "pass_fail.toml").read_text())
    base["study"].update(n_trials=n_trials, pruner="none")
    base["study"].pop("timeout", None)
    base["train"].update(max_epochs=epochs, reuse_compiled=reuse)
    lines = []
    for section, values in base.items():
        if isinstance(values, list):  # [[enqueue]]
            for item in values:
                lines += [f"[[{section}]]", *(f"{k} = {_toml(v)}" for k, v in item.items()), ""]
            continue
        lines += [f"[{section}]", *(f"{k} = {_toml(v)}" for k, v in values.items()), ""]
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def run(reuse: bool, n_trials: int, epochs: int, work: Path) -> dict[str, Any]:
    (work / "spec.toml").write_text(spec_text(n_trials, epochs, reuse))
    start = time.perf_counter()
    proc = subprocess.run([NNSTUDY, "run", "spec.toml", "--workers", "1", "--no-progress"], cwd=work,
                          env=child_env(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"reuse={reuse}: exit {proc.returncode} in {work}:\n{proc.stderr[-3000:]}")
    with sqlite3.connect(f"file:{work}/mlruns/optuna.db?mode=ro", uri=True) as db:
        rows = db.execute("SELECT t.number, t.datetime_start, t.datetime_complete, v.value FROM trials t "
                          "LEFT JOIN trial_values v ON v.trial_id = t.trial_id").fetchall()
        params = db.execute("SELECT t.number, p.param_name, p.param_value FROM trials t "
                            "JOIN trial_params p ON p.trial_id = t.trial_id").fetchall()
    with sqlite3.connect(f"file:{work}/mlruns/mlflow.db?mode=ro", uri=True) as db:
        hits = db.execute("SELECT count(*) FROM tags WHERE key = 'nnstudy.reused_compiled' AND value = 'true'"
                          ).fetchone()[0]
    times = [(datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() for _, a, b, _ in rows if b]
    by_trial: dict[int, Any] = {n: [v, {}] for n, _, _, v in rows}
    for n, name, value in params:
        by_trial[n][1][name] = value
    return {"wall": wall, "median": statistics.median(times), "hits": hits, "n": len(rows),
            "trials": {n: (v, tuple(sorted(p.items()))) for n, (v, p) in by_trial.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-trials", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    info = machine()
    results = {}
    for reuse in (True, False):
        with tempfile.TemporaryDirectory(prefix=f"nnstudy-reuse-{reuse}-") as tmp:
            results[reuse] = run(reuse, args.n_trials, args.epochs, Path(tmp))
        r = results[reuse]
        print(f"reuse_compiled = {str(reuse).lower()}: median {r['median']:.3f} s per trial, {r['hits']}/{r['n']} "
              f"reused, {r['wall']:.1f} s in all", flush=True)
    on, off = results[True], results[False]
    same = on["trials"] == off["trials"]
    verdict = "met" if on["median"] <= TARGET_S else f"NOT met (over by {on['median'] - TARGET_S:.3f} s)"
    table = md_table(["`[train].reuse_compiled`", "median s per trial", "trials on a reused model", "whole run s"], [
        ["true (default)", f"{on['median']:.3f}", f"{on['hits']}/{on['n']}", f"{on['wall']:.1f}"],
        ["false", f"{off['median']:.3f}", "0", f"{off['wall']:.1f}"]])
    lines = [f"**median per trial with reuse: {on['median']:.3f} s** (target ≤ {TARGET_S} s: {verdict}); "
             f"off ÷ on = {off['median'] / on['median']:.2f}; every trial's parameters and value "
             + ("identical in both runs" if same else "**differ between the runs**")]
    print(table)
    print(lines[0])
    if not args.no_write:
        write_section("reuse", f"## A trial costs its epochs (reuse)\n\n`{command_line()}`: studies/pass_fail.toml, "
                               f"{args.n_trials} trials of at most {args.epochs} epochs, no pruning, `--workers 1`, "
                               f"fresh stores, reuse on then off ({os.cpu_count()} cores).\n\n{machine_md(info)}\n\n"
                               f"{table}\n\n{lines[0]}\n")


if __name__ == "__main__":
    main()
