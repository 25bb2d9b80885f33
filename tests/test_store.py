"""Store locations: default URIs, MLFLOW_TRACKING_URI, scheme checks, folder creation."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from nnstudy.errors import StoreError, UserInputError
from nnstudy.store import resolve_store

pytestmark = pytest.mark.usefixtures("no_mlflow_env")


def test_default_uris_live_under_mlruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = resolve_store()
    assert store.storage == "sqlite:///mlruns/optuna.db"
    assert store.tracking_uri == "sqlite:///mlruns/mlflow.db"
    assert store.artifact_root == Path("mlruns/artifacts")
    assert store.local_files() == [Path("mlruns/optuna.db"), Path("mlruns/mlflow.db")]
    assert store.ui_command() == "mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db"
    assert list(tmp_path.iterdir()) == []  # resolving creates nothing


def test_another_directory_moves_every_default(tmp_path: Path) -> None:
    store = resolve_store(directory=tmp_path / "runs")
    assert store.storage == f"sqlite:///{(tmp_path / 'runs').as_posix()}/optuna.db"
    assert store.tracking_uri == f"sqlite:///{(tmp_path / 'runs').as_posix()}/mlflow.db"
    assert store.artifact_root == tmp_path / "runs" / "artifacts"


def test_mlflow_tracking_uri_environment_variable_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    store = resolve_store()
    assert store.tracking_uri == "http://tracking.example:5000"
    assert store.artifact_root is None  # the server decides where artifacts go
    assert store.storage == "sqlite:///mlruns/optuna.db"


def test_explicit_tracking_uri_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_store(tracking_uri="sqlite:///elsewhere/m.db").tracking_uri == "sqlite:///elsewhere/m.db"


def test_sqlite_tracking_uri_puts_artifacts_next_to_the_database() -> None:
    store = resolve_store(tracking_uri="sqlite:///some/dir/m.db")
    assert store.artifact_root == Path("some/dir/artifacts")


@pytest.mark.parametrize("storage", ["postgresql://u@db/optuna", "mysql+pymysql://u@db/optuna",
                                     "sqlite:////abs/optuna.db"])
def test_server_and_absolute_storage_urls_are_accepted(storage: str) -> None:
    assert resolve_store(storage=storage).storage == storage


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"storage": "redis://localhost:6379/0"}, "--storage 'redis://localhost:6379/0': unknown scheme redis://"),
    ({"storage": "optuna.db"}, "--storage 'optuna.db': unknown scheme (none)"),
    ({"tracking_uri": "redis://localhost:6379/0"}, "--tracking-uri 'redis://localhost:6379/0': unknown scheme"),
    ({"tracking_uri": "file:///tmp/mlruns"}, "unknown scheme file://"),
    ({"tracking_uri": "ftp://host/x"}, "unknown scheme ftp://"),
])
def test_unknown_schemes_are_rejected_with_the_allowed_ones(kwargs: dict[str, str], words: str) -> None:
    with pytest.raises(StoreError) as info:
        resolve_store(**kwargs)
    assert words in str(info.value)
    assert "allowed: sqlite://" in str(info.value)
    assert isinstance(info.value, UserInputError) and info.value.exit_code == 2


def test_unknown_scheme_in_the_environment_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "redis://localhost")
    with pytest.raises(StoreError, match="--tracking-uri 'redis://localhost': unknown scheme redis://"):
        resolve_store()


def test_sqlite_url_needs_three_slashes() -> None:
    with pytest.raises(StoreError, match="three slashes"):
        resolve_store(storage="sqlite://optuna.db")


def test_prepare_creates_the_folders(tmp_path: Path) -> None:
    store = resolve_store(storage=f"sqlite:///{tmp_path.as_posix()}/a/optuna.db",
                          tracking_uri=f"sqlite:///{tmp_path.as_posix()}/b/mlflow.db")
    assert not (tmp_path / "a").exists()
    store.prepare()
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir() and (tmp_path / "b" / "artifacts").is_dir()


def test_prepare_reports_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file, not a folder")
    store = resolve_store(storage=f"sqlite:///{tmp_path.as_posix()}/blocker/sub/optuna.db",
                          tracking_uri=f"sqlite:///{tmp_path.as_posix()}/ok/mlflow.db")
    with pytest.raises(StoreError, match="cannot create the store folder"):
        store.prepare()


# --------------------------------------------------------------------------- read-only and full disks (real mounts)


def _made_store(point: Path, seed_mlflow_db: Any) -> Any:
    """A store under ``point/mlruns`` with both databases made (WAL mode, as nnstudy leaves them), one
    study of one finished trial, every connection closed."""
    import optuna

    from nnstudy.storage import make_storage

    store = resolve_store(directory=point / "mlruns")
    seed_mlflow_db(point / "mlruns" / "mlflow.db")
    store.prepare()
    storage = make_storage(store.storage)
    study = optuna.create_study(study_name="s", storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize"
        study.tell(study.ask(), 1.0)
    storage.engine.dispose()
    return store


def test_a_store_on_a_read_only_mount_is_read_and_never_written(tmpfs: Any, seed_mlflow_db: Any) -> None:
    import optuna

    from nnstudy.storage import make_storage
    from nnstudy.store import sqlite_kind

    point = tmpfs.mount("disk")
    store = _made_store(point, seed_mlflow_db)
    tmpfs.remount(point, "ro")
    before = sorted(p.name for p in (point / "mlruns").iterdir())
    with pytest.raises(StoreError, match=r"the store .*/mlruns/optuna\.db is read-only \(read-only file system\); "
                                         r"nothing was written"):
        store.check_files()  # `run`: refused before the first write
    assert [sqlite_kind(p) for p in store.local_files()] == ["optuna", "mlflow"]  # not "not a SQLite database"
    store.check_files(reading=True)
    store.open_read_only()
    storage = make_storage(store.storage, create=False)
    assert [t.value for t in optuna.load_study(study_name="s", storage=storage).trials] == [1.0]
    storage.engine.dispose()
    assert sorted(p.name for p in (point / "mlruns").iterdir()) == before  # no -shm, no -wal


def test_a_full_disk_is_refused_before_the_first_write(tmpfs: Any, seed_mlflow_db: Any) -> None:
    from nnstudy.errors import DiskFull

    point = tmpfs.mount("disk", size="4m")
    store = _made_store(point, seed_mlflow_db)
    with open(point / "filler", "wb") as filler:  # the rest of the disk
        with pytest.raises(OSError):
            while True:
                filler.write(b"\0" * 65536)
    with pytest.raises(DiskFull, match=r"the disk holding the store .*/mlruns/optuna\.db is full \(disk full: 0 KiB "
                                       r"free, ENOSPC\); nothing was written") as info:
        store.check_files()
    assert info.value.exit_code == 2
    store.check_files(reading=True)  # reading needs no space


def test_checkpoints_live_beside_the_local_store(tmp_path: Path) -> None:
    store = resolve_store(f"sqlite:///{tmp_path}/db/optuna.db", f"sqlite:///{tmp_path}/other/mlflow.db")
    assert store.checkpoint_folder("s") == tmp_path / "db" / "checkpoints" / "s"
    assert resolve_store("postgresql://u@h/optuna", "http://h:5000").checkpoint_folder("s") == \
        Path("mlruns").absolute() / "checkpoints" / "s"  # no local store: a cache under ./mlruns


def _synchronous(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar())


def test_wal_stores_commit_without_an_fsync_and_other_sqlite_files_keep_theirs(
        tmp_path: Path, seed_mlflow_db: Any) -> None:
    import sqlalchemy

    from nnstudy.storage import make_storage
    from nnstudy.tracking import Tracker

    store = resolve_store(directory=tmp_path / "runs")
    seed_mlflow_db(tmp_path / "runs" / "mlflow.db")
    store.prepare()  # WAL mode
    storage = make_storage(store.storage)
    tracker = Tracker(store.tracking_uri, store.artifact_root)
    tracker.experiment("s")  # MLflow's engine connects
    normal, full = 1, 2
    assert _synchronous(storage.engine) == normal  # type: ignore[attr-defined]
    assert _synchronous(tracker.client._tracking_client.store.engine) == normal
    # a file of neither store, and a store file not in WAL mode, keep SQLite's default
    assert _synchronous(sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'other.db'}")) == full
    make_storage(f"sqlite:///{tmp_path / 'rollback.db'}")
    assert _synchronous(sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'rollback.db'}")) == full


def test_checkpoint_written_puts_the_wal_into_the_database_file(tmp_path: Path) -> None:
    """A process ending with os._exit (nnstudy run, its workers) first moves its stores' WAL into the database
    files: a copy of the .db file alone then holds every record."""
    import shutil
    import sqlite3

    from nnstudy.store import checkpoint_written, commit_without_fsync

    db = tmp_path / "records.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    commit_without_fsync(f"sqlite:///{db}")
    open_conn = sqlite3.connect(db)  # left open, as at os._exit
    open_conn.execute("CREATE TABLE t (x)")
    open_conn.execute("INSERT INTO t VALUES (1)")
    open_conn.commit()
    assert (tmp_path / "records.db-wal").stat().st_size > 0
    checkpoint_written()
    assert (tmp_path / "records.db-wal").stat().st_size == 0
    shutil.copyfile(db, tmp_path / "copy.db")
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("SELECT x FROM t").fetchall() == [(1,)]
    open_conn.close()
