"""The browsers' view of a study: the MLflow UI on its store (``nnstudy ui``) and optuna-dashboard on
its Optuna storage (``nnstudy dashboard``, the optional extra ``nnstudy[dashboard]``).

Both only read: the stores must exist (nothing is created for a look), a ``--study-name`` must name a
study in them, and the address must be one this machine can listen on; each is checked before a
server starts. The printed link opens the study itself.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from nnstudy.contract import STUDY_EXPERIMENT
from nnstudy.errors import StudyNotFoundError, UserInputError
from nnstudy.records import StudyRecords, load_records
from nnstudy.store import Store, resolve_store

DASHBOARD_INSTALL = 'pip install "nnstudy[dashboard]"'
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class Server:
    """A server to start: what it serves, its link, its command and environment."""

    name: str
    url: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def run(self) -> int:
        """Serve until stopped (Ctrl-C raises KeyboardInterrupt: exit 130); returns the server's exit code."""
        return subprocess.call(self.command, env={**os.environ, **self.env})


def experiment_url(base: str, experiment_id: str | None) -> str:
    """The UI page of a study's experiment (or of all experiments) in MLflow 3's model-training view:
    the UI opens in its GenAI view unless the link asks for the other."""
    return f"{base}/#/experiments{f'/{experiment_id}' if experiment_id else ''}?workflowType=machine_learning"


def _port(host: str, port: int) -> int:
    """``port`` (a free one for 0) after checking that this machine can listen on ``host:port``."""
    if not 0 <= port <= 65535:
        raise UserInputError(f"--port {port}: allowed: 1 to 65535 (or 0 for a free port)")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            return int(sock.getsockname()[1])
    except OSError as err:  # an unknown name, an address of another machine, a port in use
        reason = err.strerror or str(err)
        raise UserInputError(f"--host {host} --port {port}: cannot listen there ({reason}); allowed: an address of "
                             "this machine (default 127.0.0.1) and a free port") from None


def _study(store: Store, study_name: str | None) -> StudyRecords | None:
    """The study a link should open: the one named, else the only one; None when the storage holds several."""
    try:
        return load_records(study_name, storage=store.storage, tracking_uri=store.tracking_uri)
    except StudyNotFoundError:
        if study_name is not None:
            raise
        store.check_files(reading=True)  # a missing store is an error; several studies are not
        return None


def mlflow_ui(study_name: str | None, *, storage: str | None, tracking_uri: str | None, host: str,
              port: int) -> Server | str:
    """The MLflow UI of a local store (a tracking server's address, as a string, when it serves its own UI)."""
    store = resolve_store(storage, tracking_uri)
    if store.tracking_uri.startswith(("http://", "https://")):
        return store.tracking_uri
    records = _study(store, study_name)
    port = _port(host, port)
    experiment = str(records.study.user_attrs.get(STUDY_EXPERIMENT) or "") if records else ""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.tracking_uri,
               "--host", host, "--port", str(port)]
    if store.artifact_root is not None:
        command += ["--default-artifact-root", store.artifact_root.resolve().as_uri()]
    return Server("MLflow UI", experiment_url(f"http://{host}:{port}", experiment or None), command,
                  {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no GenAI job workers for a study


def optuna_dashboard(study_name: str | None, *, storage: str | None, tracking_uri: str | None, host: str,
                     port: int) -> Server:
    """optuna-dashboard on the study's Optuna storage (it creates no tables), on its built-in server."""
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise UserInputError(f"nnstudy dashboard needs optuna-dashboard, which is not installed; allowed: "
                             f"{DASHBOARD_INSTALL}")
    store = resolve_store(storage, tracking_uri)
    records = _study(store, study_name)
    port = _port(host, port)
    page = f"studies/{records.study._study_id}" if records else ""
    command = [sys.executable, "-c", "from optuna_dashboard._cli import main; main()", store.storage,
               "--host", host, "--port", str(port), "--server", "wsgiref", "--quiet"]
    return Server("Optuna dashboard", f"http://{host}:{port}/dashboard/{page}", command)
