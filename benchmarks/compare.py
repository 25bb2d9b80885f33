"""nnstudy vs the naive peer vs the limit, on the same configurations, side by side.

    .venv/bin/python benchmarks/compare.py [--repeats 3] [--configs benchmarks/configs.json]

Each repeat runs the contenders one after another, each in its own subprocess and a fresh
temporary working directory, in a rotated order (repeat 1 starts with the first, repeat 2 with the
second, ...), so slow phases of a shared machine do not fall on one contender:

- nnstudy: ``nnstudy run SPEC --enqueue configs.json --n-trials N --pruner none --no-progress``
  with a spec written here (digits, random sampler, max_epochs 30, patience 5, val_loss, nnstudy's
  default validation/test fractions), default store under ``./mlruns`` of the temp dir: its
  defaults (one worker per core, compiled models reused);
- nnstudy-w1: the same with ``--workers 1`` (one process, as the bare loop);
- nnstudy-w1-noreuse: ``--workers 1`` and ``[train].reuse_compiled = false`` (where nnstudy has it);
- peer: ``benchmarks/peer.py`` (optuna-examples' Keras pattern + MLflow nested child runs);
- limit: ``benchmarks/limit.py`` (bare Keras loop, no search library, no tracking).

Per-epoch and per-trial timings come from the MLflow store for nnstudy (child run start time,
per-epoch metric timestamps, ``duration_s`` and ``mlflow_logging_s``) and from the timing records
peer.py and limit.py write. Results go to the compare section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (BENCH_DIR, NNSTUDY, PYTHON, RESULTS, child_env, command_line, machine, machine_md, md_table,
                     med, trio, write_section)

#: nnstudy as a user runs it (its defaults: one worker per core, compiled models reused), then with one process,
#: then with one process and no reuse (what goal 4 of the performance issue measures against the bare loop)
NNSTUDY_VARIANTS: dict[str, tuple[list[str], str]] = {
    "nnstudy": ([], ""),
    "nnstudy-w1": (["--workers", "1"], ""),
    "nnstudy-w1-noreuse": (["--workers", "1"], "reuse_compiled = false\n"),
}


def _reuse_switch() -> bool:
    """Whether this nnstudy has the ``[train].reuse_compiled`` switch (older commits do not)."""
    import nnstudy

    try:
        nnstudy.parse_spec({"train": {"reuse_compiled": False}})
    except Exception:
        return False
    return True


CONTENDERS = tuple(n for n in NNSTUDY_VARIANTS if n != "nnstudy-w1-noreuse" or _reuse_switch()) + ("peer", "limit")
MAX_EPOCHS = 30
PATIENCE = 5
STUDY = "bench-digits"
TARGET_PEER_RATIO = 3.0  # peer / nnstudy with nnstudy's defaults
TARGET_LIMIT_RATIO = 1.10  # nnstudy in one process without reuse / the bare loop
TARGET_REUSE_RATIO = 1.0  # nnstudy in one process with reuse / the bare loop


def nnstudy_fractions() -> tuple[float, float]:
    """nnstudy's default validation and test fractions (read from an empty spec, not copied)."""
    import nnstudy

    data = nnstudy.parse_spec({}).data
    return data.validation_fraction, data.test_fraction


def spec_text(val_fraction: float, test_fraction: float, train_extra: str = "") -> str:
    return f"""# written by benchmarks/compare.py
[study]
name = "{STUDY}"
metric = "val_loss"
sampler = "random"
pruner = "none"
seed = 42

[data]
source = "digits"
task = "multiclass"
validation_fraction = {val_fraction}
test_fraction = {test_fraction}

[train]
max_epochs = {MAX_EPOCHS}
early_stopping_patience = {PATIENCE}
{train_extra}
[search]
learning_rate = {{ low = 1e-4, high = 1e-1, log = true }}
optimizer = ["sgd", "adam", "rmsprop", "adagrad", "adadelta"]
batch_size = [16, 32, 64, 128]
dropout = {{ low = 0.0, high = 0.5 }}
depth = {{ low = 0, high = 4 }}
units = [16, 32, 64, 128]
activation = ["relu", "tanh", "sigmoid", "elu"]
"""


def check_configs(configs: list[dict[str, Any]]) -> None:
    keys = {"learning_rate", "optimizer", "batch_size", "dropout", "depth", "units", "activation"}
    if len(configs) < 6:
        raise SystemExit(f"configs: {len(configs)} configurations; at least 6 are needed")
    for i, c in enumerate(configs):
        if set(c) != keys:
            raise SystemExit(f"configs[{i}]: keys {sorted(c)}; expected exactly {sorted(keys)}")
        if not 16 <= c["batch_size"] <= 128:
            raise SystemExit(f"configs[{i}]: batch_size {c['batch_size']} outside 16..128")


# --------------------------------------------------------------------------- running

def run_contender(name: str, configs_path: Path, work: Path) -> dict[str, Any]:
    """Run one contender in ``work`` (a fresh folder); returns wall time and per-trial records."""
    n = len(json.loads(configs_path.read_text()))
    out = work / "timings.json"
    if name in NNSTUDY_VARIANTS:
        val_fraction, test_fraction = nnstudy_fractions()
        options, train_extra = NNSTUDY_VARIANTS[name]
        (work / "spec.toml").write_text(spec_text(val_fraction, test_fraction, train_extra))
        cmd = [NNSTUDY, "run", "spec.toml", "--enqueue", str(configs_path), "--n-trials", str(n),
               "--pruner", "none", "--no-progress", *options]
    else:
        fractions = [f"--validation-fraction={nnstudy_fractions()[0]}", f"--test-fraction={nnstudy_fractions()[1]}"]
        script = "peer.py" if name == "peer" else "limit.py"
        cmd = [PYTHON, str(BENCH_DIR / script), "--configs", str(configs_path), "--out", str(out), *fractions]
        if name == "peer":
            cmd += ["--workdir", str(work)]
    with open(work / "stdout.txt", "w") as stdout, open(work / "stderr.txt", "w") as stderr:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t_launch = time.time()
        proc = subprocess.run(cmd, cwd=work, env=child_env(), stdout=stdout, stderr=stderr, check=False)
        wall = time.time() - t_launch
        cpu = cpu_seconds(before)
    if proc.returncode != 0:
        tail = (work / "stderr.txt").read_text()[-3000:]
        raise SystemExit(f"{name} failed (exit {proc.returncode}) in {work}:\n{tail}")
    if name in NNSTUDY_VARIANTS:
        trials, extra = read_nnstudy_store(work)
    else:
        data = json.loads(out.read_text())
        trials = data["trials"]
        extra = {"import_s": data["t_imported"] - t_launch}
    if len(trials) != n:
        raise SystemExit(f"{name}: {len(trials)} trial records, expected {n} ({work})")
    return {"name": name, "wall": wall, "cpu": cpu, "t_launch": t_launch, "trials": trials, **extra}


def cpu_seconds(before: resource.struct_rusage) -> float:
    """User + system CPU seconds of the children waited for since ``before`` (less noisy than wall time
    on a shared machine: another user's load stretches the wall clock, not this process's CPU time)."""
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def read_nnstudy_store(work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-trial timings from nnstudy's MLflow store: run start, metric timestamps, logged durations."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    trials = []
    for run in runs:
        if "nnstudy.trial_number" not in run.data.tags:  # the parent run (README: "Where things are stored")
            continue
        history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
        metrics = run.data.metrics
        trials.append({
            "number": int(run.data.tags["nnstudy.trial_number"]),
            "t_start": run.info.start_time / 1000, "t_end": run.info.end_time / 1000,
            "epoch_ends": [m.timestamp / 1000 for m in history],
            "epochs": int(metrics["stopped_epoch"]), "value": metrics.get("best_val_loss"),
            "duration_s": metrics["duration_s"], "mlflow_logging_s": metrics["mlflow_logging_s"],
        })
    trials.sort(key=lambda t: t["number"])
    return trials, {}


# --------------------------------------------------------------------------- analysis

def summarize(run: dict[str, Any]) -> dict[str, float]:
    trials = run["trials"]
    epochs = sum(len(t["epoch_ends"]) for t in trials)
    fit = sum(t["epoch_ends"][-1] - t["t_start"] for t in trials)
    later = [b - a for t in trials for a, b in zip(t["epoch_ends"], t["epoch_ends"][1:])]
    fixed = []
    for t in trials:
        ends = t["epoch_ends"]
        if len(ends) >= 2:
            steady = statistics.median(b - a for a, b in zip(ends, ends[1:]))
            fixed.append((ends[0] - t["t_start"]) - steady)
    after = [t["t_end"] - t["epoch_ends"][-1] for t in trials]
    # between trials of one process (trials that overlap ran in different worker processes)
    gaps = [b["t_start"] - a["t_end"] for a, b in zip(trials, trials[1:]) if b["t_start"] >= a["t_end"]]
    s = {
        "wall": run["wall"],
        "cpu": run["cpu"],
        "startup": min(t["t_start"] for t in trials) - run["t_launch"],
        "teardown": run["t_launch"] + run["wall"] - max(t["t_end"] for t in trials),
        "epochs": float(epochs),
        "epochs_recorded": float(sum(t["epochs"] for t in trials)),
        "fit": fit,
        "ms_per_epoch": 1000 * fit / epochs,
        "steady_epoch_ms": 1000 * statistics.median(later),
        "fixed_ms": 1000 * statistics.mean(fixed),
        "fixed_total": sum(fixed),
        "after_ms": 1000 * statistics.mean(after),
        "after_total": sum(after),
        "gap_ms": 1000 * statistics.mean(gaps) if gaps else 0.0,
        "gap_total": sum(gaps),
        "best_value": min(t["value"] for t in trials if t["value"] is not None),
    }
    if "import_s" in run:
        s["import"] = run["import_s"]
    if run["name"] in NNSTUDY_VARIANTS:
        s["mlflow_ms_per_epoch"] = 1000 * sum(t["mlflow_logging_s"] for t in trials) / epochs
        s["duration_total"] = sum(t["duration_s"] for t in trials)
    elif run["name"] == "peer":
        s["mlflow_ms_per_epoch"] = 1000 * sum(t["mlflow_callback_s"] for t in trials) / epochs
        s["mlflow_epoch_incl_flush_ms"] = 1000 * sum(t["mlflow_callback_s"] + t["mlflow_end_s"]
                                                     for t in trials) / epochs
        s["mlflow_trial_ms"] = 1000 * statistics.mean(
            t["mlflow_setup_s"] + t["mlflow_callback_s"] + t["mlflow_summary_s"] + t["mlflow_end_s"] for t in trials)
    return s


def report(results: dict[str, list[dict[str, float]]], configs: list[dict[str, Any]], repeats: int,
           info: dict[str, str]) -> str:
    def col(name: str, key: str) -> list[float]:
        return [r[key] for r in results[name] if key in r]

    rows = []
    for name in CONTENDERS:
        epochs = col(name, "epochs")
        mlflow = trio(col(name, "mlflow_ms_per_epoch"), "{:.2f}") if col(name, "mlflow_ms_per_epoch") else "none"
        rows.append([
            name, trio(col(name, "wall")), f"{med(col(name, 'cpu')):.1f}", trio(col(name, "startup")),
            f"{med(epochs):.0f}" + ("" if min(epochs) == max(epochs) else f" ({min(epochs):.0f}-{max(epochs):.0f})"),
            trio(col(name, "ms_per_epoch"), "{:.0f}"), f"{med(col(name, 'steady_epoch_ms')):.0f}",
            f"{med(col(name, 'fixed_ms')):.0f}", f"{med(col(name, 'after_ms')):.0f}",
            f"{med(col(name, 'gap_ms')):.0f}", mlflow, f"{med(col(name, 'best_value')):.4f}",
        ])
    table = md_table(["contender", "wall s (min / median / max)", "CPU s (median)", "startup s (launch → 1st trial)", "epochs",
                      "ms/epoch (fit time / epochs)", "steady epoch ms (median, epoch ≥ 2)",
                      "fixed cost / trial ms", "after training / trial ms", "between trials ms",
                      "MLflow ms/epoch", "best val_loss"], rows)
    names = [n for n in CONTENDERS if results.get(n)]
    m = {name: med(col(name, "wall")) for name in names}
    c = {name: med(col(name, "cpu")) for name in names}

    def verdict(ratio: float, target: float, at_least: bool) -> str:
        ok = ratio >= target if at_least else ratio <= target
        return "**met**" if ok else f"**not met** ({'short' if at_least else 'over'} by {abs(ratio - target):.2f})"

    goals = [("peer", "nnstudy", TARGET_PEER_RATIO, True, "goal 1: nnstudy with its defaults"),
             ("nnstudy-w1", "limit", TARGET_REUSE_RATIO, False, "goal 3: one process, compiled models reused"),
             ("nnstudy-w1-noreuse", "limit", TARGET_LIMIT_RATIO, False, "goal 4: one process, no reuse"),
             ("nnstudy", "limit", TARGET_REUSE_RATIO, False, "nnstudy with its defaults vs the one-process loop")]
    target_rows = []
    for a, b, target, at_least, what in goals:
        if a not in m or b not in m:
            continue
        paired = [x["wall"] / y["wall"] for x, y in zip(results[a], results[b])]
        ratio = m[a] / m[b]
        target_rows.append([f"{a} / {b} {'≥' if at_least else '≤'} {target} ({what})", f"{ratio:.2f}",
                            ", ".join(f"{r:.2f}" for r in paired), f"{statistics.median(paired):.2f}",
                            f"{c[a] / c[b]:.2f}", verdict(ratio, target, at_least)])
    targets = md_table(["target", "measured (median wall)", "per repeat (wall)", "median of per-repeat ratios",
                        "by median CPU time", "verdict (median wall)"], target_rows)

    # where one nnstudy process's extra time over the limit goes (medians over repeats)
    alone = "nnstudy-w1-noreuse" if "nnstudy-w1-noreuse" in m else "nnstudy-w1" if "nnstudy-w1" in m else "nnstudy"

    def d(key: str) -> float:
        return med(col(alone, key)) - med(col("limit", key))

    n_trials = len(configs)
    epochs_n = med(col(alone, "epochs"))
    steady_extra = (med(col(alone, "steady_epoch_ms")) - med(col("limit", "steady_epoch_ms"))) / 1000 * epochs_n
    breakdown = md_table(["component", f"{alone} − limit, s (medians)"], [
        ["wall", f"{d('wall'):+.1f}"],
        ["startup (imports, data, stores, parent run)", f"{d('startup'):+.1f}"],
        ["fixed cost per trial × trials (build, compile, first-epoch tracing)",
         f"{(med(col(alone, 'fixed_ms')) - med(col('limit', 'fixed_ms'))) / 1000 * n_trials:+.1f}"],
        ["steady epochs (median epoch ms difference × nnstudy epochs)", f"{steady_extra:+.1f}"],
        ["after training (test evaluation, summary logging, model bundle, end run) × trials",
         f"{d('after_total'):+.1f}"],
        ["between trials (sampler, Optuna storage, MLflow child run creation)", f"{d('gap_total'):+.1f}"],
        ["teardown (last trial end → exit)", f"{d('teardown'):+.1f}"],
    ])
    imports = {name: med(col(name, "import")) for name in ("peer", "limit")}
    peer_trial_ms = med(col("peer", "mlflow_trial_ms"))
    peer_flush = med(col("peer", "mlflow_epoch_incl_flush_ms"))
    configs_md = md_table(list(configs[0]), [[str(c[k]) for k in configs[0]] for c in configs])
    return f"""## nnstudy vs naive peer vs limit

Command: `{command_line()}` ({repeats} repeats, contenders alternated per repeat, each in its own subprocess
and fresh temporary directory; TensorFlow import counts the same for all).

Machine:

{machine_md(info)}

The machine is shared with other work (load average above), so absolute times are noisy; compare medians and ratios.

Configurations ({n_trials}, `benchmarks/configs.json`), scikit-learn digits, max 30 epochs, early-stopping
patience 5 on val_loss with restored best weights, pruning off:

{configs_md}

{table}

- **wall**: subprocess launch to exit. **CPU**: user + system CPU seconds of the subprocess (TensorFlow uses
  both cores, so it can exceed wall; it is stretched less than wall time by other users' load). **startup**: launch to the first trial's start (imports, data, stores;
  the Python import alone: peer {imports['peer']:.1f} s, limit {imports['limit']:.1f} s median).
- **ms/epoch**: Σ over trials (last epoch end − trial start) / Σ epochs, so it includes the fixed cost.
  **fixed cost / trial** = (end of epoch 1 − trial start) − median later epoch of that trial: build, compile
  and the first-epoch tf.function tracing (for nnstudy the trial start is its MLflow child run creation).
- **after training**: last epoch end → trial end (test evaluation; for nnstudy also the summary metrics,
  the `.keras` bundle of each new best trial and closing the run; for the peer the evaluations, summary
  metrics and the child run's end, which flushes MLflow's async metric queue).
- **MLflow ms/epoch**: nnstudy: Σ `mlflow_logging_s` / Σ epochs (time inside its buffered per-epoch
  `log_batch` flushes); peer: time inside `mlflow.keras.MlflowCallback` / Σ epochs (its `log_metrics` is
  asynchronous; including the flush at the end of each child run: {peer_flush:.2f} ms/epoch). The peer spends
  {peer_trial_ms:.0f} ms per trial in MLflow in all (start/log_params/callback/summary/end run).
- **epochs**: the limit uses nnstudy's exact split, row order, model construction and per-trial seeds, so its
  curves equal nnstudy's (same epochs, same best values); the peer uses its own seeds and Keras' numpy
  input path, so its curves differ slightly.

Targets (the per-repeat ratios pair contenders that ran minutes apart, so they suffer less from load that
comes and goes than the ratio of the medians; CPU time is stretched by host contention too):

{targets}

Where {alone}'s extra wall time over the limit goes (positive = nnstudy slower):

{breakdown}
"""


def rerender(path: Path, configs: list[dict[str, Any]], no_write: bool) -> None:
    import re

    raw = json.loads(path.read_text())
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    old = RESULTS.read_text() if RESULTS.exists() else ""
    measured_by = re.search(r"Command: `([^`]*)`", old)
    if raw and isinstance(raw[0].get("machine"), dict):
        info = raw[0]["machine"]
    else:  # older JSON without the machine: take it from the section being re-rendered
        block = re.search(r"Machine:\n\n((?:- .*\n)+)", old)
        info = dict(line[2:].split(": ", 1) for line in block.group(1).splitlines()) if block else machine()
    for r in raw:
        results[r["name"]].append(r)
    repeats = max(r["repeat"] for r in raw)
    text = report(results, configs, repeats, info)
    if measured_by:
        text = text.replace(f"Command: `{command_line()}`",
                            f"Command: `{measured_by.group(1)}` (tables re-rendered from {path.name} by "
                            f"`{command_line()}`)", 1)
    print(text)
    if not no_write:
        write_section("compare", text)


def main() -> None:
    parser = argparse.ArgumentParser(description="nnstudy vs naive peer vs limit (see the module docstring)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", type=Path, default=BENCH_DIR / "configs.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working directories")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="re-render the compare section from a results-compare.json of an earlier run")
    args = parser.parse_args()
    if args.render:
        rerender(args.render, json.loads(args.configs.resolve().read_text()), args.no_write)
        return
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    configs_path = args.configs.resolve()
    configs = json.loads(configs_path.read_text())
    check_configs(configs)
    info = machine()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    raw: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        k = rep % len(CONTENDERS)
        order = CONTENDERS[k:] + CONTENDERS[:k]
        for name in order:
            work = Path(tempfile.mkdtemp(prefix=f"nnbench-{name}-"))
            try:
                run = run_contender(name, configs_path, work)
            finally:
                if not args.keep:
                    shutil.rmtree(work, ignore_errors=True)
            summary = summarize(run)
            results[name].append(summary)
            raw.append({"repeat": rep + 1, "name": name, **summary, "machine": info})
            print(f"repeat {rep + 1}/{args.repeats} {name:8s} wall {summary['wall']:6.1f} s  CPU {summary['cpu']:6.1f} s  epochs "
                  f"{summary['epochs']:.0f}  ms/epoch {summary['ms_per_epoch']:.0f}  fixed/trial "
                  f"{summary['fixed_ms']:.0f} ms" + (f"  ({work})" if args.keep else ""), flush=True)
    text = report(results, configs, args.repeats, info)
    print()
    print(text)
    if not args.no_write:
        if not RESULTS.exists():
            RESULTS.write_text("# nnstudy benchmarks\n\nWritten by the scripts in `benchmarks/` (see its README.md); "
                               "each script replaces or appends its own section, which names its machine, date "
                               "and commit.\n\n")
        write_section("compare", text)
        (BENCH_DIR / "results-compare.json").write_text(json.dumps(raw, indent=1))
        print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
