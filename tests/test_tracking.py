"""The MLflow side: experiment, parent run, child runs, buffered curves, environment tags, reachability."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from nnstudy.contract import (
    ROLE_REPRODUCTION,
    ROLE_STUDY,
    TAG_PARENT,
    TAG_RESUMED_AT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL,
    TAG_VERSION_PREFIX,
    trial_run_name,
)
from nnstudy.errors import StoreError
from nnstudy.tracking import (
    DatasetRecord,
    Tracker,
    TrialRun,
    check_reachable,
    environment_tags,
    is_missing_run,
    param_text,
)


def test_param_text_keeps_floats_exact() -> None:
    for value in (0.1, 1e-7, 0.0012345678901234567):
        assert float(param_text(value)) == value
    assert param_text(8) == "8" and param_text("adam") == "adam"


def test_experiment_is_created_once_under_the_artifact_root(tracker: Tracker, tmp_path: Path) -> None:
    first = tracker.experiment("demo")
    assert tracker.experiment("demo") == first
    experiment = tracker.client.get_experiment(first)
    assert experiment.tags[TAG_STUDY] == "demo"
    assert experiment.artifact_location == (tmp_path / "artifacts" / "demo").resolve().as_uri()


def test_experiments_are_of_the_model_training_kind(tracker: Tracker) -> None:
    made = tracker.experiment("kind")
    assert tracker.client.get_experiment(made).tags["mlflow.experimentKind"] == "custom_model_development"
    older = tracker.client.create_experiment("older")  # an experiment made before nnstudy set the kind
    assert tracker.experiment("older") == older
    assert tracker.client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_runs_data_set_is_logged_with_its_schema(tracker: Tracker, tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    run_id = tracker.create_child_run(tracker.experiment("d"), None, "d", 0, params={}, tags={})
    frame = pd.DataFrame({"lectures": [3, 5], "hours": [1.5, 2.0], "term": ["a", "b"]})
    table = DatasetRecord.of(str(tmp_path / "course.csv"), "abc123", frame, {"train_rows": 80, "val_rows": 20})
    tracker.log_dataset(run_id, table)
    images = DatasetRecord.of("digits_images", "def456", np.zeros((2, 8, 8, 1), np.float32), {"train_rows": 2})
    tracker.log_dataset(run_id, images)
    logged = {i.dataset.name: i for i in tracker.client.get_run(run_id).inputs.dataset_inputs}
    course = logged["course"]
    assert (course.dataset.digest, course.dataset.source_type) == ("abc123", "local")
    assert json.loads(course.dataset.source) == {"uri": str(tmp_path / "course.csv")}
    assert [c["name"] for c in json.loads(course.dataset.schema)["mlflow_colspec"]] == ["lectures", "hours", "term"]
    assert json.loads(course.dataset.profile) == {"num_rows": 100, "train_rows": 80, "val_rows": 20}
    assert [(t.key, t.value) for t in course.tags] == [("mlflow.data.context", "training")]
    digits = logged["digits_images"]
    assert digits.dataset.source_type == "code" and "mlflow_tensorspec" in json.loads(digits.dataset.schema)


def test_a_deleted_experiment_is_restored(tracker: Tracker) -> None:
    experiment_id = tracker.experiment("gone")
    tracker.client.delete_experiment(experiment_id)
    assert tracker.experiment("gone") == experiment_id
    assert tracker.client.get_experiment(experiment_id).lifecycle_stage == "active"


def test_parent_run_returns_the_same_run_twice(tracker: Tracker) -> None:
    exp = tracker.experiment("s")
    first = tracker.parent_run(exp, "s", None, params={"seed": 3, "lr": 0.1}, tags={"extra": "x"})
    tracker.end_run(first, "FINISHED")
    again = tracker.parent_run(exp, "s", None, params={}, tags={})  # found by its tags
    assert again == first
    run = tracker.client.get_run(first)
    assert run.info.status == "RUNNING" and TAG_RESUMED_AT in run.data.tags  # marked running again
    assert run.data.tags[TAG_ROLE] == ROLE_STUDY and run.data.tags["extra"] == "x"
    assert run.data.params == {"seed": "3", "lr": "0.1"}
    assert tracker.parent_run(exp, "s", first, params={}, tags={}) == first
    assert tracker.parent_run(exp, "other", None, params={}, tags={}) != first  # another study's parent


def test_parent_run_replaces_a_deleted_one(tracker: Tracker) -> None:
    exp = tracker.experiment("s")
    first = tracker.parent_run(exp, "s", None, params={}, tags={})
    tracker.client.delete_run(first)
    second = tracker.parent_run(exp, "s", first, params={}, tags={})
    assert second != first and tracker.client.get_run(second).info.lifecycle_stage == "active"


def test_child_runs_nest_under_the_parent_with_role_and_trial_tags(tracker: Tracker) -> None:
    exp = tracker.experiment("s")
    parent = tracker.parent_run(exp, "s", None, params={}, tags={})
    child = tracker.create_child_run(exp, parent, "s", 7, params={"units": "8"}, tags={"custom": "1"})
    run = tracker.client.get_run(child)
    assert run.data.tags[TAG_PARENT] == parent
    assert (run.data.tags[TAG_ROLE], run.data.tags[TAG_TRIAL], run.data.tags[TAG_STUDY]) == ("trial", "7", "s")
    assert run.info.run_name == trial_run_name(7) and run.data.tags["custom"] == "1"
    assert run.data.params == {"units": "8"}
    again = tracker.create_child_run(exp, parent, "s", 7, role=ROLE_REPRODUCTION, params={}, tags={})
    assert tracker.client.get_run(again).info.run_name == trial_run_name(7, ROLE_REPRODUCTION)
    orphan = tracker.create_child_run(exp, None, "s", 8, params={}, tags={})
    assert TAG_PARENT not in tracker.client.get_run(orphan).data.tags


def test_summary_skips_non_finite_metrics_and_end_run_sets_status_and_tags(tracker: Tracker) -> None:
    exp = tracker.experiment("s")
    run_id = tracker.create_child_run(exp, None, "s", 0, params={}, tags={})
    tracker.log_summary(run_id, {"best_val_loss": 0.25, "bad": math.nan, "worse": math.inf}, {"t": 1},
                        params={"extra": 0.5})
    tracker.end_run(run_id, "FAILED", {"why": "because"})
    run = tracker.client.get_run(run_id)
    assert run.data.metrics == {"best_val_loss": 0.25}
    assert run.data.tags["t"] == "1" and run.data.tags["why"] == "because" and run.data.params["extra"] == "0.5"
    assert tracker.run_status(run_id) == "FAILED"


def test_log_curves_is_safe_to_repeat(tracker: Tracker) -> None:
    exp = tracker.experiment("s")
    run_id = tracker.create_child_run(exp, None, "s", 0, params={}, tags={})
    tracker.log_curves(run_id, {"loss": {1: 0.9, 2: math.nan}})
    tracker.log_curves(run_id, {"loss": {1: 0.9, 2: 0.7, 3: 0.6}, "val_loss": {1: 1.0}})
    history = tracker.client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.9), (2, 0.7), (3, 0.6)]
    assert [m.step for m in tracker.client.get_metric_history(run_id, "val_loss")] == [1]


def test_trial_run_buffers_epochs_until_flushed(tracker: Tracker) -> None:
    exp = tracker.experiment("s")
    run_id = tracker.create_child_run(exp, None, "s", 0, params={}, tags={})
    buffered = TrialRun(tracker.client, run_id, flush_interval_s=3600)
    for epoch in range(1, 4):
        buffered.log_epoch(epoch, {"loss": 1.0 / epoch, "val_loss": math.nan})
    # the first epoch is written at once (the UI shows a curve early), the next ones wait for the interval
    assert [m.step for m in tracker.client.get_metric_history(run_id, "loss")] == [1]
    buffered.flush()
    assert sorted(m.step for m in tracker.client.get_metric_history(run_id, "loss")) == [1, 2, 3]
    assert tracker.client.get_metric_history(run_id, "val_loss") == []  # NaN is never written
    eager = TrialRun(tracker.client, run_id, flush_interval_s=0.0)
    eager.log_epoch(4, {"loss": 0.2})
    assert 4 in {m.step for m in tracker.client.get_metric_history(run_id, "loss")}
    assert buffered.logging_s > 0


def test_environment_tags_name_versions_host_and_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import version

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    tags = environment_tags()
    assert tags["nnstudy.keras_backend"] == "jax"
    for package in ("optuna", "mlflow", "keras", "numpy"):
        assert tags[f"{TAG_VERSION_PREFIX}{package}"] == version(package)
    assert tags["nnstudy.python"].count(".") == 2


def test_is_missing_run_tells_a_deleted_run_from_other_errors(tracker: Tracker) -> None:
    with pytest.raises(MlflowException) as err:
        tracker.client.get_run("0" * 32)
    assert is_missing_run(err.value)
    assert not is_missing_run(MlflowException("boom"))
    assert not is_missing_run(ConnectionError("refused"))


def test_check_reachable_fails_fast_on_a_closed_port(free_port: int) -> None:
    check_reachable("sqlite:///anything.db")  # not a server: nothing to check
    uri = f"http://127.0.0.1:{free_port}"
    start = time.monotonic()
    with pytest.raises(StoreError, match=rf"MLflow tracking server {uri} is unreachable .*--tracking-uri"):
        check_reachable(uri)
    assert time.monotonic() - start < 5


def test_a_summary_with_the_last_steps_is_one_call_and_splits_only_past_the_batch_limit(
        tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.entities import Metric

    exp = tracker.experiment("s")
    run_id = tracker.create_child_run(exp, None, "s", 0, params={}, tags={})
    calls: list[int] = []
    log_batch = tracker.client.log_batch
    monkeypatch.setattr(tracker.client, "log_batch", lambda run, metrics=(), params=(), tags=(), **kw: (
        calls.append(len(metrics) + len(params) + len(tags)), log_batch(run, metrics, params, tags, **kw))[1])
    steps = [Metric("loss", 0.5, 0, 2), Metric("system/cpu", 7.0, 0, 0)]
    tracker.log_summary(run_id, {"best_loss": 0.5}, {"done": "yes"}, steps=steps)
    assert calls == [4]
    run = tracker.client.get_run(run_id)
    assert run.data.metrics["best_loss"] == 0.5 and run.data.tags["done"] == "yes"
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, "loss")] == [(2, 0.5)]
    calls.clear()
    many = [Metric("curve", float(i), 0, i) for i in range(1, 1001)]
    tracker.log_summary(run_id, {"last": 1.0}, {"t": "1"}, steps=many)
    assert sum(calls) == 1002 and max(calls) <= 900 and len(calls) == 2
    assert len(tracker.client.get_metric_history(run_id, "curve")) == 1000
