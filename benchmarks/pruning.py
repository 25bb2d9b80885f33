"""What pruning saves: the same 40-trial digits study with pruner none vs median, hyperband, ...

    .venv/bin/python benchmarks/pruning.py [--n-trials 40] [--pruners none,median,hyperband,percentile,asha]

Each study is ``nnstudy run studies/digits.toml --n-trials 40 --sampler tpe --seed 42 --pruner P
--no-progress`` (the shipped digits spec: val_accuracy, max 50 epochs, patience 8) in a fresh
temporary directory. Epochs trained are counted from the Optuna storage: the number of intermediate
values of every trial (nnstudy reports every epoch), cross-checked against the ``stopped_epoch`` /
``pruned_at`` trial attributes. Appends (or replaces) the ``pruning`` section of RESULTS.md (``pruning-whatif`` with --whatif).
Target: >= 2.5x fewer epochs with the best value within 2% of the unpruned study's.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, NNSTUDY, PYTHON, ROOT, child_env, command_line, machine, md_table, write_section

TARGET_EPOCH_RATIO = 2.5
TARGET_BEST_DIFF = 0.02
SPEC = ROOT / "studies" / "digits.toml"


def run_study(pruner: str, n_trials: int, seed: int, metric: str | None) -> dict[str, Any]:
    import optuna

    work = Path(tempfile.mkdtemp(prefix=f"nnbench-pruning-{pruner}-"))
    try:
        text = SPEC.read_text()
        if metric:
            text = re.sub(r'(?m)^metric = "[^"]*"', f'metric = "{metric}"', text)
        (work / "digits.toml").write_text(text)
        env = child_env()
        if pruner.endswith(" (what-if)"):  # a pruner nnstudy does not offer, patched in at run time
            env["NNSTUDY_PRUNER"] = pruner.split()[0]
            launcher, cli_pruner = [PYTHON, str(BENCH_DIR / "nnstudy_patched.py")], "median"
        else:
            launcher, cli_pruner = [NNSTUDY], pruner
        cmd = [*launcher, "run", "digits.toml", "--n-trials", str(n_trials), "--sampler", "tpe", "--seed", str(seed),
               "--pruner", cli_pruner, "--no-progress"]
        start = time.time()
        with open(work / "stdout.txt", "w") as out, open(work / "stderr.txt", "w") as err:
            proc = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=err, check=False)
        wall = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(f"pruner {pruner}: nnstudy failed (exit {proc.returncode}):\n"
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
        return {"pruner": pruner, "wall": wall, "trials": len(trials), "epochs": epochs, "attr_epochs": attr_epochs,
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
    parser.add_argument("--pruners", default="none,median,hyperband,percentile,asha",
                        help="comma-separated; the first is the baseline (default: none,median,hyperband,percentile,"
                        "asha; percentile and asha need nnstudy >= 60c77ae)")
    parser.add_argument("--whatif", default="",
                        help="comma-separated pruners nnstudy lacks, patched in by nnstudy_patched.py: asha, "
                        "percentile25 (added after --pruners)")
    parser.add_argument("--metric", help="override the spec's [study].metric (default: as shipped)")
    parser.add_argument("--section", help="RESULTS.md section to write (default: pruning, or pruning-whatif)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    pruners = [p.strip() for p in args.pruners.split(",") if p.strip()]
    pruners += [f"{p.strip()} (what-if)" for p in args.whatif.split(",") if p.strip()]
    spec_metric = re.search(r'(?m)^metric = "([^"]*)"', SPEC.read_text())
    metric = args.metric or (spec_metric.group(1) if spec_metric else "val_loss")
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
{"Rows marked (what-if) run benchmarks/nnstudy_patched.py with NNSTUDY_PRUNER (a pruner nnstudy does not offer)." + chr(10) if args.whatif else ""}Epochs = intermediate values reported to Optuna (one per epoch trained), summed over all trials.
"Worse by" is relative to the unpruned best ({base['best']:.4f}); negative means the pruned study found better.

{table}

Targets (≥ {TARGET_EPOCH_RATIO}x fewer epochs, best within {100 * TARGET_BEST_DIFF:.0f}%):

{chr(10).join(verdicts)}
"""
    print()
    print(text)
    if not args.no_write:
        write_section(args.section or ("pruning-whatif" if args.whatif else "pruning"), text)


if __name__ == "__main__":
    main()
