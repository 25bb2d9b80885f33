"""Where a study lives: the Optuna storage URL, the MLflow tracking URI and the artifact folder.

By default everything is under ``./mlruns``: ``mlflow.db`` (MLflow), ``optuna.db`` (Optuna)
and ``artifacts/``. URIs are validated before anything is created.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

from nnstudy.errors import DiskFull, StoreError, StudyNotFoundError

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

    def checkpoint_folder(self, study_name: str) -> Path:
        """Where the trials of a study keep their mid-training checkpoints (``[train].checkpoint_every``): a
        local cache beside the store's first local file (``mlruns/checkpoints/<study>``), else under
        ``./mlruns`` (a database server: a dead worker's trial then resumes on the same machine only)."""
        files = self.local_files()
        base = files[0].parent if files else DEFAULT_DIR
        return base.absolute() / "checkpoints" / study_name

    def prepare(self, before_files: Callable[[], object] | None = None) -> None:
        """Create the local folders. Call only after the spec and the data have validated.
        ``before_files``: called once the folders exist, before the SQLite files are opened (empty
        stores made ahead are put in place there: :class:`nnstudy.schemas.SchemaTemplates`)."""
        for path in self.local_files():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot create the store folder {path.parent}: {err.strerror}") from None
        self.check_writable()
        if before_files is not None:
            before_files()
        for path in self.local_files():
            _enable_wal(path)
        if self.artifact_root is not None:
            try:
                self.artifact_root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot create the artifact folder {self.artifact_root}: {err.strerror}") from None

    def check_files(self, *, reading: bool = False) -> None:
        """Check the local SQLite files before anything touches them: each is a SQLite database of its
        own kind (an Optuna storage, an MLflow store), or -- unless ``reading`` -- missing or empty, to be
        made. Read-only commands must find both stores made; nothing is created or migrated for them."""
        checks = [(self.storage, "--storage", "optuna"), (self.tracking_uri, "--tracking-uri", "mlflow")]
        local = [(Path(url.removeprefix("sqlite:///")), option, kind) for url, option, kind in checks
                 if url.startswith("sqlite:///")]
        if len(local) == 2 and local[0][0].resolve() == local[1][0].resolve():
            raise StoreError(f"--storage and --tracking-uri both name {local[0][0]}; allowed: two different files "
                             "(the Optuna storage and the MLflow store)")
        if not reading:
            self.check_writable()
        for path, option, kind in local:
            found = sqlite_kind(path)
            if found == kind or (found in ("missing", "empty", "sqlite") and not reading):
                continue
            if found == "missing":
                raise StudyNotFoundError(f"no study store at {path}; run `nnstudy run SPEC` first or pass "
                                         "--storage/--tracking-uri")
            other = {"optuna": "the Optuna storage (give it as --storage)",
                     "mlflow": "the MLflow database (give it as --tracking-uri)"}.get(found)
            what = {"optuna": "an nnstudy/Optuna storage", "mlflow": "an MLflow store"}[kind]
            problem = f"this looks like {other}" if other else {
                "empty": "the file is empty", "sqlite": "a SQLite database without its tables",
                "not-sqlite": "not a SQLite database", "directory": "a directory",
                "other": "not a regular file"}[found]
            raise StoreError(f"{option} {path}: not {what}: {problem}; allowed: {what}"
                             + ("" if reading else ", or a new file"))

    def check_writable(self) -> None:
        """The local store files and the artifact folder can be written: a read-only mount, no write
        permission or a full disk is refused before anything is written (reading such a store works)."""
        entries = [(path, path) for path in self.local_files()]
        if self.artifact_root is not None:
            entries.append((self.artifact_root / "entry", self.artifact_root))  # a file made in it
        for probe, where in entries:
            reason = write_problem(probe)
            if reason is not None and reason.startswith("disk full"):
                raise DiskFull(f"the disk holding the store {where} is full ({reason}, ENOSPC); nothing was "
                               "written; free some space (or choose another disk with --storage/--tracking-uri) "
                               "and run the same command again")
            if reason is not None:
                raise StoreError(f"the store {where} is read-only ({reason}); nothing was written; allowed: a "
                                 "writable store (remount it read-write, or choose a writable folder with "
                                 "--storage/--tracking-uri)")

    def open_read_only(self) -> None:
        """Let this process read local store files that cannot be written (see :func:`write_problem`):
        SQLite opens them read-only, so nothing is made beside them."""
        for path in self.local_files():
            if write_problem(path) is not None:
                open_sqlite_read_only(path)

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
        return shlex.join(["mlflow", "ui", "--backend-store-uri", self.tracking_uri])

    def reproduce_command(self, study_name: str, trial_number: int) -> str:
        """The shell command that reproduces a trial of a study in this store (pasted back as it is)."""
        parts = ["nnstudy", "reproduce", "--study-name", study_name, "--trial", str(trial_number)]
        if self.storage != DEFAULT_STORAGE:
            parts += ["--storage", self.storage]
        if self.tracking_uri != DEFAULT_TRACKING_URI:
            parts += ["--tracking-uri", self.tracking_uri]
        return shlex.join(parts)


#: free space below which a store's disk counts as full: SQLite needs about this much to open a WAL-mode
#: database (its -shm and first -wal pages) and record a trial
MIN_FREE_BYTES = 1 << 20


def write_problem(path: Path) -> str | None:
    """Why ``path`` (a store file, with the journal files SQLite writes beside it, or a folder's
    entry) cannot be written -- ``"read-only file system"``, ``"no write permission"`` or
    ``"disk full: ..."`` (under :data:`MIN_FREE_BYTES` free) -- or None. For a path that does not
    exist yet, the nearest folder above it that does is asked."""
    probe = path.parent.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        fs = os.statvfs(probe)
    except OSError:
        return None  # not ours to judge: creating the folder says what is wrong
    if fs.f_flag & os.ST_RDONLY:
        return "read-only file system"
    if not os.access(probe, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "no write permission"
    if fs.f_bavail * fs.f_frsize < MIN_FREE_BYTES:
        return f"disk full: {fs.f_bavail * fs.f_frsize // 1024} KiB free"
    return None


#: SQLite files this process opens read-only (``mode=ro``), immutable when no write-ahead log is pending
_READ_ONLY_SQLITE: set[str] = set()


def _sqlite_read_only_uri(path: Path) -> str:
    """The SQLite URI that reads ``path`` without writing anything beside it. A WAL-mode database
    needs its ``-shm`` file, which a read-only folder cannot hold: when no write-ahead log with
    content is there, the file cannot change and is opened immutable (no ``-shm`` needed)."""
    from urllib.parse import quote

    wal = Path(f"{path}-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    return f"file:{quote(str(path.resolve()))}?mode=ro" + ("" if pending else "&immutable=1")


def open_sqlite_read_only(path: Path) -> None:
    """Every SQLite connection this process makes to ``path`` (Optuna's, MLflow's) opens it read-only:
    a store on a read-only mount, or without write permission, can still be read."""
    import sqlalchemy

    if not _READ_ONLY_SQLITE:
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "do_connect", _connect_read_only)
    _READ_ONLY_SQLITE.add(str(path.resolve()))


def _connect_read_only(dialect: Any, conn_rec: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
    if dialect.name == "sqlite" and cargs and isinstance(cargs[0], str) and not cargs[0].startswith("file:") \
            and os.path.realpath(cargs[0]) in _READ_ONLY_SQLITE:
        cargs[0] = _sqlite_read_only_uri(Path(cargs[0]))
        cparams["uri"] = True


#: the SQLite files whose connections in this process commit without an fsync (:func:`commit_without_fsync`)
_NO_FSYNC_SQLITE: set[str] = set()


def commit_without_fsync(url: str) -> None:
    """Every connection this process makes to the SQLite store ``url`` (Optuna's, MLflow's, their threads')
    commits without waiting for the disk, while the file is in WAL mode (``PRAGMA synchronous=NORMAL``, what
    SQLite advises for WAL): a trial commits some 30 small transactions to its two stores, and each fsync cost
    ~4 ms of a trial's ~0.5 s on a busy disk. A commit still outlives the process (a
    kill, an out-of-memory kill: the WAL is written at once and read back at the next open); only a crash of
    the operating system or a power cut can take back the last commits, never leaving the database corrupt
    (every checkpoint of the WAL is synced). Other URLs and files not in WAL mode: unchanged."""
    if not url.startswith("sqlite:///"):
        return
    import sqlalchemy

    if not _NO_FSYNC_SQLITE:
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _connected_without_fsync)
    _NO_FSYNC_SQLITE.add(os.path.realpath(url.removeprefix("sqlite:///").split("?")[0]))


def _connected_without_fsync(dbapi_connection: Any, connection_record: Any) -> None:
    import sqlite3

    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    files = [row[2] for row in dbapi_connection.execute("PRAGMA database_list") if row[1] == "main"]
    if files and files[0] and os.path.realpath(files[0]) in _NO_FSYNC_SQLITE \
            and str(dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def checkpoint_written() -> None:
    """Move the WAL of every SQLite store this process wrote (:func:`commit_without_fsync`) into its database
    file, for a process about to end with ``os._exit``: a connection closed normally does this, and a copy of
    ``mlflow.db`` alone then holds every record. A store busy with another process is left to that process."""
    import sqlite3

    for path in sorted(_NO_FSYNC_SQLITE):
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=5)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            continue


def absolute_sqlite(url: str) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/relative.db`` (other URLs unchanged).

    MLflow caches its store per URI string: a relative path would keep pointing at the folder
    that was current when it was first opened.
    """
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    return url


SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_kind(path: Path) -> str:
    """What a store file is, read without writing: ``missing``, ``empty``, ``optuna``, ``mlflow``,
    ``sqlite`` (no table of either), ``not-sqlite``, ``directory`` or ``other`` (FIFO, device...)."""
    import sqlite3
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    if stat.S_ISDIR(mode):
        return "directory"
    if not stat.S_ISREG(mode):
        return "other"
    with open(path, "rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if not head:
        return "empty"
    if head != SQLITE_MAGIC:
        return "not-sqlite"
    uri = _sqlite_read_only_uri(path) if write_problem(path) else f"file:{path}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=60)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        return "not-sqlite"
    if "studies" in tables and "trials" in tables:
        return "optuna"
    if "experiments" in tables and "runs" in tables:
        return "mlflow"
    return "sqlite"


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


@contextmanager
def default_store(uri: str) -> Iterator[None]:
    """MLflow's model logging and models:/ URIs use the default tracking URI: ``uri`` for the block."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(absolute_sqlite(uri)):
        yield
