"""Where nnstudy's time goes: a py-spy profile of the compare.py workload, grouped into costs.

    .venv/bin/python benchmarks/profile_nnstudy.py [--rate 250] [--keep]

Runs ``py-spy record --idle --format raw -- nnstudy run SPEC --enqueue configs.json ...`` (the same
spec and configurations as compare.py) in a fresh temporary directory, keeps the samples of the
main thread, and assigns each sample to the first matching cost below (the order matters: a
``gc.collect()`` inside ``clear_session`` inside ``train`` counts as garbage collection, not as
training). ``--idle`` counts time spent waiting (SQLite commits, sleeps) as well as CPU time.
Writes the table into the ``profile`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BENCH_DIR, NNSTUDY, PYTHON, child_env, command_line, md_table, write_section
from compare import nnstudy_fractions, spec_text

# (cost, regex searched in the ';'-joined stack, root first; '$' anchors at the leaf frame)
RULES: list[tuple[str, str]] = [
    ("study report at the end (plots, parameter importances: `finish` → `log_report`)", r"log_report \(nnstudy/"),
    ("`gc.collect()` in `keras.backend.clear_session(free_memory=True)` at the start of every trial",
     r"clear_session \(keras/src/backend/common/global_state\.py:\d+\)$"),
    ("`gc.collect()` after every trial (`study.optimize(gc_after_trial=True)`)",
     r"_optimize_sequential \(optuna/study/_optimize\.py:\d+\)$"),
    ("`.keras` model bundle of each new best trial (`log_bundle`)", r"log_bundle \("),
    ("MLflow: per-epoch metric flushes (`TrialRun.flush`)", r"TrialRun\.flush \("),
    ("MLflow: parent-run update after every trial (`update_parent`)", r"update_parent \("),
    ("MLflow: child run create / params / summary / end", r"Tracker\.(start_trial|log_summary|end_run) \("),
    ("Optuna: `trial.report` / `should_prune` every epoch", r"Trial\.(report|should_prune) \("),
    ("Keras: tf.function tracing (first epoch of fit, evaluate)",
     r"trace_function \(|func_graph_from_py_func \(|_maybe_define_function \("),
    ("Keras: model build + compile", r"build_model \(|compile_model \("),
    ("Keras: training and evaluation (execution, callbacks, input pipeline)", r"train \(nnstudy/training\.py"),
    ("Optuna: ask / suggest / user attributes / tell, other per-trial work",
     r"_run_trial \(|Objective\.__call__ \(|_optimize_sequential \("),
    ("startup: imports", r"_find_and_load \("),
    ("startup: data preparation", r"prepare \(nnstudy/data\.py"),
    ("startup: stores, experiment, parent run, enqueue",
     r"open_context \(|check_databases \(|Store\.prepare \(|recover_stale_trials \(|enqueue \(|resolve_store \("),
    ("other (leaderboard, exit, the rest)", r"leaderboard \(|Console\.|cli\.py"),
]


def categorize(raw: Path, rate: int) -> tuple[list[list[str]], float, list[tuple[str, float]]]:
    counts: collections.Counter[str] = collections.Counter()
    imports: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    compiled = [(name, re.compile(pattern)) for name, pattern in RULES]
    for line in raw.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not re.match(r"<module> \([^;]*nnstudy", stack):  # the nnstudy script or nnstudy_patched.py
            continue  # other threads (TensorFlow pools, heartbeat, MLflow async queue), idle
        n = int(n_text)
        total += n
        leaves[stack.rsplit(";", 1)[-1]] += n
        for name, pattern in compiled:
            if pattern.search(stack):
                counts[name] += n
                if name == "startup: imports":
                    imports[_imported_package(stack)] += n
                break
        else:
            counts["other"] += n
    rows = [[name, f"{counts[name] / rate:.2f}", f"{100 * counts[name] / total:.1f}%"]
            for name, _ in [*RULES, ("other", "")] if counts[name]]
    rows.sort(key=lambda r: -float(r[1]))
    top_leaves = [(leaf, n / rate) for leaf, n in leaves.most_common(8)]
    top_imports = [(pkg, n / rate) for pkg, n in imports.most_common(8)]
    return rows, total / rate, top_leaves, top_imports


def _imported_package(stack: str) -> str:
    """The third-party package whose import this sample is in (first module frame outside nnstudy)."""
    for frame in stack.split(";")[1:]:
        m = re.match(r"<module> \(([^/):]+)", frame)
        if m and not m.group(1).startswith("nnstudy"):
            return m.group(1).removesuffix(".py")
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description="py-spy profile of nnstudy on the compare.py workload")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--configs", type=Path, default=BENCH_DIR / "configs.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (raw profile)")
    parser.add_argument("--patches", default="",
                        help="profile benchmarks/nnstudy_patched.py with these NNSTUDY_PATCHES instead "
                        "(e.g. freeze,single-gc); written to the profile-patched section")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install -r benchmarks/requirements.txt")
    configs = args.configs.resolve()
    n = len(json.loads(configs.read_text()))
    work = Path(tempfile.mkdtemp(prefix="nnbench-profile-"))
    try:
        (work / "spec.toml").write_text(spec_text(*nnstudy_fractions()))
        env = child_env()
        launcher = [NNSTUDY]
        if args.patches:
            env["NNSTUDY_PATCHES"] = args.patches
            launcher = [PYTHON, str(BENCH_DIR / "nnstudy_patched.py")]
        cmd = [py_spy, "record", "--idle", "--rate", str(args.rate), "--format", "raw", "-o", "profile.txt", "--",
               *launcher, "run", "spec.toml", "--enqueue", str(configs), "--n-trials", str(n), "--pruner", "none",
               "--no-progress"]
        start = time.time()
        with open(work / "stdout.txt", "w") as out, open(work / "stderr.txt", "w") as err:
            proc = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=err, check=False)
        wall = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(f"py-spy/nnstudy failed (exit {proc.returncode}):\n"
                             + (work / "stderr.txt").read_text()[-3000:])
        rows, main_s, leaves, imports = categorize(work / "profile.txt", args.rate)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = md_table(["cost", "seconds", "share of main thread"], rows)
    leaf_lines = "\n".join(f"- {s:.2f} s `{leaf}`" for leaf, s in leaves)
    import_lines = ", ".join(f"{pkg} {s:.2f} s" for pkg, s in imports)
    title = f"with NNSTUDY_PATCHES={args.patches} (benchmarks/nnstudy_patched.py)" if args.patches else ""
    text = f"""## Profile: where nnstudy's time goes {title}

Command: `{command_line()}`: py-spy ({args.rate} samples/s, `--idle`) over `nnstudy run` on the compare.py
workload ({n} configurations, pruning off). Wall time under the profiler: {wall:.1f} s; main-thread samples:
{main_s:.1f} s. Each sample counts once, under the first matching cost (top to bottom in the script).

{table}

Imports by the first third-party package on the stack (the one nnstudy imports, which pulls the
rest in): {import_lines}.

Hottest leaf frames (where the main thread actually was):

{leaf_lines}
"""
    print(text)
    if args.no_write:
        return
    write_section("profile-patched" if args.patches else "profile", text)
    print(f"written: {BENCH_DIR / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
