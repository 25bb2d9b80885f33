"""Store locations: default URIs, MLFLOW_TRACKING_URI, scheme checks, folder creation."""

from __future__ import annotations

from pathlib import Path

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
