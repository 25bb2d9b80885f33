"""Where a study lives: the Optuna storage URL, the MLflow tracking URI and the artifact folder.

By default everything is under ``./mlruns``: ``mlflow.db`` (MLflow), ``optuna.db`` (Optuna)
and ``artifacts/``. URIs are validated before anything is created.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from nnstudy.errors import StoreError

DEFAULT_DIR = Path("mlruns")
DEFAULT_STORAGE = f"sqlite:///{DEFAULT_DIR.as_posix()}/optuna.db"
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_DIR.as_posix()}/mlflow.db"
STORAGE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql",
                   "mysql+pymysql", "mysql+mysqldb")
TRACKING_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql",
                    "mysql+pymysql", "http", "https", "databricks")


@dataclass(frozen=True)
class Store:
    """Resolved locations of one study's records."""

    storage: str  # Optuna storage URL
    tracking_uri: str  # MLflow tracking URI
    artifact_root: Path | None  # local artifact folder (None: the tracking server decides)

    def local_files(self) -> list[Path]:
        """SQLite files this store writes (to create their folders before use)."""
        files = []
        for url in (self.storage, self.tracking_uri):
            if url.startswith("sqlite:///"):
                files.append(Path(url.removeprefix("sqlite:///")))
        return files

    def prepare(self) -> None:
        """Create the local folders. Call only after the spec and the data have validated."""
        for path in self.local_files():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot create the store folder {path.parent}: {err.strerror}") from None
            if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
                raise StoreError(f"the store {path} is read-only; choose a writable folder with "
                                 "--storage/--tracking-uri")
        for path in self.local_files():
            _enable_wal(path)
        if self.artifact_root is not None:
            try:
                self.artifact_root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot create the artifact folder {self.artifact_root}: {err.strerror}") from None

    def check_databases(self) -> None:
        """Connect once to each database server URL (not SQLite) so an unreachable one fails fast,
        before anything is created."""
        for url, option in ((self.storage, "--storage"), (self.tracking_uri, "--tracking-uri")):
            if not url.startswith(("sqlite", "http", "databricks")):
                _check_database(url, option)

    @contextlib.contextmanager
    def init_lock(self) -> Iterator[None]:
        """Serialise schema creation of local SQLite stores between processes starting together
        (two MLflow schema migrations on one new file would collide)."""
        files = self.local_files()
        if not files:
            yield
            return
        import fcntl

        with open(files[0].parent / ".nnstudy-init.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ui_command(self) -> str:
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"

    def serve_ui(self, host: str, port: int) -> int:
        """Run the MLflow UI on this store until it is stopped; returns its exit code."""
        import subprocess
        import sys

        command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", self.tracking_uri,
                   "--host", host, "--port", str(port)]
        if self.artifact_root is not None:
            command += ["--default-artifact-root", self.artifact_root.resolve().as_uri()]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job workers for a study
        return subprocess.call(command, env=env)


def absolute_sqlite(url: str) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/relative.db`` (other URLs unchanged).

    MLflow caches its store per URI string: a relative path would keep pointing at the folder
    that was current when it was first opened.
    """
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    return url


def _check_database(url: str, option: str) -> None:
    import sqlalchemy

    connect_args = {"connect_timeout": 5} if url.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args)
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as err:
        raise StoreError(f"{option} {url!r}: the database driver is not installed ({err.name}); "
                         "allowed: postgresql:// (psycopg) or sqlite:///") from None
    except Exception as err:  # sqlalchemy wraps every driver error differently
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StoreError(f"{option} {url!r}: cannot connect to the database ({first})") from None


def _enable_wal(path: Path) -> None:
    """Put a SQLite store in write-ahead-log mode (kept in the file): readers never block the
    writer, and several worker processes can write without "database is locked"."""
    import sqlite3

    try:
        with sqlite3.connect(path, timeout=60) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as err:
        raise StoreError(f"cannot open the SQLite store {path}: {err}") from None


def _check_scheme(url: str, allowed: tuple[str, ...], option: str) -> None:
    scheme = urlparse(url).scheme
    if scheme not in allowed:
        raise StoreError(f"{option} {url!r}: unknown scheme {scheme + '://' if scheme else '(none)'}; "
                         f"allowed: {', '.join(s + '://' for s in allowed)}")
    if scheme == "sqlite" and not url.startswith("sqlite:///"):
        raise StoreError(f"{option} {url!r}: a SQLite URL needs three slashes: sqlite:///path/to/file.db")


def resolve_store(storage: str | None = None, tracking_uri: str | None = None,
                  directory: Path = DEFAULT_DIR) -> Store:
    """Defaults under ``directory``; ``MLFLOW_TRACKING_URI`` is honoured when no URI is given."""
    storage = storage or f"sqlite:///{directory.as_posix()}/optuna.db"  # DEFAULT_STORAGE for the default folder
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{directory.as_posix()}/mlflow.db"
    _check_scheme(storage, STORAGE_SCHEMES, "--storage")
    _check_scheme(tracking_uri, TRACKING_SCHEMES, "--tracking-uri")
    artifact_root = None
    if tracking_uri.startswith("sqlite:///"):
        artifact_root = Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    return Store(storage=storage, tracking_uri=tracking_uri, artifact_root=artifact_root)
