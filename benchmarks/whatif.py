"""What would the changes the profile suggests buy? nnstudy as is vs nnstudy with run-time patches.

    .venv/bin/python benchmarks/whatif.py [--repeats 3]

Same workload as compare.py (same spec, configurations, fresh temp directory per run, rotated
order per repeat). Contenders: ``nnstudy`` as installed; ``nnstudy_patched.py`` with
NNSTUDY_PATCHES=no-report (no end-of-study report); and limit.py. (``--variants`` takes other
NNSTUDY_PATCHES sets, e.g. ``--variants freeze,single-gc "freeze,single-gc,no-report"``.) nnstudy's files
are not changed: the patches are applied in the process (see nnstudy_patched.py). Appends (or
replaces) the ``whatif`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (BENCH_DIR, NNSTUDY, PYTHON, child_env, command_line, machine, md_table, med, trio,
                     write_section)
from compare import TARGET_LIMIT_RATIO, cpu_seconds, nnstudy_fractions, read_nnstudy_store, run_contender, spec_text, summarize

VARIANTS: dict[str, str | None] = {  # name -> NNSTUDY_PATCHES (None: the installed nnstudy command)
    "nnstudy": None,
    "nnstudy + no-report": "no-report",
    "limit": None,
}
#: earlier variants (before nnstudy 943f92b did gc.freeze() itself): "freeze,single-gc", "freeze,single-gc,no-report"


def run_variant(name: str, configs: Path, n: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="nnbench-whatif-"))
    try:
        if name == "limit":
            return run_contender("limit", configs, work)
        (work / "spec.toml").write_text(spec_text(*nnstudy_fractions()))
        args = ["run", "spec.toml", "--enqueue", str(configs), "--n-trials", str(n), "--pruner", "none",
                "--no-progress"]
        patches = VARIANTS[name]
        env = child_env()
        if patches is None:
            cmd = [NNSTUDY, *args]
        else:
            cmd = [PYTHON, str(BENCH_DIR / "nnstudy_patched.py"), *args]
            env["NNSTUDY_PATCHES"] = patches
        with open(work / "stdout.txt", "w") as out, open(work / "stderr.txt", "w") as err:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t_launch = time.time()
            proc = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=err, check=False)
            wall = time.time() - t_launch
            cpu = cpu_seconds(before)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed (exit {proc.returncode}):\n" + (work / "stderr.txt").read_text()[-3000:])
        trials, _ = read_nnstudy_store(work)
        return {"name": "nnstudy", "wall": wall, "cpu": cpu, "t_launch": t_launch, "trials": trials}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="nnstudy vs nnstudy with the suggested changes (run-time patches)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", type=Path, default=BENCH_DIR / "configs.json")
    parser.add_argument("--variants", nargs="*", help="NNSTUDY_PATCHES sets to compare (default: no-report)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.variants:
        VARIANTS.clear()
        VARIANTS["nnstudy"] = None
        VARIANTS.update({f"nnstudy + {v.replace(',', ' + ')}": v for v in args.variants})
        VARIANTS["limit"] = None
    configs = args.configs.resolve()
    n = len(json.loads(configs.read_text()))
    info = machine()
    names = list(VARIANTS)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for rep in range(args.repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            s = summarize(run_variant(name, configs, n))
            results[name].append(s)
            print(f"repeat {rep + 1}/{args.repeats} {name:42s} wall {s['wall']:6.1f} s  CPU {s['cpu']:6.1f} s  epochs {s['epochs']:.0f}  "
                  f"fixed/trial {s['fixed_ms']:.0f} ms  between trials {s['gap_ms']:.0f} ms  "
                  f"teardown {s['teardown']:.1f} s", flush=True)
    limit = med([r["wall"] for r in results["limit"]])
    base = med([r["wall"] for r in results["nnstudy"]])
    limit_cpu = med([r["cpu"] for r in results["limit"]])
    base_cpu = med([r["cpu"] for r in results["nnstudy"]])
    rows = []
    for name in names:
        col = {k: [r[k] for r in results[name]] for k in results[name][0]}
        wall, cpu = med(col["wall"]), med(col["cpu"])
        rows.append([name, trio(col["wall"]), f"{cpu:.1f}", f"{med(col['startup']):.1f}", f"{med(col['fixed_ms']):.0f}",
                     f"{med(col['gap_ms']):.0f}", f"{med(col['teardown']):.1f}", f"{med(col['epochs']):.0f}",
                     f"{wall / limit:.2f}", f"{cpu / limit_cpu:.2f}",
                     f"{base - wall:+.1f} / {base_cpu - cpu:+.1f}" if name != "limit" else ""])
    table = md_table(["variant", "wall s (min / median / max)", "CPU s (median)", "startup s", "fixed cost / trial ms",
                      "between trials ms", "teardown s", "epochs", f"÷ limit, wall (target ≤ {TARGET_LIMIT_RATIO})",
                      "÷ limit, CPU", "saved vs nnstudy, s (wall / CPU)"], rows)
    text = f"""## What if: the changes the profile points to, applied at run time

Command: `{command_line()}` ({info['date']}, load average {info['load average at start (1/5/15 min)']}, nnstudy {info['nnstudy commit']};
{args.repeats} repeats, variants rotated per repeat). Same workload as compare.py. The patched variants run
`benchmarks/nnstudy_patched.py` (nnstudy's CLI with the change monkeypatched in; nnstudy's files untouched):
`freeze` = `gc.collect(); gc.freeze()` once before the trials; `single-gc` = `gc_after_trial=False` (the
collection in `clear_session(free_memory=True)` stays); `no-report` = no end-of-study report.
nnstudy under test: {info['nnstudy commit']}.

{table}
"""
    print()
    print(text)
    if not args.no_write:
        write_section("whatif", text)


if __name__ == "__main__":
    main()
