"""Helpers shared by the benchmark scripts: paths, machine description, RESULTS.md sections, stats."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
PYTHON = sys.executable
NNSTUDY = str(Path(sys.executable).with_name("nnstudy"))


def child_env() -> dict[str, str]:
    """The environment every contender runs with: quiet TensorFlow, no inherited MLflow store."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", PYTHONUNBUFFERED="1")
    return env


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("tensorflow-cpu", "tensorflow", "keras", "optuna", "optuna-integration", "mlflow", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "nnstudy"], cwd=ROOT, capture_output=True,
                               text=True, check=False).stdout.strip()
        commit += " (nnstudy/ modified)" if dirty else ""
    except OSError:
        commit = "?"
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "load average at start (1/5/15 min)": load,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nnstudy commit": commit,
        **{f"{k}": v for k, v in versions.items()},
    }


def machine_md(info: dict[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def write_section(name: str, body: str) -> None:
    """Replace the ``name`` section of RESULTS.md (between its markers), or append it."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# nnstudy benchmarks\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def trio(values: list[float], fmt: str = "{:.1f}") -> str:
    """min / median / max."""
    if not values:
        return "-"
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def command_line() -> str:
    args = [Path(sys.executable).relative_to(ROOT).as_posix() if str(sys.executable).startswith(str(ROOT))
            else sys.executable, *sys.argv]
    return " ".join(args)


def finished_trials(db: Path) -> int | None:
    """Trials of an Optuna SQLite store that have ended (COMPLETE, PRUNED, FAIL), read-only; None before the
    store exists or while it is locked."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            (n,) = con.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()
            return int(n)
        finally:
            con.close()
    except sqlite3.Error:
        return None  # schema not there yet, or locked for a moment
