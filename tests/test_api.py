"""The library front door: the functions every command is made of."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

import nnstudy
from nnstudy import api
from nnstudy.contract import ATTR_RUN_ID
from nnstudy.errors import StudyNotFoundError, UserInputError
from nnstudy.spec import StudySpec


def _records(rs: Any) -> Any:
    return api.open_study(storage=rs.storage, tracking_uri=rs.tracking_uri)


@pytest.fixture
def three_trials(recorded_study: Callable[..., Any]) -> Any:
    rs = recorded_study()
    for value, lr in ((0.5, 0.01), (0.2, 0.05), (0.35, 0.002)):
        rs.add(value, {"learning_rate": lr, "optimizer": "adam"})
    rs.add(None, {"learning_rate": 0.09, "optimizer": "sgd"}, state="FAIL", attrs={"fail_reason": "diverged"})
    return rs


def test_trials_frame_sorts_best_first_with_unfinished_trials_last(three_trials: Any) -> None:
    frame = api.trials_frame(_records(three_trials), diagnosis=False)
    assert list(frame["value"].iloc[:3]) == sorted(t.value for t in three_trials.study.trials if t.value is not None)
    assert frame["state"].iloc[-1] == "FAIL" and frame["fail_reason"].iloc[-1] == "diverged"
    assert list(frame.columns[:3]) == ["number", "state", "value"]


def test_trials_frame_sorts_by_any_column_and_keeps_the_top(three_trials: Any) -> None:
    records = _records(three_trials)
    frame = api.trials_frame(records, sort="learning_rate", top=2, diagnosis=False)
    assert list(frame["learning_rate"]) == sorted(t.params["learning_rate"] for t in records.study.trials)[:2]
    assert len(api.trials_frame(records, top=0, diagnosis=False)) == 0


def test_trials_frame_of_a_maximized_metric_puts_the_largest_first(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study(study={"metric": "val_accuracy"})
    for value in (0.6, 0.9, 0.7):
        rs.add(value, {"learning_rate": 0.01, "optimizer": "adam"})
    assert list(api.trials_frame(_records(rs), diagnosis=False)["value"]) == [0.9, 0.7, 0.6]


def test_trials_frame_refuses_an_unknown_sort_column(three_trials: Any) -> None:
    with pytest.raises(UserInputError, match=r"--sort 'nope': no such column; allowed: number, state, value, "):
        api.trials_frame(_records(three_trials), sort="nope")


def test_trials_frame_with_diagnosis_reads_the_curves(three_trials: Any) -> None:
    frame = api.trials_frame(_records(three_trials))
    complete = frame[frame["state"] == "COMPLETE"]
    assert complete["diagnosis"].notna().all()
    assert frame[frame["state"] == "FAIL"]["diagnosis"].tolist() == ["diverged"]


def test_best_gives_the_trial_and_how_to_reproduce_it(three_trials: Any) -> None:
    records = _records(three_trials)
    info = api.best(records)
    best = three_trials.study.best_trial
    assert (info["study"], info["trial"], info["value"], info["params"]) == ("tiny", best.number, best.value,
                                                                             best.params)
    assert info["mlflow_run_id"] == best.user_attrs[ATTR_RUN_ID] and info["seed"] == best.user_attrs["seed"]
    assert info["best_epoch"] == best.user_attrs["best_epoch"]
    assert info["reproduce"] == records.reproduce_command(best.number)
    assert info["reproduce"].startswith(f"nnstudy reproduce --study-name tiny --trial {best.number} ")


def test_reproduce_takes_a_trial_or_a_run_id_not_both(three_trials: Any) -> None:
    with pytest.raises(UserInputError, match="give --trial or --run-id, not both"):
        api.reproduce(_records(three_trials), trial=0, run_id="abc")


def test_predict_needs_a_saved_model(three_trials: Any, tmp_path: Path) -> None:
    with pytest.raises(StudyNotFoundError, match=r"trial \d+ of study '[^']+' has no saved model; allowed: .*keep_models"):
        api.predict(_records(three_trials), tmp_path / "rows.csv")


def test_validate_summarizes_spec_and_data(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec()
    summary = api.validate(spec)
    assert (summary["study"], summary["direction"], summary["metric"]) == ("tiny", "minimize", "val_loss")
    assert summary["searched"] == spec.space.searched == ["learning_rate", "optimizer"]
    assert summary["data"]["train_rows"] + summary["data"]["val_rows"] + summary["data"]["test_rows"] == 120


def test_report_writes_into_the_folder(three_trials: Any, tmp_path: Path) -> None:
    files = api.report(_records(three_trials), tmp_path / "out", top=2)
    assert (tmp_path / "out" / "trials.csv") in files and all(f.exists() for f in files)


def test_sync_of_a_study_with_nothing_kept(three_trials: Any) -> None:
    assert api.sync(_records(three_trials)) == []


def test_the_package_exports_the_front_door() -> None:
    assert nnstudy.trials_frame is api.trials_frame and nnstudy.best is api.best
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nnstudy.nope  # noqa: B018


def test_sync_with_records_to_write_refuses_a_read_only_store(recorded_study: Callable[..., Any], tmpfs: Any) -> None:
    import sqlite3

    from nnstudy.contract import STUDY_PARENT_PENDING
    from nnstudy.errors import StoreError

    rs = recorded_study()
    rs.add(0.4, {"learning_rate": 0.01, "optimizer": "adam"})
    rs.study.set_user_attr(STUDY_PARENT_PENDING, True)  # as after an outage: the parent's summary is still to write
    point = tmpfs.mount("disk")
    for name, url in (("optuna.db", rs.storage), ("mlflow.db", rs.tracking_uri)):
        src, dst = sqlite3.connect(url.removeprefix("sqlite:///")), sqlite3.connect(point / name)
        src.backup(dst)
        dst.close()  # (a file open for writing keeps the mount from going read-only)
        src.close()
    (point / "artifacts").mkdir()
    tmpfs.remount(point, "ro")
    records = api.open_study("tiny", storage=f"sqlite:///{point}/optuna.db", tracking_uri=f"sqlite:///{point}/mlflow.db")
    with pytest.raises(StoreError, match=r"is read-only \(read-only file system\); nothing was written"):
        api.sync(records)
