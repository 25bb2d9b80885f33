"""The record contract: keys, run names, seeds and TrialRecord read from either store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from nnstudy.contract import (
    ATTR_RUN_ID,
    ROLE_REPRODUCTION,
    TAG_PRUNED,
    TAG_TRIAL,
    TrialRecord,
    run_id_of,
    study_run_id_key,
    trial_run_name,
    trial_seed,
)
from nnstudy.spec import StudySpec
from nnstudy.tracking import Tracker, param_text


def test_trial_run_names_sort_by_number() -> None:
    names = [trial_run_name(n) for n in (10, 2, 1000, 7)]
    assert sorted(names) == [trial_run_name(n) for n in (2, 7, 10, 1000)]
    assert trial_run_name(7, ROLE_REPRODUCTION) == trial_run_name(7) + "-reproduction"


def test_trial_seed_stays_a_valid_keras_seed() -> None:
    seeds = [trial_seed(s, n) for s in (0, 42, 2**31 - 2) for n in (0, 1, 10**6)]
    assert all(0 <= s < 2**31 - 1 for s in seeds)
    assert len(set(seeds)) == len(seeds)


def test_run_id_of_prefers_the_trial_attribute_then_the_synced_study_attribute() -> None:
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={ATTR_RUN_ID: "live"}))
    study.add_trial(optuna.trial.create_trial(value=2.0))
    live, offline = study.get_trials()
    synced = {study_run_id_key(offline.number): "synced", study_run_id_key(live.number): "ignored"}
    assert run_id_of(live, synced) == "live"
    assert run_id_of(offline, synced) == "synced"
    assert run_id_of(offline, {}) is None
    assert study_run_id_key(3) != study_run_id_key(30)


def test_from_trial_reads_every_known_attribute_and_keeps_the_rest() -> None:
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={"units": 8},
        distributions={"units": optuna.distributions.CategoricalDistribution([8, 16])},
        user_attrs={"seed": 12, "best_epoch": 3.0, "stopped_epoch": "5", "fail_reason": "diverged",
                    "diverged_at": 5, "retry_of": 1, "model_logged": True, "duration_s": 1.5, "custom": "kept"})
    rec = TrialRecord.from_trial(trial)
    assert (rec.state, rec.value, rec.params) == ("FAIL", None, {"units": 8})
    assert (rec.seed, rec.best_epoch, rec.stopped_epoch) == (12, 3, 5)
    assert (rec.fail_reason, rec.diverged_at, rec.retry_of, rec.model_logged) == ("diverged", 5, 1, True)
    assert rec.duration_s == 1.5 and rec.extra == {"custom": "kept"}


def test_from_run_maps_run_status_to_trial_state(tracker: Tracker) -> None:
    exp = tracker.experiment("states")

    def record(status: str, tags: dict[str, str]) -> TrialRecord:
        run_id = tracker.create_child_run(exp, None, "states", 4, params={"seed": "9", "units": "8"}, tags=tags)
        tracker.end_run(run_id, status)  # type: ignore[arg-type]
        return TrialRecord.from_run(tracker.client.get_run(run_id))

    assert record("FINISHED", {}).state == "COMPLETE"
    assert record("KILLED", {TAG_PRUNED: "true"}).state == "PRUNED"
    assert record("KILLED", {}).state == "FAIL"
    failed = record("FAILED", {})
    assert failed.state == "FAIL" and failed.number == 4 and failed.seed == 9 and failed.params == {"units": "8"}
    assert failed.extra[TAG_TRIAL] == "4"


def test_from_trial_and_from_run_agree_on_a_finished_trial(
        recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    trial = rs.add(0.42, {"learning_rate": 0.01, "optimizer": "adam"},
                   curves={"loss": [0.9, 0.5, 0.6], "val_loss": [0.8, 0.42, 0.5]})
    from_trial = TrialRecord.from_trial(trial, rs.study.user_attrs)
    from_run = TrialRecord.from_run(rs.tracker.client.get_run(from_trial.run_id), metric=rs.spec.study.metric)
    for name in ("number", "state", "value", "seed", "best_epoch", "stopped_epoch", "run_id"):
        assert getattr(from_trial, name) == getattr(from_run, name), name
    assert from_trial.best_epoch == 2 and from_trial.value == trial.value
    assert from_run.params == {k: param_text(v) for k, v in from_trial.params.items()}


@pytest.mark.slow
def test_records_of_a_real_trial_agree(study_dir: Path, tiny_spec: Callable[..., StudySpec]) -> None:
    from nnstudy.runner import run_study

    spec = tiny_spec()
    outcome = run_study(spec, show_progress=False)
    (trial,) = outcome.study.get_trials()
    from_trial = TrialRecord.from_trial(trial, outcome.study.user_attrs)
    client = Tracker(outcome.store.tracking_uri).client
    from_run = TrialRecord.from_run(client.get_run(from_trial.run_id), metric=spec.study.metric)
    for name in ("number", "state", "seed", "best_epoch", "stopped_epoch", "early_stopped", "run_id", "diagnosis",
                 "fail_reason"):
        assert getattr(from_trial, name) == getattr(from_run, name), name
    assert from_run.value == pytest.approx(from_trial.value)
    assert from_run.duration_s == pytest.approx(from_trial.duration_s, abs=1e-3)
    assert all(from_run.params[k] == param_text(v) for k, v in from_trial.params.items())
    assert from_trial.state == "COMPLETE" and from_trial.best_epoch in (1, 2)
