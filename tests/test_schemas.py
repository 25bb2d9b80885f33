"""Empty stores made ahead in another process, put in place only where no file is yet."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from nnstudy.schemas import SchemaTemplates
from nnstudy.storage import make_storage


def _schema(path: Path) -> dict[str, list[tuple[str, str, int]]]:
    """Each table and index with its columns (name, type, not null); MLflow's migrations word the same
    constraints in a varying order, so the SQL text itself is not compared."""
    with sqlite3.connect(path) as db:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")]
        return {n: sorted((c[1], c[2], c[3]) for c in db.execute(f'PRAGMA table_info("{n}")')) for n in names}


def test_templates_become_the_stores_a_run_would_have_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    templates = SchemaTemplates.start(None, None)  # the default store, ./mlruns
    assert templates is not None and sorted(templates.targets) == ["mlflow", "optuna"]
    assert not (tmp_path / "mlruns").exists()  # nothing where the study lives before install
    (tmp_path / "mlruns").mkdir()
    installed = templates.install()
    assert sorted(p.name for p in installed) == ["mlflow.db", "optuna.db"]
    assert not templates.folder.exists()
    assert sorted(p.name for p in (tmp_path / "mlruns").iterdir()) == ["mlflow.db", "optuna.db"]  # no .part left
    # the same schema (and MLflow's Default experiment at the same place) as stores made directly
    (tmp_path / "direct").mkdir()
    make_storage(f"sqlite:///{tmp_path}/direct/optuna.db")
    MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/direct/mlflow.db").search_experiments()
    for name in ("optuna.db", "mlflow.db"):
        assert _schema(tmp_path / "mlruns" / name) == _schema(tmp_path / "direct" / name)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert client.get_experiment("0").artifact_location == \
        MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/direct/mlflow.db").get_experiment("0").artifact_location
    storage = make_storage(f"sqlite:///{tmp_path}/mlruns/optuna.db", create=False)
    optuna.create_study(study_name="s", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)


def test_a_file_made_meanwhile_is_left_alone(tmp_path: Path) -> None:
    templates = SchemaTemplates.start(f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db")
    assert templates is not None
    (tmp_path / "optuna.db").write_bytes(b"")  # another process made it first
    assert [p.name for p in templates.install()] == ["mlflow.db"]
    assert (tmp_path / "optuna.db").read_bytes() == b""


def test_nothing_is_made_for_existing_files_servers_or_refused_uris(tmp_path: Path) -> None:
    (tmp_path / "optuna.db").write_bytes(b"")
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert SchemaTemplates.start(f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db") is None
    assert SchemaTemplates.start("postgresql://u@127.0.0.1/test", "http://127.0.0.1:5000") is None
    assert SchemaTemplates.start("nosuch://x", None) is None  # the run itself reports a bad URI


def test_discard_stops_the_maker_and_leaves_nothing(tmp_path: Path) -> None:
    templates = SchemaTemplates.start(f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db")
    assert templates is not None
    templates.discard()
    assert templates.process.poll() is not None and not templates.folder.exists()
    assert list(tmp_path.iterdir()) == []
