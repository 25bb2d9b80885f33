"""optuna-dashboard on a study's Optuna storage: ``nnstudy dashboard`` (the optional extra
``nnstudy[dashboard]``). The dashboard reads the storage as it is: it creates no tables."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from nnstudy.errors import UserInputError
from nnstudy.store import Store

INSTALL = 'pip install "nnstudy[dashboard]"'


def check_installed() -> None:
    """Exit 2 naming the install command when optuna-dashboard is missing."""
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise UserInputError(f"nnstudy dashboard needs optuna-dashboard, which is not installed; allowed: {INSTALL}")


def dashboard_command(storage: str, host: str, port: int) -> list[str]:
    """The optuna-dashboard server of ``storage`` on ``host:port``, run by this Python."""
    return [sys.executable, "-c", "from optuna_dashboard._cli import main; main()", storage,
            "--host", host, "--port", str(port)]


def serve_dashboard(store: Store, host: str, port: int) -> int:
    """Serve the dashboard of the store's Optuna storage until it is stopped; returns its exit code.
    The storage must exist (nothing is created for a read)."""
    check_installed()
    store.check_files(reading=True)
    return subprocess.call(dashboard_command(store.storage, host, port))
