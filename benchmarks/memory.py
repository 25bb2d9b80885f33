"""Does an nnstudy process grow over a long study? RSS after trial 10 vs after trial 100.

    .venv/bin/python benchmarks/memory.py [--n-trials 100] [--early 10] [--interval 0.05] [--trials-per-process 0]

Method (nnstudy is not modified): ``nnstudy run`` runs as a subprocess on the shipped
``studies/pass_fail.toml`` with ``[train] max_epochs = 3`` (and no timeout), in a fresh temporary
directory. This script polls, every --interval seconds, the process's resident set size
(``VmRSS`` in ``/proc/<pid>/status``, summed over the process and its descendants, since nnstudy may
run trials in worker processes it recycles) and the number of finished trials (a read-only SQLite query on
``mlruns/optuna.db``: trials in state COMPLETE, PRUNED or FAIL). "RSS after trial k" is the first
sample taken once k trials have finished (so within one interval of the k-th trial's end, while
the next trial starts). Also reported: the slope of RSS over trials 10..100 (least squares over the
first sample of every trial count) and the peak. ``--trials-per-process N`` writes
``[study].trials_per_process = N`` into the spec (0: every trial in the one process). The spec is
checked with ``nnstudy.load_spec`` first. Appends (or replaces) the ``memory`` section of RESULTS.md
(``memory-tppN`` with --trials-per-process). Target: RSS after trial 100 within 10% of RSS after trial 10.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import nnstudy
from _common import NNSTUDY, ROOT, child_env, command_line, finished_trials, machine, md_table, write_section

TARGET = 0.10


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def pss_kib(pid: int) -> int:
    """Proportional set size (shared pages split between the processes sharing them): sums correctly."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(root: int) -> list[int]:
    """``root``'s child processes, their children, ... (nnstudy's recycled worker processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def sample(root: int) -> tuple[int, int, int, int] | None:
    """(RSS of the nnstudy process, RSS of it and its descendants, PSS of the same, number of processes)."""
    own = rss_kib(root)
    if own is None:
        return None
    pids = [root, *descendants(root)]
    rss = [r for r in (rss_kib(p) for p in pids) if r is not None]
    return own, sum(rss), sum(pss_kib(p) for p in pids), len(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description="RSS of one nnstudy process over a long study")
    parser.add_argument("--n-trials", type=int, default=100)
    parser.add_argument("--early", type=int, default=10, help="the early trial count to compare with")
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--trials-per-process", type=int,
                        help="set [study].trials_per_process in the spec (0: all trials in one process); "
                        "default: nnstudy's default")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    info = machine()
    spec = (ROOT / "studies" / "pass_fail.toml").read_text()
    spec = re.sub(r"(?m)^max_epochs = \d+", f"max_epochs = {args.max_epochs}", spec)
    spec = re.sub(r"(?m)^timeout = .*\n", "", spec)
    if args.trials_per_process is not None:
        spec = re.sub(r"(?m)^\[study\]\n", f"[study]\ntrials_per_process = {args.trials_per_process}\n", spec, count=1)
    work = Path(tempfile.mkdtemp(prefix="nnbench-memory-"))
    samples: list[tuple[float, int | None, int, int, int, int]] = []  # (t, finished, own, tree RSS, PSS, procs)
    try:
        (work / "spec.toml").write_text(spec)
        nnstudy.load_spec(work / "spec.toml")  # a bad setting fails here, not after the subprocess starts
        db = work / "mlruns" / "optuna.db"
        env = child_env()
        # one process (--workers 1): the question is whether a process grows, not how many there are
        cmd = [NNSTUDY, "run", "spec.toml", "--n-trials", str(args.n_trials), "--no-progress", "--workers", "1"]
        start = time.time()
        with open(work / "stdout.txt", "w") as out, open(work / "stderr.txt", "w") as err:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=err)
            while proc.poll() is None:
                got = sample(proc.pid)
                if got is not None:
                    samples.append((time.time() - start, finished_trials(db), *got))
                time.sleep(args.interval)
        wall = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(f"nnstudy failed (exit {proc.returncode}):\n" + (work / "stderr.txt").read_text()[-3000:])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first: dict[int, tuple[float, int, int, int, int]] = {}
    for t, n, own, tree, pss, procs in samples:
        if n is not None and n not in first:
            first[n] = (t, tree, own, pss, procs)
    if args.early not in first or args.n_trials not in first:
        raise SystemExit(f"missed a sample: trial counts seen {sorted(first)}; try a smaller --interval")
    early_t, early, early_own, early_pss, _ = first[args.early]
    late_t, late, late_own, late_pss, _ = first[args.n_trials]
    ratio = late / early
    max_procs = max(s[5] for s in samples)
    points = [(n, v[1]) for n, v in sorted(first.items()) if args.early <= n <= args.n_trials]
    mean_n = sum(n for n, _ in points) / len(points)
    mean_r = sum(r for _, r in points) / len(points)
    slope = (sum((n - mean_n) * (r - mean_r) for n, r in points)
             / sum((n - mean_n) ** 2 for n, _ in points))  # KiB per trial
    peak = max(s[3] for s in samples)
    peak_trials = max((s[3] for s in samples if s[1] is not None and s[1] < args.n_trials), default=peak)
    ok = abs(ratio - 1) <= TARGET
    milestones = [k for k in (1, 5, args.early, 25, 50, 75, args.n_trials) if k in first]
    table = md_table(["finished trials", "seconds", "RSS MiB (process tree)", "RSS MiB (nnstudy process)",
                      "PSS MiB (tree)", "processes"],
                     [[str(k), f"{first[k][0]:.0f}", f"{first[k][1] / 1024:.0f}", f"{first[k][2] / 1024:.0f}",
                       f"{first[k][3] / 1024:.0f}", str(first[k][4])] for k in sorted(set(milestones))])
    title = "" if args.trials_per_process is None else f", trials_per_process = {args.trials_per_process}"
    text = f"""## Memory: one nnstudy process, {args.n_trials} short trials{title}

Command: `{command_line()}` ({info['date']}, load average {info['load average at start (1/5/15 min)']}, nnstudy {info['nnstudy commit']}).
`nnstudy run` on studies/pass_fail.toml with max_epochs = {args.max_epochs} (no timeout), {args.n_trials} trials,
default pruner (median), as a subprocess; RSS from /proc/<pid>/status (VmRSS) sampled every
{args.interval:g} s together with the number of finished trials read from mlruns/optuna.db (read-only
SQLite); "after trial k" = the first sample once k trials had finished. nnstudy may run the trials in
worker processes it starts (and recycles, `[study].trials_per_process`), so the RSS measured is the sum
over the `nnstudy run` process and all its descendants (up to {max_procs} processes at once here); the
nnstudy process alone and the proportional set size (PSS, shared pages counted once) are shown too.
Wall time {wall:.0f} s, {len(samples)} samples.

{table}

- RSS (process tree) after trial {args.early}: **{early / 1024:.0f} MiB**; after trial {args.n_trials}:
  **{late / 1024:.0f} MiB**; ratio **{ratio:.3f}** ({100 * (ratio - 1):+.1f}%) → target within {100 * TARGET:.0f}%:
  **{'met' if ok else 'not met'}**. The nnstudy process alone: {early_own / 1024:.0f} → {late_own / 1024:.0f} MiB;
  PSS of the tree: {early_pss / 1024:.0f} → {late_pss / 1024:.0f} MiB.
- Growth over trials {args.early}..{args.n_trials} (least squares): {slope:.0f} KiB per trial
  ({slope * 1000 / 1024:.0f} MiB per 1000 trials).
- Peak RSS (tree) while trials ran: {peak_trials / 1024:.0f} MiB; overall peak (incl. the end-of-study report):
  {peak / 1024:.0f} MiB.
"""
    print(text)
    if not args.no_write:
        section = "memory" + (f"-tpp{args.trials_per_process}" if args.trials_per_process is not None else "")
        write_section(section, text)


if __name__ == "__main__":
    main()
