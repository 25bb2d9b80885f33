"""What pruning saves: the same 40-trial digits study with pruner none vs median, hyperband, ...

    .venv/bin/python benchmarks/pruning.py [--n-trials 40] [--pruners none,median,hyperband,percentile,...]

Each study is ``nnstudy run digits.toml --n-trials 40 --sampler tpe --seed 42 --pruner P
--no-progress`` in a fresh temporary directory, on a copy of the shipped ``studies/digits.toml``
(val_accuracy, max 50 epochs, patience 8). A pruner entry may carry ``[study]`` settings that are
written into that copy, ``PRUNER:key=value[:key=value...]``; e.g. ``percentile:pruner_warmup_epochs=2``
is the percentile pruner with a warm-up of 2 epochs instead of the default 5. The copy is checked
with ``nnstudy.load_spec`` before the study runs. Epochs trained are counted from the Optuna storage:
the number of intermediate values of every trial (nnstudy reports every epoch), cross-checked
against the ``stopped_epoch`` / ``pruned_at`` trial attributes. Appends (or replaces) the
``pruning`` section of RESULTS.md (``--section`` for another).
Target: >= 2.5x fewer epochs with the best value within 2% of the unpruned study's.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import nnstudy
from _common import NNSTUDY, ROOT, child_env, command_line, machine, md_table, write_section

TARGET_EPOCH_RATIO = 2.5
TARGET_BEST_DIFF = 0.02
SPEC = ROOT / "studies" / "digits.toml"
DEFAULT_PRUNERS = "none,median,hyperband,percentile,percentile:pruner_warmup_epochs=2,asha"


def parse_entry(entry: str) -> tuple[str, dict[str, int | float | str]]:
    """``percentile:pruner_warmup_epochs=2`` -> ("percentile", {"pruner_warmup_epochs": 2})."""
    pruner, *pairs = entry.split(":")
    settings: dict[str, int | float | str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--pruners: {entry!r}: expected PRUNER:key=value[:key=value...]")
        value: int | float | str
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                value = raw.strip()
        settings[key.strip()] = value
    return pruner.strip(), settings


def spec_text(metric: str | None, settings: dict[str, int | float | str]) -> str:
    """The shipped digits spec with ``[study]`` settings (and the metric) replaced or added."""
    text = SPEC.read_text()
    head, sep, rest = text.partition("[study]\n")
    study, nxt, tail = rest.partition("\n[")  # the [study] table ends where the next table starts
    for key, value in {**({"metric": metric} if metric else {}), **settings}.items():
        line = f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value!r}"
        study, found = re.subn(rf"(?m)^{re.escape(key)} = .*$", line.replace("\\", "\\\\"), study, count=1)
        if not found:
            study = f"{line}\n{study}"
    return head + sep + study + nxt + tail


def run_study(entry: str, n_trials: int, seed: int, metric: str | None) -> dict[str, Any]:
    import optuna

    pruner, settings = parse_entry(entry)
    work = Path(tempfile.mkdtemp(prefix=f"nnbench-pruning-{pruner}-"))
    try:
        (work / "digits.toml").write_text(spec_text(metric, settings))
        nnstudy.load_spec(work / "digits.toml", overrides={"study": {"pruner": pruner}})  # as nnstudy run will read it
        env = child_env()
        # --workers 1: TPE then samples the same sequence for every pruner (workers would interleave by timing)
        cmd = [NNSTUDY, "run", "digits.toml", "--workers", "1", "--n-trials", str(n_trials), "--sampler", "tpe", "--seed", str(seed),
               "--pruner", pruner, "--no-progress"]
        start = time.time()
        with open(work / "stdout.txt", "w") as out, open(work / "stderr.txt", "w") as err:
            proc = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=err, check=False)
        wall = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(f"pruner {entry}: nnstudy failed (exit {proc.returncode}):\n"
                             + (work / "stderr.txt").read_text()[-3000:])
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        storage = f"sqlite:///{work}/mlruns/optuna.db"
        name = optuna.get_all_study_names(storage)[0]
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        epochs = sum(len(t.intermediate_values) for t in trials)
        attr_epochs = sum(int(t.user_attrs.get("pruned_at") or t.user_attrs.get("stopped_epoch") or 0)
                          for t in trials)
        states = {s.name: sum(1 for t in trials if t.state == s) for s in optuna.trial.TrialState}
        return {"pruner": entry, "wall": wall, "trials": len(trials), "epochs": epochs, "attr_epochs": attr_epochs,
                "best": study.best_value, "best_trial": study.best_trial.number,
                "direction": study.direction.name.lower(),
                "metric": study.best_trial.user_attrs.get("metric") or (metric or "spec"),
                "complete": states.get("COMPLETE", 0), "pruned": states.get("PRUNED", 0),
                "failed": states.get("FAIL", 0)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="pruned vs unpruned digits study (see the module docstring)")
    parser.add_argument("--n-trials", type=int, default=40)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--pruners", default=DEFAULT_PRUNERS,
                        help="comma-separated; the first is the baseline; an entry PRUNER:key=value[:key=value...] "
                        f"also writes those [study] settings into the spec (default: {DEFAULT_PRUNERS})")
    parser.add_argument("--metric", help="override the spec's [study].metric (default: as shipped)")
    parser.add_argument("--section", default="pruning", help="RESULTS.md section to write (default: pruning)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    pruners = [p.strip() for p in args.pruners.split(",") if p.strip()]
    for entry in pruners:  # a malformed entry or an unknown setting fails before the first study
        pruner, settings = parse_entry(entry)
        raw = tomllib.loads(spec_text(args.metric, settings))
        raw["study"]["pruner"] = pruner
        try:
            nnstudy.parse_spec(raw)
        except nnstudy.SpecError as err:
            raise SystemExit(f"--pruners: {entry!r}: {err}") from None

    metric = args.metric or nnstudy.load_spec(SPEC).study.metric
    info = machine()
    results = []
    for pruner in pruners:
        r = run_study(pruner, args.n_trials, args.seed, args.metric)
        results.append(r)
        print(f"pruner {pruner:20s} wall {r['wall']:6.1f} s  epochs {r['epochs']:4d} (attrs {r['attr_epochs']})  "
              f"best {r['best']:.4f} (trial {r['best_trial']})  complete {r['complete']} pruned {r['pruned']} "
              f"failed {r['failed']}", flush=True)
    base = results[0]
    rows, verdicts = [], []
    for r in results:
        ratio = base["epochs"] / r["epochs"]
        worse = (base["best"] - r["best"]) if r["direction"] == "maximize" else (r["best"] - base["best"])
        rel = worse / abs(base["best"])
        rows.append([r["pruner"], f"{r['wall']:.0f}", str(r["epochs"]), f"{ratio:.2f}x", f"{r['best']:.4f}",
                     f"{100 * rel:+.2f}%", f"{r['complete']} / {r['pruned']} / {r['failed']}",
                     f"{base['wall'] / r['wall']:.2f}x"])
        if r is not base:
            ok_epochs, ok_best = ratio >= TARGET_EPOCH_RATIO, rel <= TARGET_BEST_DIFF
            verdicts.append(f"- {r['pruner']}: {ratio:.2f}x fewer epochs ({'met' if ok_epochs else 'not met'}: "
                            f"target ≥ {TARGET_EPOCH_RATIO}x), best value {100 * rel:+.2f}% vs unpruned "
                            f"({'met' if ok_best else 'not met'}: target within {100 * TARGET_BEST_DIFF:.0f}%) → "
                            f"**{'met' if ok_epochs and ok_best else 'not met'}**")
    table = md_table(["pruner", "wall s", "epochs trained", f"fewer epochs than {base['pruner']}",
                      f"best {metric}", f"best worse than {base['pruner']} by", "complete / pruned / failed",
                      "wall speed-up"], rows)
    text = f"""## Pruning: {args.n_trials}-trial digits study, pruner {' vs '.join(pruners)}

Command: `{command_line()}` ({info['date']}, load average {info['load average at start (1/5/15 min)']}, nnstudy {info['nnstudy commit']}).
Each study: `nnstudy run studies/digits.toml --n-trials {args.n_trials} --sampler tpe --seed {args.seed}
--pruner P --no-progress` in a fresh directory (metric {metric}, max 50 epochs, patience 8 as shipped).
A row `P:key=value` ran with those `[study]` settings written into the spec (e.g. `pruner_warmup_epochs`).
Epochs = intermediate values reported to Optuna (one per epoch trained), summed over all trials.
"Worse by" is relative to the unpruned best ({base['best']:.4f}); negative means the pruned study found better.

{table}

Targets (≥ {TARGET_EPOCH_RATIO}x fewer epochs, best within {100 * TARGET_BEST_DIFF:.0f}%):

{chr(10).join(verdicts)}
"""
    print()
    print(text)
    if not args.no_write:
        write_section(args.section, text)


if __name__ == "__main__":
    main()
