"""`nnstudy sync`: records kept in the Optuna storage while MLflow was unreachable are written later."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest

from nnstudy.contract import (
    ATTR_PENDING,
    STUDY_PARENT_PENDING,
    TAG_BEST_RUN,
    TAG_SYNCED,
    TAG_TRIAL,
    TrialRecord,
    study_run_id_key,
)
from nnstudy.recorder import RunTarget
from nnstudy.sync import sync_records
from nnstudy.tracking import Tracker


@pytest.fixture
def pending_record(monkeypatch: pytest.MonkeyPatch, free_port: int) -> Callable[[float], dict[str, Any]]:
    """``pending_record(value)``: the pending record of a 2-epoch trial recorded while MLflow was down."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = RunTarget(Tracker(f"http://127.0.0.1:{free_port}"), "1", None, "tiny")

    def make(value: float) -> dict[str, Any]:
        rec = down.start(0, params={"learning_rate": 0.01, "optimizer": "adam"}, tags={})
        rec.log_epoch(1, {"loss": 0.9, "val_loss": value + 0.1})
        rec.log_epoch(2, {"loss": 0.8, "val_loss": value})
        pending = rec.finish("FINISHED", {"best_val_loss": value, "best_epoch": 2}, {})
        assert pending is not None and rec.offline
        return pending

    return make


def _trial_runs(tracker: Tracker, experiment_id: str) -> list[Any]:
    return tracker.client.search_runs([experiment_id], "tags.`nnstudy.role` = 'trial'")


def test_nothing_to_sync_without_a_parent_run(tracker: Tracker) -> None:
    assert sync_records(optuna.create_study(), tracker, metric="val_loss") == []


def test_sync_writes_each_kept_record_once(recorded_study: Callable[..., Any],
                                           pending_record: Callable[[float], dict[str, Any]]) -> None:
    rs = recorded_study()
    live = rs.add(0.6, {"learning_rate": 0.05, "optimizer": "sgd"})
    offline = [rs.add(v, {"learning_rate": 0.01, "optimizer": "adam"}, run=False,
                      attrs={ATTR_PENDING: pending_record(v)}) for v in (0.5, 0.3)]
    rs.study.set_user_attr(STUDY_PARENT_PENDING, True)
    assert sync_records(rs.study, rs.tracker, metric="val_loss") == [t.number for t in offline]
    runs = {r.data.tags[TAG_TRIAL]: r for r in _trial_runs(rs.tracker, rs.experiment_id)}
    assert sorted(runs) == sorted(str(t.number) for t in (live, *offline))
    for trial in offline:
        run_id = rs.study.user_attrs[study_run_id_key(trial.number)]
        run = runs[str(trial.number)]
        assert run.info.run_id == run_id and run.data.tags[TAG_SYNCED] == "true"
        assert run.data.metrics["best_val_loss"] == pytest.approx(trial.value)
        assert TrialRecord.from_trial(trial, rs.study.user_attrs).run_id == run_id
    parent = rs.tracker.client.get_run(rs.parent_id)
    assert parent.data.tags[TAG_BEST_RUN] == rs.study.user_attrs[study_run_id_key(offline[1].number)]
    assert parent.info.status == "FINISHED" and rs.study.user_attrs[STUDY_PARENT_PENDING] is False

    assert sync_records(rs.study, rs.tracker, metric="val_loss") == []  # safe to repeat
    assert len(_trial_runs(rs.tracker, rs.experiment_id)) == 3


def test_sync_writes_a_parent_summary_that_was_kept(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    best = rs.add(0.2, {"learning_rate": 0.05, "optimizer": "sgd"})
    assert TAG_BEST_RUN not in rs.tracker.client.get_run(rs.parent_id).data.tags
    assert sync_records(rs.study, rs.tracker, metric="val_loss") == []  # nothing kept: parent left alone
    assert TAG_BEST_RUN not in rs.tracker.client.get_run(rs.parent_id).data.tags
    rs.study.set_user_attr(STUDY_PARENT_PENDING, True)
    assert sync_records(rs.study, rs.tracker, metric="val_loss") == []
    parent = rs.tracker.client.get_run(rs.parent_id)
    assert parent.data.tags[TAG_BEST_RUN] == TrialRecord.from_trial(best).run_id
    assert parent.info.status == "FINISHED" and rs.study.user_attrs[STUDY_PARENT_PENDING] is False
