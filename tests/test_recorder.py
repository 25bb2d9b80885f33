"""One trial's MLflow record: written live, or kept whole while MLflow does not answer and written later."""

from __future__ import annotations

import math
import time

import pytest

from nnstudy.contract import TAG_PARENT, TAG_SYNCED, TAG_TRIAL
from nnstudy.recorder import RunTarget, write_pending
from nnstudy.tracking import Tracker

PARAMS = {"learning_rate": 0.01, "units": 8, "optimizer": "adam"}


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch, free_port: int) -> Tracker:
    """A tracker whose HTTP tracking server does not answer (a closed port), failing at once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    return Tracker(f"http://127.0.0.1:{free_port}")


def _target(tracker: Tracker, experiment_id: str | None = None, parent: str | None = None) -> RunTarget:
    return RunTarget(tracker, experiment_id or tracker.experiment("rec"), parent, "rec", tags=(("shared", "yes"),))


def _steps(tracker: Tracker, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in tracker.client.get_metric_history(run_id, key))


def test_online_recorder_writes_curves_summary_and_status(tracker: Tracker) -> None:
    exp = tracker.experiment("rec")
    parent = tracker.parent_run(exp, "rec", None, params={}, tags={})
    rec = _target(tracker, exp, parent).start(3, params=PARAMS, tags={"own": "1"})
    assert rec.run_id is not None and not rec.offline
    for epoch in (1, 2, 3):
        rec.log_epoch(epoch, {"loss": 1.0 / epoch, "val_loss": math.nan if epoch == 3 else 2.0 / epoch})
    assert rec.finish("FINISHED", {"best_val_loss": 1.0, "best_epoch": 2}, {"end": "tag"}) is None
    run = tracker.client.get_run(rec.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"learning_rate": "0.01", "units": "8", "optimizer": "adam"}
    assert {k: run.data.tags[k] for k in ("shared", "own", "end", TAG_TRIAL, TAG_PARENT)} == {
        "shared": "yes", "own": "1", "end": "tag", TAG_TRIAL: "3", TAG_PARENT: parent}
    assert run.data.metrics["best_val_loss"] == 1.0 and run.data.metrics["best_epoch"] == 2
    assert _steps(tracker, rec.run_id, "loss") == [1, 2, 3] and _steps(tracker, rec.run_id, "val_loss") == [1, 2]


def test_online_recorder_logs_artifacts_to_its_run(tracker: Tracker) -> None:
    rec = _target(tracker).start(0, params={}, tags={})
    seen: list[str] = []
    rec.log_artifacts(lambda t, run_id: seen.append(run_id))
    assert seen == [rec.run_id]


def test_offline_recorder_keeps_the_whole_record(unreachable: Tracker) -> None:
    start = time.monotonic()
    rec = _target(unreachable, "1").start(2, params=PARAMS, tags={"own": "1"})
    assert rec.offline and rec.run_id is None and rec.error
    assert time.monotonic() - start < 10  # no minutes of retries
    for epoch in (1, 2):
        rec.log_epoch(epoch, {"loss": 0.5 / epoch, "val_loss": math.inf if epoch == 2 else 0.6})
    rec.log_artifacts(lambda t, run_id: pytest.fail("no artifacts while offline"))
    pending = rec.finish("KILLED", {"pruned_at_epoch": 2, "best_val_loss": math.nan}, {"nnstudy.pruned": "true"})
    assert pending is not None
    assert pending["run_id"] is None and pending["status"] == "KILLED" and pending["error"] == rec.error
    assert pending["params"] == {"learning_rate": "0.01", "units": "8", "optimizer": "adam"}
    assert pending["tags"] == {"shared": "yes", "own": "1"} and pending["end_tags"] == {"nnstudy.pruned": "true"}
    assert pending["curves"] == {"loss": {"1": 0.5, "2": 0.25}, "val_loss": {"1": 0.6}}  # JSON-able, finite only
    assert pending["metrics"] == {"pruned_at_epoch": 2.0}


def test_pending_record_of_an_offline_trial_is_written_to_a_real_store(unreachable: Tracker,
                                                                       tracker: Tracker) -> None:
    rec = _target(unreachable, "1").start(5, params=PARAMS, tags={"own": "1"})
    for epoch in (1, 2, 3):
        rec.log_epoch(epoch, {"loss": 1.0 / epoch})
    pending = rec.finish("FINISHED", {"best_loss": 1 / 3}, {"end": "tag"})
    assert pending is not None
    exp = tracker.experiment("rec")
    parent = tracker.parent_run(exp, "rec", None, params={}, tags={})
    run_id = write_pending(_target(tracker, exp, parent), 5, pending)
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[TAG_SYNCED] == "true"
    assert run.data.tags[TAG_PARENT] == parent and run.data.tags[TAG_TRIAL] == "5"
    assert run.data.tags["own"] == "1" and run.data.tags["end"] == "tag"
    assert run.data.params["units"] == "8" and run.data.metrics["best_loss"] == pytest.approx(1 / 3)
    assert _steps(tracker, run_id, "loss") == [1, 2, 3]


def _went_offline_mid_trial(tracker: Tracker) -> tuple[str, dict]:  # type: ignore[type-arg]
    rec = _target(tracker).start(1, params=PARAMS, tags={})
    rec.log_epoch(1, {"loss": 0.9})
    rec._live.flush()  # type: ignore[union-attr]  # epoch 1 reached MLflow
    rec.go_offline(ConnectionError("the tracking server stopped answering"))
    rec.log_epoch(2, {"loss": 0.8})
    pending = rec.finish("FINISHED", {"best_loss": 0.8}, {})
    assert pending is not None and pending["run_id"] == rec.run_id
    assert pending["error"] == "ConnectionError: the tracking server stopped answering"
    return str(rec.run_id), pending


def test_writing_a_pending_record_twice_adds_no_epoch_twice(tracker: Tracker) -> None:
    run_id, pending = _went_offline_mid_trial(tracker)
    assert tracker.run_status(run_id) == "RUNNING"
    target = _target(tracker)
    assert write_pending(target, 1, pending) == run_id
    assert write_pending(target, 1, pending) == run_id
    history = tracker.client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.9), (2, 0.8)]
    assert tracker.run_status(run_id) == "FINISHED"


def test_a_run_deleted_from_mlflow_is_made_again(tracker: Tracker) -> None:
    run_id, pending = _went_offline_mid_trial(tracker)
    tracker.client.delete_run(run_id)
    tracker.client._tracking_client.store._hard_delete_run(run_id)  # as `mlflow gc` does
    again = write_pending(_target(tracker), 1, pending)
    assert again != run_id
    assert _steps(tracker, again, "loss") == [1, 2] and tracker.run_status(again) == "FINISHED"


def test_a_run_deleted_in_the_ui_is_made_again(tracker: Tracker) -> None:
    run_id, pending = _went_offline_mid_trial(tracker)
    tracker.client.delete_run(run_id)  # the UI's delete: the run stays, marked deleted
    again = write_pending(_target(tracker), 1, pending)
    assert tracker.client.get_run(again).info.lifecycle_stage == "active"


def test_writing_an_offline_trials_record_twice_makes_one_run(unreachable: Tracker, tracker: Tracker) -> None:
    rec = _target(unreachable, "1").start(0, params=PARAMS, tags={})
    rec.log_epoch(1, {"loss": 0.5})
    pending = rec.finish("FINISHED", {}, {})
    assert pending is not None
    target = _target(tracker)
    first, second = write_pending(target, 0, pending), write_pending(target, 0, pending)
    runs = tracker.client.search_runs([target.experiment_id])
    assert first == second and len(runs) == 1


def test_a_run_ends_with_one_write_of_its_last_epochs_system_metrics_and_summary(
        tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _target(tracker).start(3, params=PARAMS, tags={}, system_metrics_s=60)
    rec.log_epoch(1, {"loss": 0.9})  # written at once
    rec.log_epoch(2, {"loss": 0.8, "val_loss": 0.7})  # buffered
    assert rec.run_id is not None and _steps(tracker, rec.run_id, "loss") == [1]
    batches: list[list[str]] = []
    log_batch = tracker.client.log_batch
    monkeypatch.setattr(tracker.client, "log_batch", lambda run, metrics=(), params=(), tags=(), **kw: (
        batches.append([m.key for m in metrics]), log_batch(run, metrics, params, tags, **kw))[1])
    assert rec.finish("FINISHED", {"best_loss": 0.8}, {"end": "tag"}) is None
    assert len(batches) == 1 and {"loss", "val_loss", "best_loss", "system/cpu_utilization_percentage"} \
        <= set(batches[0])
    run = tracker.client.get_run(rec.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["end"] == "tag" and run.data.metrics["best_loss"] == 0.8
    assert _steps(tracker, rec.run_id, "loss") == [1, 2] and _steps(tracker, rec.run_id, "val_loss") == [2]
