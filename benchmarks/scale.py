"""Flat at scale: a 1,000-trial study of 1-epoch trials, and the read commands and MLflow UI on its store.

    .venv/bin/python benchmarks/scale.py [--n-trials 1000] [--sampler tpe] [--workers N] [--points 4]
                                         [--workdir DIR] [--reuse] [--no-ui] [--no-write]

Method (nnstudy is not modified): ``nnstudy run`` runs once, as a subprocess, on the shipped
``studies/pass_fail.toml`` with ``[train] max_epochs = 1``, ``pruner = "none"``, no timeout and the
shipped sampler (TPE: what a user of that file runs; ``--sampler random`` for comparison), in a fresh
working directory, with explicit stores ``--storage sqlite:///DIR/mlruns/optuna.db`` and
``--tracking-uri sqlite:///DIR/mlruns/mlflow.db``. While it runs, the script copies both SQLite stores
(SQLite's online backup, a consistent snapshot) each time another ``--points``-th of the trials has
finished, so the read commands can be timed at several study sizes afterwards.

From the Optuna store of the finished study, per trial: its wall time (``datetime_start`` to
``datetime_complete``); its training time (the ``duration_s`` attribute: building and fitting the model);
the overhead inside the trial (wall minus training: sampling, the MLflow child run, test evaluation,
logging, the model of a new best); the gap before it (the previous trial's completion in the same
process to its start: Optuna's tell, nnstudy's callbacks, the next ask). Medians per bucket of trials
(a hundred from 500 trials up, else a fifth of the study); **flat** = the median overhead (inside +
gap) of the last bucket within 10% of the first's (the target). Also per bucket: the CPU seconds per trial
of ``nnstudy run`` and its workers (``/proc``, sampled every 0.5 s) and the load average, which tell a busy
shared machine from a slower nnstudy. The sampler's own cost is measured apart: the finished trials are
replayed into an in-memory study, and the sampler (same settings, same seed) proposes a trial's parameters
after the first k trials (median of 5 asks). The end of the study: from the last trial's completion to the
exit of ``nnstudy run`` (its report onto the parent run, the parent run ended, the leaderboard printed).

Then, at each snapshot, median of 3: ``nnstudy report``, ``nnstudy trials``, ``nnstudy best`` (wall and CPU
time of the command, Python start-up included); ``nnstudy ui`` is started and headless Chromium (Playwright,
``/usr/bin/chromium``, a fresh browser context per load) times (a) the experiment's page until the
study's parent run shows, then the click on its expander until a child run shows, and (b) MLflow's
compare-runs page (``#/compare-runs?runs=[...]&experiments=[...]``) of 100 trial runs until its heading,
its parallel-coordinates plot and the links to the first and last compared run are there. Writes the
``scale`` section of RESULTS.md. ``--workdir`` keeps the stores, the snapshots and ``run.json`` (the
samples); ``--reuse`` then times the read commands and the UI again without running the study.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nnstudy
from _common import (NNSTUDY, ROOT, child_env, command_line, finished_trials, machine, machine_md, md_table, med,
                     write_section)

STUDY = "pass-fail"
TARGET_FLAT = 0.10  # last bucket's median overhead within 10% of the first's
TARGET_REPORT_S = 10.0
TARGET_READ_S = 2.0  # trials, best
TARGET_UI_S = 10.0
N_COMPARE = 100
REPEATS = 3
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGE_TIMEOUT_MS = 120_000


# --------------------------------------------------------------------------- the study run

def spec_text(sampler: str) -> str:
    spec = (ROOT / "studies" / "pass_fail.toml").read_text()
    spec = re.sub(r"(?m)^max_epochs = \d+", "max_epochs = 1", spec)
    spec = re.sub(r"(?m)^timeout = .*\n", "", spec)
    spec = re.sub(r'(?m)^pruner = "\w+"', 'pruner = "none"', spec)
    return re.sub(r'(?m)^sampler = "\w+"', f'sampler = "{sampler}"', spec)


def stores(folder: Path) -> list[str]:
    return ["--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]


def snapshot(src: Path, dst: Path) -> None:
    """Consistent copies of both SQLite stores (online backup: nnstudy keeps writing meanwhile)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("optuna.db", "mlflow.db"):
        source = sqlite3.connect(f"file:{src / name}?mode=ro", uri=True, timeout=30.0)
        target = sqlite3.connect(dst / name)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()


TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int, seen: dict[int, float]) -> float:
    """CPU seconds (user + system) of ``root`` and its descendants (nnstudy's worker processes): ``seen``
    keeps the last reading of each, so a worker that has exited still counts."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        stats[pid] = fields
        children.setdefault(int(fields[1]), []).append(pid)
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            seen[pid] = (int(stats[pid][11]) + int(stats[pid][12])) / TICKS  # utime, stime
        todo += children.get(pid, [])
    return sum(seen.values())


@dataclass
class Sample:
    t: float
    finished: int
    cpu_s: float
    load1: float


@dataclass
class Run:
    wall_s: float
    exited: str  # local time (as Optuna's datetimes) when `nnstudy run` exited
    samples: list[Sample]


def run_study(work: Path, args: argparse.Namespace, points: list[int]) -> tuple[Run, list[tuple[int, Path]]]:
    """``nnstudy run`` in ``work``; snapshots of the stores after each of ``points`` finished trials, and
    samples of (finished trials, CPU seconds of the process tree, load average) every half second."""
    (work / "spec.toml").write_text(spec_text(args.sampler))
    nnstudy.load_spec(work / "spec.toml")  # a bad setting fails here, not after the subprocess starts
    live = work / "mlruns"
    cmd = [NNSTUDY, "run", "spec.toml", "--n-trials", str(args.n_trials), "--no-progress", *stores(live)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    print("running:", " ".join(cmd), f"(in {work})", flush=True)
    taken: list[tuple[int, Path]] = []
    samples: list[Sample] = []
    seen: dict[int, float] = {}
    todo = [p for p in points if p < args.n_trials]
    start = time.perf_counter()
    last_print = 0.0
    with open(work / "run.stdout.txt", "w") as out, open(work / "run.stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=work, env=child_env(), stdout=out, stderr=err)
        while proc.poll() is None:
            n = finished_trials(live / "optuna.db")
            if n is not None:
                samples.append(Sample(time.perf_counter() - start, n, tree_cpu_s(proc.pid, seen), os.getloadavg()[0]))
            if n is not None and todo and n >= todo[0]:
                snap = work / f"snap-{todo[0]:05d}"
                snapshot(live, snap)
                taken.append((n, snap))
                todo.pop(0)
            if n is not None and time.perf_counter() - last_print > 60:
                last_print = time.perf_counter()
                print(f"  {n} trials finished after {last_print - start:.0f} s", flush=True)
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    exited = dt.datetime.now().isoformat()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"nnstudy run failed (exit {proc.returncode}):\n" + (work / "run.stderr.txt").read_text()[-3000:])
    taken.append((args.n_trials, live))
    return Run(wall, exited, samples), taken


def cpu_per_trial(samples: list[Sample], first: int, last: int) -> tuple[float, float]:
    """(CPU seconds of the process tree per trial, mean 1-minute load average) from when ``first`` trials had
    finished to when ``last`` had."""
    start = next((s for s in samples if s.finished >= first), None)
    end = next((s for s in samples if s.finished >= last), None)
    if start is None or end is None or end.finished <= start.finished:
        return float("nan"), float("nan")
    loads = [s.load1 for s in samples if start.t <= s.t <= end.t]
    return (end.cpu_s - start.cpu_s) / (end.finished - start.finished), sum(loads) / len(loads)


# --------------------------------------------------------------------------- per-trial timings

@dataclass
class Trial:
    number: int
    pid: int | None
    start: dt.datetime
    end: dt.datetime
    train_s: float | None
    gap_s: float | None = None
    reused: bool | None = None  # trained an earlier trial's traced model (the run's nnstudy.reused_compiled tag)

    @property
    def wall_s(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def inside_s(self) -> float | None:
        return None if self.train_s is None else self.wall_s - self.train_s

    @property
    def overhead_s(self) -> float | None:
        if self.inside_s is None:
            return None
        return self.inside_s + (self.gap_s or 0.0)


def read_trials(db: Path) -> list[Trial]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        attrs: dict[int, dict[str, Any]] = {}
        for trial_id, key, value in con.execute(
                "SELECT trial_id, key, value_json FROM trial_user_attributes "
                "WHERE key IN ('duration_s', 'pid', 'mlflow_run_id')"):
            attrs.setdefault(trial_id, {})[key] = json.loads(value)
        rows = con.execute("SELECT trial_id, number, datetime_start, datetime_complete FROM trials "
                           "WHERE datetime_complete IS NOT NULL ORDER BY number").fetchall()
    finally:
        con.close()
    reused: dict[str, bool] = {}
    if (db.parent / "mlflow.db").exists():
        con = sqlite3.connect(f"file:{db.parent / 'mlflow.db'}?mode=ro", uri=True)
        try:
            reused = {run: value == "true" for run, value in con.execute(
                "SELECT run_uuid, value FROM tags WHERE key = 'nnstudy.reused_compiled'")}
        finally:
            con.close()
    trials = [Trial(number, attrs.get(tid, {}).get("pid"), dt.datetime.fromisoformat(start),
                    dt.datetime.fromisoformat(end), attrs.get(tid, {}).get("duration_s"),
                    reused=reused.get(str(attrs.get(tid, {}).get("mlflow_run_id"))))
              for tid, number, start, end in rows]
    last_end: dict[int | None, dt.datetime] = {}
    for t in sorted(trials, key=lambda t: t.start):
        if t.pid in last_end:
            t.gap_s = (t.start - last_end[t.pid]).total_seconds()
        last_end[t.pid] = t.end
    return trials


def sampler_cost_ms(db: Path, sampler: str, counts: list[int], asks: int = 5) -> dict[int, float]:
    """The sampler's time to propose one trial's parameters after the first k finished trials
    (an in-memory replay of the study; TPE as nnstudy makes it: default settings, the study's seed)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")
    done = sorted((t for t in study.get_trials(deepcopy=False) if t.state.is_finished()), key=lambda t: t.number)
    make = optuna.samplers.TPESampler if sampler == "tpe" else optuna.samplers.RandomSampler
    replay = optuna.create_study(directions=study.directions, sampler=make(seed=42))
    out: dict[int, float] = {}
    added = 0
    for k in sorted(c for c in counts if c <= len(done)):
        replay.add_trials(done[added:k])
        added = k
        times = []
        for _ in range(asks):
            t0 = time.perf_counter()
            trial = replay.ask(fixed_distributions=done[k - 1].distributions)
            times.append(time.perf_counter() - t0)
            replay.tell(trial, state=optuna.trial.TrialState.FAIL)  # ignored by the samplers
        out[k] = 1000 * med(times)
    return out


# --------------------------------------------------------------------------- read commands

def time_command(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


Timed = dict[str, tuple[list[str], list[float], list[float]]]  # command -> (argv, wall seconds, CPU seconds)


def read_commands(folder: Path, work: Path) -> Timed:
    out_dir = work / "report"
    commands = {"report": [NNSTUDY, "report", *stores(folder), "--out", str(out_dir)],
                "trials": [NNSTUDY, "trials", *stores(folder)],
                "best": [NNSTUDY, "best", *stores(folder)]}
    timed: Timed = {}
    for name, cmd in commands.items():
        walls, cpus = [], []
        for _ in range(REPEATS):
            shutil.rmtree(out_dir, ignore_errors=True)
            wall, cpu = time_command(cmd, work)
            walls.append(wall)
            cpus.append(cpu)
        timed[name] = (cmd, walls, cpus)
    return timed


# --------------------------------------------------------------------------- the MLflow UI in a browser

@dataclass
class UiTimes:
    startup_s: float
    experiment_s: list[float] = field(default_factory=list)
    children_s: list[float] = field(default_factory=list)
    compare_s: list[float] = field(default_factory=list)
    compared: int = 0
    screenshots: list[Path] = field(default_factory=list)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def study_runs(folder: Path) -> tuple[str, str, list[tuple[str, str]]]:
    """(experiment id, parent run id, [(trial run name, run id)] by trial number) from the MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    parent = client.search_runs([experiment.experiment_id], "tags.`nnstudy.role` = 'study'", max_results=1)[0]
    trials = client.search_runs([experiment.experiment_id], "tags.`nnstudy.role` = 'trial'", max_results=5000)
    runs = sorted(((r.info.run_name, r.info.run_id) for r in trials), key=lambda x: x[0])
    return experiment.experiment_id, parent.info.run_id, runs


def measure_ui(folder: Path, work: Path, shots: Path | None) -> UiTimes:
    from playwright.sync_api import expect, sync_playwright

    experiment_id, parent_id, runs = study_runs(folder)
    compared = runs[:N_COMPARE]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / f"ui-{folder.name}.log"
    t0 = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen([NNSTUDY, "ui", "--port", str(port), "--study-name", STUDY, *stores(folder)], cwd=work,
                                env=child_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        while True:
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise SystemExit(f"nnstudy ui did not come up:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        times = UiTimes(startup_s=time.perf_counter() - t0, compared=len(compared))
        experiment_url = f"{url}/#/experiments/{experiment_id}?workflowType=machine_learning"
        ids = json.dumps([run_id for _, run_id in compared])
        compare_url = f"{url}/#/compare-runs?runs={ids}&experiments={json.dumps([experiment_id])}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                for i in range(REPEATS):
                    context = browser.new_context(viewport={"width": 1600, "height": 1000})
                    page = context.new_page()
                    expect.set_options(timeout=PAGE_TIMEOUT_MS)
                    start = time.perf_counter()
                    page.goto(experiment_url)
                    parent_link = page.locator(f'a[href*="/runs/{parent_id}"]')
                    parent_cell = page.locator('[role="gridcell"]').filter(has=parent_link)
                    expect(parent_cell.locator(f'a[href*="/runs/{parent_id}"]')).to_be_visible()
                    times.experiment_s.append(time.perf_counter() - start)
                    expander = parent_cell.locator("button")
                    start = time.perf_counter()
                    expander.click()
                    expect(page.locator(f'[role="gridcell"] a[href*="/runs/{runs[0][1]}"]').or_(
                        page.locator(f'[role="gridcell"] a[href*="/runs/{runs[-1][1]}"]')).first).to_be_visible()
                    times.children_s.append(time.perf_counter() - start)
                    if shots is not None and i == 0:
                        page.screenshot(path=str(shots / f"scale-ui-experiment-{folder.name}.png"))
                        times.screenshots.append(shots / f"scale-ui-experiment-{folder.name}.png")
                    context.close()

                    context = browser.new_context(viewport={"width": 1600, "height": 1000})
                    page = context.new_page()
                    start = time.perf_counter()
                    page.goto(compare_url)
                    # its heading, its plot (parallel coordinates), and the run details table's links to
                    # the first and the last compared run
                    expect(page.get_by_text(f"Comparing {len(compared)} Runs", exact=False).first).to_be_visible()
                    expect(page.locator(".js-plotly-plot").first).to_be_visible()
                    for _, run_id in (compared[0], compared[-1]):
                        expect(page.locator(f'a[href*="/runs/{run_id}"]').first).to_be_attached()
                    expect(page.locator(f'a[href*="/runs/{compared[0][1]}"]').first).to_be_visible()
                    times.compare_s.append(time.perf_counter() - start)
                    if shots is not None and i == 0:
                        page.screenshot(path=str(shots / f"scale-ui-compare-{folder.name}.png"))
                        times.screenshots.append(shots / f"scale-ui-compare-{folder.name}.png")
                    context.close()
            finally:
                browser.close()
        return times
    finally:
        stop_group(proc)


# --------------------------------------------------------------------------- main

def buckets(n: int) -> int:
    return 100 if n >= 500 else max(1, n // 5)


def fmt_ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{1000 * value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description="a long study of 1-epoch trials: per-trial overhead, read commands, UI")
    parser.add_argument("--n-trials", type=int, default=1000)
    parser.add_argument("--sampler", choices=["tpe", "random"], default="tpe",
                        help="the spec's sampler (default: tpe, as in studies/pass_fail.toml)")
    parser.add_argument("--workers", type=int, help="passed to `nnstudy run --workers` (default: its own default)")
    parser.add_argument("--points", type=int, default=4,
                        help="study sizes at which the read commands and the UI are timed (snapshots; default 4)")
    parser.add_argument("--workdir", type=Path, help="working directory (kept); default: a temporary one, removed")
    parser.add_argument("--reuse", action="store_true",
                        help="use the finished study and snapshots already in --workdir; do not run the study")
    parser.add_argument("--no-ui", action="store_true", help="skip the MLflow UI measurements")
    parser.add_argument("--screenshots", type=Path, help="folder for screenshots of the UI pages")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if args.reuse and not args.workdir:
        raise SystemExit("--reuse needs --workdir")
    info = machine()
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="nnbench-scale-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    points = sorted({max(1, round(args.n_trials * (i + 1) / args.points)) for i in range(args.points)})
    ui_ok = not args.no_ui and CHROMIUM.exists()
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    try:
        if args.reuse:
            taken = [(int(p.name.removeprefix("snap-")), p) for p in sorted(work.glob("snap-*"))]
            taken.append((args.n_trials, work / "mlruns"))
            saved = json.loads((work / "run.json").read_text()) if (work / "run.json").exists() else None
            run = Run(saved["wall_s"], saved["exited"], [Sample(**x) for x in saved["samples"]]) if saved else \
                Run(float("nan"), "", [])
        else:
            if any(work.iterdir()):
                raise SystemExit(f"--workdir {work} is not empty (--reuse to time a finished study again)")
            run, taken = run_study(work, args, points)
            (work / "run.json").write_text(json.dumps({"wall_s": run.wall_s, "exited": run.exited,
                                                       "samples": [vars(x) for x in run.samples]}))
        samples, wall = run.samples, run.wall_s
        trials = read_trials(work / "mlruns" / "optuna.db")
        size = buckets(len(trials))
        ends = [min(len(trials), size * (i + 1)) for i in range(math.ceil(len(trials) / size))]
        print(f"{len(trials)} trials; sampler replay ...", flush=True)
        sampler_ms = sampler_cost_ms(work / "mlruns" / "optuna.db", args.sampler, [1, *ends])
        timed: list[tuple[int, Timed, UiTimes | None]] = []
        for n, folder in taken:
            print(f"timing the read commands on the store of {n} trials ...", flush=True)
            reads = read_commands(folder, work)
            ui = measure_ui(folder, work, args.screenshots) if ui_ok else None
            timed.append((n, reads, ui))
            print("  " + ", ".join(f"{k} {med(reads[k][1]):.2f} s (CPU {med(reads[k][2]):.2f} s)" for k in reads)
                  + (f", UI experiment {med(ui.experiment_s):.2f} s, compare {med(ui.compare_s):.2f} s" if ui else ""),
                  flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    # per-bucket curve
    rows, curve, relative = [], [], []
    for i, end in enumerate(ends):
        group = trials[i * size:end]
        over = [t.overhead_s for t in group if t.overhead_s is not None]
        inside = [t.inside_s for t in group if t.inside_s is not None]
        gaps = [t.gap_s for t in group if t.gap_s is not None]
        train = [t.train_s for t in group if t.train_s is not None]
        span = (max(t.end for t in group) - min(t.start for t in group)).total_seconds()
        cpu, load = cpu_per_trial(samples, max(i * size, 1), end)  # (from the first trial's end: not start-up)
        curve.append(med(over))
        relative.append(med([t.overhead_s / t.train_s for t in group if t.overhead_s is not None and t.train_s]))
        hits = [t for t in group if t.reused]
        traced = [t for t in group if t.reused is False]
        by_kind = " / ".join(fmt_ms(med([t.overhead_s for t in kind if t.overhead_s is not None]) if kind else None)
                             for kind in (hits, traced))
        rows.append([f"{group[0].number}-{group[-1].number}", f"{med([t.wall_s for t in group]):.3f}",
                     f"{med(train):.3f}", fmt_ms(med(inside)), fmt_ms(med(gaps)), f"**{fmt_ms(med(over))}**",
                     f"{relative[-1]:.2f}", f"{len(hits)}/{len(group)}", by_kind,
                     f"{sampler_ms.get(end, float('nan')):.1f}", f"{60 * len(group) / span:.0f}" if span > 0 else "-",
                     "-" if math.isnan(cpu) else f"{cpu:.2f}", "-" if math.isnan(load) else f"{load:.1f}"])
    flat_ratio = curve[-1] / curve[0]
    curve_table = md_table(["trials", "wall s (median)", "training s", "overhead inside ms", "gap before ms",
                            "overhead ms (inside + gap)", "overhead ÷ training", "trials on a reused model",
                            "overhead ms: reused / traced anew",
                            f"{args.sampler} ask ms after the bucket's last trial",
                            "trials/min", "CPU s per trial (process tree)", "load average (1 min)"], rows)

    final_n, final_reads, final_ui = timed[-1]
    checks = [("per-trial overhead, last ÷ first bucket (median)", f"{flat_ratio:.2f}", f"≤ {1 + TARGET_FLAT:.2f}",
               flat_ratio <= 1 + TARGET_FLAT)]
    if len(curve) > 2:  # the first bucket holds the warm-up (first traces, the compiled-model cache filling)
        for label, ratio in (("the same, last ÷ second bucket", curve[-1] / curve[1]),
                             ("overhead ÷ training time, last ÷ second bucket (load-independent)",
                              relative[-1] / relative[1])):
            checks.append((label, f"{ratio:.2f}", f"≤ {1 + TARGET_FLAT:.2f}", ratio <= 1 + TARGET_FLAT))
    if run.exited:  # the end of `nnstudy run`: its report onto the parent run, the parent ended, the leaderboard
        end_s = (dt.datetime.fromisoformat(run.exited) - max(t.end for t in trials)).total_seconds()
        checks.append(("end of the study: last trial complete → `nnstudy run` exited, s", f"{end_s:.1f}",
                       f"≤ {TARGET_REPORT_S:g}", end_s <= TARGET_REPORT_S))
    for name, target in (("report", TARGET_REPORT_S), ("trials", TARGET_READ_S), ("best", TARGET_READ_S)):
        value = med(final_reads[name][1])
        checks.append((f"`nnstudy {name}` s (median of {REPEATS}; CPU {med(final_reads[name][2]):.2f} s)",
                       f"{value:.2f}", f"≤ {target:g}", value <= target))
    if final_ui is not None:
        for label, values in (("UI experiment page: parent run shown, s", final_ui.experiment_s),
                              (f"UI compare-runs page of {final_ui.compared} runs, s", final_ui.compare_s)):
            value = med(values)
            checks.append((label, f"{value:.2f}", f"≤ {TARGET_UI_S:g}", value <= TARGET_UI_S))
    check_table = md_table([f"at {final_n} trials", "measured", "target", "met"],
                           [[a, b, c, "**met**" if ok else "**not met**"] for a, b, c, ok in checks])

    read_rows = []
    for n, reads, ui in timed:
        read_rows.append([str(n), *(f"{med(reads[k][1]):.2f} ({med(reads[k][2]):.2f})" for k in ("report", "trials", "best")),
                          *((f"{ui.startup_s:.1f}", f"{med(ui.experiment_s):.2f}", f"{med(ui.children_s):.2f}",
                             f"{med(ui.compare_s):.2f}") if ui else ("-",) * 4)])
    read_table = md_table(["trials in the store", "report s (CPU s)", "trials s (CPU s)", "best s (CPU s)",
                           "UI start-up s", "UI experiment page s", "UI expand the parent s",
                           f"UI compare {N_COMPARE} runs s"], read_rows)
    shown = {k: " ".join(Path(c).name if c == NNSTUDY else c for c in cmd).replace(str(work), "DIR")
             for k, (cmd, _, _) in final_reads.items()}
    wall_text = "" if math.isnan(wall) else f" The study took {wall / 60:.1f} min."
    workers = f" --workers {args.workers}" if args.workers else ""
    pids = len({t.pid for t in trials})
    text = f"""## Scale: {args.n_trials} trials of 1 epoch ({args.sampler} sampler)

Command: `{command_line()}`.
`nnstudy run spec.toml --n-trials {args.n_trials} --no-progress --storage sqlite:///DIR/mlruns/optuna.db --tracking-uri sqlite:///DIR/mlruns/mlflow.db{workers}`
on studies/pass_fail.toml with max_epochs = 1, pruner none, no timeout, sampler {args.sampler}; the trials ran in
{pids} process(es).{wall_text}
Per-trial times from the Optuna store: wall = datetime_start → datetime_complete; training = the trial's
`duration_s` (model build + fit); overhead inside = wall − training (sampling, the MLflow child run and its
logging, test evaluation, the model of a new best); gap = the previous trial's completion → this one's start in
the same process (tell, callbacks, the parent run's summary, ask). The ask column: the sampler alone proposing one
trial after the bucket's last trial (in-memory replay of the finished trials, median of 5 asks). Overhead ÷
training: the median of each trial's ratio, which a busy machine changes less than the times. CPU per trial:
the CPU time of `nnstudy run` and its worker processes (/proc, sampled every 0.5 s) over the bucket ÷ its
trials; with the load average, it tells a slower machine from a slower nnstudy. Trials on a reused model: those
whose run is tagged `nnstudy.reused_compiled = true` (an earlier trial's traced model trained them); the next
column splits the bucket's median overhead between those and the trials whose model was traced anew.

{machine_md(info)}

{check_table}

Per-trial overhead, per bucket of {size} trials (medians):

{curve_table}

Read commands (wall time of the command, Python start-up included, and its CPU time; median of {REPEATS}) and the
MLflow UI in headless Chromium (a fresh browser context per load, median of {REPEATS}; experiment page: until the
study's parent run is shown; expand: the click on its expander until a child run is shown; compare: MLflow's
`#/compare-runs?runs=[...]&experiments=[...]` of the first {N_COMPARE} trial runs until its heading, its parallel
coordinates plot and the links to the first and last compared run are there), on snapshots of the stores taken
while the study ran:

{read_table}

Commands: `{shown['report']}`; `{shown['trials']}`; `{shown['best']}`; `nnstudy ui --study-name {STUDY} --storage ... --tracking-uri ...`.
The {args.sampler} sampler's own time to propose a trial: {sampler_ms.get(1, float('nan')):.1f} ms after trial 1,
{sampler_ms.get(ends[0], float('nan')):.1f} ms after trial {ends[0]}, {sampler_ms.get(ends[-1], float('nan')):.1f} ms after trial {ends[-1]}.
"""
    print(text)
    if not args.no_write:
        write_section("scale" if args.sampler == "tpe" else f"scale-{args.sampler}", text)


if __name__ == "__main__":
    main()
