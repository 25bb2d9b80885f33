"""Opening an existing study and its MLflow records (the commands that read a study)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nnstudy.contract import ATTR_RUN_ID, study_run_id_key
from nnstudy.errors import StudyNotFoundError
from nnstudy.records import load_records
from nnstudy.storage import make_storage, open_study


def _open(rs: Any, name: str | None = None) -> Any:
    return load_records(name, storage=rs.storage, tracking_uri=rs.tracking_uri)


def test_the_only_study_is_opened_with_its_parent_run(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study(study={"metric": "val_accuracy"})
    records = _open(rs)
    assert records.name == "tiny" and records.parent_run_id == rs.parent_id
    assert records.spec().to_dict() == rs.spec.to_dict()
    assert records.metric() == "val_accuracy"
    assert records.client.get_run(rs.parent_id).info.run_id == rs.parent_id


def test_reading_the_best_trial_opens_no_mlflow_client(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    best = rs.add(0.2, {"learning_rate": 0.02, "optimizer": "sgd"})
    rs.add(0.5, {"learning_rate": 0.01, "optimizer": "adam"})
    records = _open(rs)
    assert records.trial().number == best.number
    assert records.opened_tracker is None  # `nnstudy best` and `trials` need only the Optuna storage
    assert records.client.get_run(rs.parent_id).info.run_id == rs.parent_id  # opened on first use
    assert records.tracker is records.opened_tracker


def test_no_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StudyNotFoundError, match=r"no study store at .*optuna\.db; run `nnstudy run SPEC` first"):
        load_records(storage=f"sqlite:///{tmp_path}/optuna.db", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert not (tmp_path / "optuna.db").exists()


def test_a_name_is_needed_when_the_storage_holds_several_studies(recorded_study: Callable[..., Any],
                                                                 tiny_spec: Callable[..., Any]) -> None:
    rs = recorded_study()
    open_study(tiny_spec(study={"name": "second"}), make_storage(rs.storage))
    with pytest.raises(StudyNotFoundError, match="holds 2 studies; choose one with --study-name: "):
        _open(rs)
    assert _open(rs, "second").name == "second"
    assert _open(rs, "second").parent_run_id is None
    with pytest.raises(StudyNotFoundError, match=r"--study-name 'nope': no such study .*allowed: .*second"):
        _open(rs, "nope")


def test_a_study_without_parent_run(recorded_study: Callable[..., Any], tiny_spec: Callable[..., Any]) -> None:
    rs = recorded_study()
    open_study(tiny_spec(study={"name": "orphan"}), make_storage(rs.storage))
    records = _open(rs, "orphan")
    assert records.metric() == "val_loss"
    with pytest.raises(StudyNotFoundError, match="has no MLflow parent run"):
        records.spec()


def test_trials_by_number_run_id_or_best(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    worse = rs.add(0.5, {"learning_rate": 0.01, "optimizer": "adam"})
    best = rs.add(0.2, {"learning_rate": 0.02, "optimizer": "sgd"})
    synced = rs.add(0.7, {"learning_rate": 0.03, "optimizer": "sgd"}, run=False)
    rs.study.set_user_attr(study_run_id_key(synced.number), "synced-run")
    records = _open(rs)
    assert records.trial().number == best.number
    assert records.trial(worse.number).number == worse.number
    assert records.trial(run_id=best.user_attrs[ATTR_RUN_ID]).number == best.number
    assert records.trial(run_id="synced-run").number == synced.number
    assert records.record(records.trial(synced.number)).run_id == "synced-run"
    with pytest.raises(StudyNotFoundError, match=r"has no trial 9; allowed: 0\.\.2"):
        records.trial(9)
    with pytest.raises(StudyNotFoundError, match="no trial of study 'tiny' has MLflow run 'nope'"):
        records.trial(run_id="nope")


def test_best_of_a_study_without_complete_trials(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    rs.add(None, {"learning_rate": 0.01, "optimizer": "adam"}, state="FAIL")
    with pytest.raises(StudyNotFoundError, match="has no complete trial yet"):
        _open(rs).trial()


def test_reproduce_command_names_a_non_default_store(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    command = _open(rs).reproduce_command(3)
    assert command == (f"nnstudy reproduce --study-name tiny --trial 3 --storage {rs.storage} "
                       f"--tracking-uri {rs.tracking_uri}")


def test_reproduce_command_of_the_default_store_is_short(recorded_study: Callable[..., Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    recorded_study()
    (tmp_path / "work" / "mlruns").mkdir(parents=True)
    for name in ("optuna.db", "mlflow.db"):
        shutil.copyfile(tmp_path / name, tmp_path / "work" / "mlruns" / name)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert load_records().reproduce_command(0) == "nnstudy reproduce --study-name tiny --trial 0"


def test_swapped_stores_are_named_and_left_untouched(recorded_study: Callable[..., Any]) -> None:
    from nnstudy.errors import StoreError

    rec = recorded_study()
    rec.add(0.5, {"learning_rate": 0.01, "optimizer": "adam"})
    files = [Path(rec.storage.removeprefix("sqlite:///")), Path(rec.tracking_uri.removeprefix("sqlite:///"))]
    before = [(f.stat().st_mtime_ns, f.read_bytes()) for f in files]
    with pytest.raises(StoreError, match=r"--storage .*mlflow\.db: not an nnstudy/Optuna storage: this looks like "
                                         r"the MLflow database \(give it as --tracking-uri\)"):
        load_records(storage=rec.tracking_uri, tracking_uri=rec.storage)
    copy = files[0].with_name("optuna-copy.db")
    copy.write_bytes(files[0].read_bytes())
    with pytest.raises(StoreError, match=r"--tracking-uri .*optuna-copy\.db: not an MLflow store: this looks like "
                                         r"the Optuna storage"):
        load_records(storage=rec.storage, tracking_uri=f"sqlite:///{copy}")
    assert [(f.stat().st_mtime_ns, f.read_bytes()) for f in files] == before


def test_reading_a_study_never_imports_the_specs_models() -> None:
    import subprocess
    import sys

    code = ("import sys; import nnstudy.cli, nnstudy.api, nnstudy.records, nnstudy.report, nnstudy.progress; "
            "print('pydantic' in sys.modules, 'nnstudy.spec' in sys.modules); "
            "from nnstudy import StudySpec, load_spec; print(load_spec.__module__, StudySpec.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=180)
    assert out.stdout.split() == ["False", "False", "nnstudy.spec", "StudySpec"]  # loaded when first asked for
