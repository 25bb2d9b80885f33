"""GPU check: the same fixed trials with `--gpus all --trials-per-gpu K` (K = 1, 2, 4) and on the CPU.

Run through ``bash benchmarks/gpu_check.sh`` (it finds a Python and carried wheels). JAX backend. Every
variant runs the same enqueued configurations (MLP on a generated 10-class table, fixed epochs, no pruning,
no early stopping) into its own fresh stores under a temporary folder, through the public CLI
(``python -m nnstudy.cli run``). Prints one table: variant, trials, seconds, trials/minute, ratio vs CPU.

A variant that runs past ``--variant-timeout`` is stopped (SIGTERM, as Ctrl-C) and its rate is taken from the
trials it completed. Without a GPU the GPU variants are skipped (``--force`` runs them anyway: nnstudy then
falls back to CPU workers, which checks the script, not the GPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def detect_gpus() -> list[str]:
    """``nvidia-smi -L`` lines (the names of the GPUs), else JAX's GPU devices, else nothing."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
            found = [line.split(" (UUID")[0].strip() for line in out.splitlines() if line.startswith("GPU ")]
            if found:
                return found
        except (OSError, subprocess.TimeoutExpired):
            pass
    code = "import jax; print('\\n'.join(d.device_kind for d in jax.devices() if d.platform == 'gpu'))"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.splitlines() if line.strip()]


def make_inputs(work: Path, args: argparse.Namespace) -> tuple[Path, Path, int]:
    """The data (.npz), the spec and the --enqueue file shared by every variant; returns (spec, enqueue, n)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.features)).astype("float32")
    w = rng.standard_normal((args.features, 10)).astype("float32")
    y = np.argmax(x @ w / np.sqrt(args.features) + 0.5 * rng.standard_normal((args.rows, 10)), axis=1).astype("int64")
    np.savez(work / "data.npz", x=x, y=y)
    units = [int(u) for u in args.units.split(",")]
    depths = [int(d) for d in args.depth.split(",")]
    rates = [1e-3, 3e-3, 1e-4, 3e-4]
    grid = [{"units": u, "depth": d, "learning_rate": r} for r, d, u in itertools.product(rates, depths, units)]
    configs = [dict(c, optimizer="adam", batch_size=args.batch, dropout=0.1, activation="relu")
               for c in grid[:args.trials]]
    if len(configs) < args.trials:
        raise SystemExit(f"--trials {args.trials}: at most {len(grid)} configurations with these units/depths")
    spec = work / "gpu_check.toml"
    spec.write_text(f"""# written by benchmarks/gpu_check.py
[study]
name = "gpu-check"
metric = "val_accuracy"
n_trials = {args.trials}
sampler = "random"
pruner = "none"
seed = 42

[data]
source = "data.npz"
task = "multiclass"
validation_fraction = 0.2
test_fraction = 0.1

[train]
backend = "jax"
max_epochs = {args.epochs}
early_stopping_patience = {args.epochs + 1}

[search]
learning_rate = {json.dumps(rates)}
optimizer = ["adam"]
batch_size = [{args.batch}]
dropout = [0.1]
depth = {json.dumps(depths)}
units = {json.dumps(units)}
activation = ["relu"]
""", encoding="utf-8")
    enqueue = work / "enqueue.json"
    enqueue.write_text(json.dumps(configs, indent=1), encoding="utf-8")
    return spec, enqueue, len(configs)


def run_variant(name: str, extra_args: list[str], extra_env: dict[str, str], spec: Path, enqueue: Path,
                work: Path, logs: Path, timeout: float) -> dict[str, object]:
    """One `nnstudy run` into fresh stores; wall time and what the stores hold afterwards."""
    where = work / name
    where.mkdir()
    shutil.copy(spec, where / spec.name)
    shutil.copy(work / "data.npz", where / "data.npz")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(KERAS_BACKEND="jax", PYTHONUNBUFFERED="1", **extra_env)
    storage, tracking = f"sqlite:///{where}/optuna.db", f"sqlite:///{where}/mlflow.db"
    cmd = [sys.executable, "-m", "nnstudy.cli", "run", spec.name, "--enqueue", str(enqueue), "--backend", "jax",
           "--storage", storage, "--tracking-uri", tracking, "--no-progress", *extra_args]
    log = logs / f"{name}.log"
    print(f"[gpu_check] {name}: {' '.join(extra_args) or '(in-process)'} "
          f"{' '.join(f'{k}={v}' for k, v in extra_env.items())}", flush=True)
    stopped = False
    with open(log, "w") as out:
        out.write(f"$ {' '.join(f'{k}={v}' for k, v in extra_env.items())} {' '.join(cmd)}\n")
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=where, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stopped = True
            proc.send_signal(signal.SIGTERM)  # nnstudy stops its workers and records the running trials
            try:
                rc = proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        wall = time.perf_counter() - start
    result: dict[str, object] = {"variant": name, "rc": rc, "wall_s": round(wall, 1), "stopped": stopped}
    result.update(read_stores(storage, tracking))
    print(f"[gpu_check] {name}: rc {rc}, {wall:.1f} s, {result.get('complete')} complete, "
          f"devices {result.get('devices')}", flush=True)
    if rc != 0 and not stopped:
        print(f"[gpu_check] {name} failed; the end of {log}:\n" + "".join(log.read_text().splitlines(True)[-30:]),
              flush=True)
    return result


def read_stores(storage: str, tracking: str) -> dict[str, object]:
    """Trials complete, the span from the first trial's start to the last one's end, summed training time, and
    the devices the MLflow runs name (tag ``nnstudy.device``)."""
    found: dict[str, object] = {}
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.load_study(study_name="gpu-check", storage=storage)
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        found["complete"] = len(done)
        found["states"] = sorted({t.state.name for t in trials})
        if done:
            first = min(t.datetime_start for t in done if t.datetime_start)
            last = max(t.datetime_complete for t in done if t.datetime_complete)
            found["span_s"] = round((last - first).total_seconds(), 1)
            found["train_s"] = round(sum(float(t.user_attrs.get("duration_s", 0) or 0) for t in done), 1)
            found["trials"] = {t.number: {"value": round(float(t.value), 4), "duration_s": t.user_attrs.get("duration_s"),
                                          "units": t.params.get("units"), "learning_rate": t.params.get("learning_rate")}
                               for t in done}
    except Exception as err:  # noqa: BLE001 - a report, not a test
        found["store_error"] = f"{type(err).__name__}: {err}"
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking)
        devices: dict[str, int] = {}
        for exp in client.search_experiments():
            for run in client.search_runs([exp.experiment_id], max_results=1000):
                device = run.data.tags.get("nnstudy.device")
                if device:
                    devices[device] = devices.get(device, 0) + 1
        found["devices"] = devices
    except Exception as err:  # noqa: BLE001
        found["mlflow_error"] = f"{type(err).__name__}: {err}"
    return found


def per_minute(n: object, seconds: object) -> float | None:
    return round(60.0 * float(n) / float(seconds), 2) if n and seconds else None  # type: ignore[arg-type]


def table(results: list[dict[str, object]], n: int) -> str:
    cpu = next((r for r in results if str(r["variant"]).startswith("cpu")), None)
    base_wall = per_minute(cpu.get("complete"), cpu.get("wall_s")) if cpu else None
    base_span = per_minute(cpu.get("complete"), cpu.get("span_s")) if cpu else None
    lines = ["| variant | processes | devices (runs) | trials | seconds | trials/minute | ratio vs CPU | "
             "trials/minute, first start to last end | ratio vs CPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        wall = per_minute(r.get("complete"), r.get("wall_s"))
        span = per_minute(r.get("complete"), r.get("span_s"))
        devices = ", ".join(f"{k} ({v})" for k, v in dict(r.get("devices") or {}).items()) or "?"
        note = " (stopped at its time limit)" if r.get("stopped") else "" if r.get("rc") == 0 else f" (exit {r['rc']})"
        lines.append(f"| {r['variant']}{note} | {r['processes']} | {devices} | {r.get('complete', 0)}/{n} | "
                     f"{r['wall_s']} | {wall or '-'} | {f'{wall / base_wall:.2f}' if wall and base_wall else '-'} | "
                     f"{span or '-'} | {f'{span / base_span:.2f}' if span and base_span else '-'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="enqueued configurations (default 8)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial, all run (default 3)")
    parser.add_argument("--rows", type=int, default=40000, help="rows of the generated table (default 40000)")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--units", default="1024,2048", help="units choices (default 1024,2048)")
    parser.add_argument("--depth", default="2", help="depth choices (default 2)")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--per-gpu", default="1,2,4", help="--trials-per-gpu values (default 1,2,4)")
    parser.add_argument("--cpu-workers", type=int, default=0,
                        help="--workers of the CPU run (default: as many as the largest --trials-per-gpu, at most "
                             "the cores)")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds for all the timed runs together (default 300): a run is stopped when it would "
                             "leave less than --reserve seconds to each run after it")
    parser.add_argument("--reserve", type=float, default=60.0, help="seconds kept for each later run (default 60)")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="skip the untimed 1-trial CPU run that first compiles the packages' bytecode")
    parser.add_argument("--force", action="store_true", help="run the GPU variants without a GPU too")
    parser.add_argument("--out", type=Path, help="folder for the table, results.json and the logs")
    args = parser.parse_args()

    began = time.perf_counter()
    gpus = detect_gpus()
    per_gpu = [int(k) for k in args.per_gpu.split(",") if k.strip()]
    cpu_workers = args.cpu_workers or max(1, min(max(per_gpu, default=1), os.cpu_count() or 1))
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check_out_"))
    out.mkdir(parents=True, exist_ok=True)
    logs = out
    versions = {}
    for package in ("nnstudy", "keras", "jax", "jaxlib", "optuna", "mlflow", "mlflow-skinny", "numpy"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:  # noqa: BLE001
            continue
    header = (f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; host: {platform.node()}; "
              f"cores: {os.cpu_count()}; python {platform.python_version()}; GPUs: {'; '.join(gpus) or 'none'}\n"
              f"versions: {', '.join(f'{k} {v}' for k, v in versions.items())}\n"
              f"workload: {args.trials} enqueued trials (MLP, units {args.units}, depth {args.depth}, batch "
              f"{args.batch}, {args.epochs} epochs each, no pruning) on a generated {args.rows} x {args.features} "
              f"10-class table; JAX backend")
    print(header, flush=True)

    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        spec, enqueue, n = make_inputs(work, args)
        variants: list[tuple[str, list[str], dict[str, str], int]] = [
            ("cpu", ["--workers", str(cpu_workers)], {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}, cpu_workers)]
        if gpus or args.force:
            n_gpus = max(1, len(gpus))
            variants += [(f"gpu x{k}", ["--gpus", "all", "--trials-per-gpu", str(k)], {}, k * n_gpus)
                         for k in per_gpu]
        else:
            print("[gpu_check] no GPU found: only the CPU run (the GPU variants need a GPU; --force runs them)",
                  flush=True)
        if not args.no_warm_up:  # untimed: the first run of freshly installed packages compiles their bytecode
            run_variant("warm-up", ["--n-trials", "1", "--workers", "1"],
                        {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}, spec, enqueue, work, logs, 120.0)
        deadline = time.perf_counter() + args.budget
        for i, (name, extra_args, extra_env, processes) in enumerate(variants):
            later = len(variants) - i - 1
            timeout = max(20.0, deadline - time.perf_counter() - args.reserve * later)
            result = run_variant(name.replace(" ", "_"), extra_args, extra_env, spec, enqueue, work, logs, timeout)
            result["variant"], result["processes"] = name if name != "cpu" else f"cpu (--workers {cpu_workers})", \
                processes
            results.append(result)
            (out / "results.json").write_text(json.dumps({"header": header, "results": results}, indent=1,
                                                          default=str))
    results = [r for r in results if r["processes"] and not str(r["variant"]).startswith("cpu")] + \
        [r for r in results if str(r["variant"]).startswith("cpu")]  # run first (the least known time), shown last
    text = f"{header}\n\n{table(results, n)}\n\ntotal: {time.perf_counter() - began:.0f} s"
    (out / "table.md").write_text(text + "\n")
    print("\n" + text, flush=True)
    print(f"[gpu_check] table, results.json and logs in {out}", flush=True)
    return 0 if all(r.get("rc") == 0 and r.get("complete") == n for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
