"""The Optuna storage: heartbeats from the spec, opening a study, repairing trials of dead workers."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from nnstudy.contract import (
    ATTR_FAIL_REASON,
    ATTR_HOST,
    ATTR_PID,
    ATTR_RUN_ID,
    STUDY_EXPERIMENT,
    TAG_FAIL_REASON,
)
from nnstudy.errors import SpecError, StoreError
from nnstudy.sampling import ProcessSampler
from nnstudy.spec import StudySpec
from nnstudy.storage import (
    end_interrupted_trials,
    make_storage,
    open_study,
    recover_stale_trials,
    storage_for,
    study_names,
)
from nnstudy.tracking import Tracker

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_storage_for_uses_the_specs_heartbeat_and_retries(tmp_path: Path, tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"heartbeat_interval": 7, "heartbeat_grace": 31, "max_retries": 3})
    storage = storage_for(spec, f"sqlite:///{tmp_path}/optuna.db")
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert (storage.heartbeat_interval, storage.grace_period) == (7, 31)
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback) and callback._max_retry == 3


def test_make_storage_defaults_and_relative_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = make_storage("sqlite:///rel.db")
    assert (storage.heartbeat_interval, storage.grace_period) == (20, 60)
    assert (tmp_path / "rel.db").exists()


def test_make_storage_of_an_unusable_url_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"--storage 'sqlite:///.*': cannot open the Optuna storage"):
        make_storage(f"sqlite:///{tmp_path}/no/such/folder/optuna.db")


def test_open_study_creates_once_then_loads(tmp_path: Path, tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec()
    url = f"sqlite:///{tmp_path}/optuna.db"
    first, created = open_study(spec, storage_for(spec, url))
    first.add_trial(optuna.trial.create_trial(value=1.0))
    again, created_again = open_study(spec, storage_for(spec, url))
    assert (created, created_again) == (True, False)
    assert len(again.trials) == 1 and isinstance(again.sampler, ProcessSampler)
    assert study_names(storage_for(spec, url)) == [spec.name]


def test_open_study_refuses_a_direction_change(tmp_path: Path, tiny_spec: Callable[..., StudySpec]) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    open_study(tiny_spec(), make_storage(url))
    maximized = tiny_spec(study={"metric": "val_accuracy"})
    with pytest.raises(SpecError, match=r"\[study\]\.direction: 'maximize', but study 'tiny' in the storage was "
                                        r"created with 'minimize'; allowed:") as err:
        open_study(maximized, make_storage(url))
    assert err.value.exit_code == 2


def test_open_study_of_several_objectives(tmp_path: Path, tiny_spec: Callable[..., StudySpec]) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    pareto = tiny_spec(study={"objectives": ["val_loss", "n_params", "latency_ms"]})
    study, created = open_study(pareto, make_storage(url))
    assert created and [d.name for d in study.directions] == ["MINIMIZE"] * 3
    assert study.metric_names == ["val_loss", "n_params", "latency_ms"]
    again, created = open_study(pareto, make_storage(url))  # resumed
    assert not created and again.metric_names == study.metric_names
    with pytest.raises(SpecError, match=r"\[study\]\.objectives: \['val_loss'\], but study 'tiny' in the storage "
                                        r"was created with 3 objective\(s\)") as err:
        open_study(tiny_spec(), make_storage(url))
    assert err.value.exit_code == 2


def test_open_study_refuses_another_number_of_repeats_or_aggregate(tmp_path: Path,
                                                                    tiny_spec: Callable[..., StudySpec]) -> None:
    """A trial's value is the aggregate of its repeats: a resumed study must mean the same by it."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    three = tiny_spec(study={"repeats": 3})
    study, _ = open_study(three, make_storage(url))
    assert study.user_attrs["trial_value"] == {"repeats": 3, "aggregate": "mean"}
    assert not open_study(three, make_storage(url))[1]  # the same: resumed
    with pytest.raises(SpecError, match=r"\[study\]\.repeats: 1, but the trials of study 'tiny' in the storage are "
                                        r"worth 3 seed\(s\) each; allowed: 3, or another") as err:
        open_study(tiny_spec(), make_storage(url))
    assert err.value.exit_code == 2
    with pytest.raises(SpecError, match=r"\[study\]\.aggregate: 'worst', but .* valued by the 'mean' of their "
                                        r"repeats; allowed: 'mean'"):
        open_study(tiny_spec(study={"repeats": 3, "aggregate": "worst"}), make_storage(url))
    # a study made before repeats existed, with trials: its trials are worth one seed
    older = optuna.create_study(study_name="older", storage=make_storage(url))
    older.add_trial(optuna.trial.create_trial(value=1.0))
    assert not open_study(tiny_spec(study={"name": "older"}), make_storage(url))[1]
    with pytest.raises(SpecError, match=r"\[study\]\.repeats: 2, but .* worth 1 seed\(s\) each"):
        open_study(tiny_spec(study={"name": "older", "repeats": 2}), make_storage(url))


def _running_trial(study: optuna.Study, tracker: Tracker, pid: int, host: str) -> tuple[int, str]:
    experiment = tracker.experiment(study.study_name)
    trial = study.ask({"units": optuna.distributions.CategoricalDistribution([8, 16])})
    run_id = tracker.create_child_run(experiment, None, study.study_name, trial.number, params={}, tags={})
    for key, value in ((ATTR_PID, pid), (ATTR_HOST, host), (ATTR_RUN_ID, run_id)):
        trial.set_user_attr(key, value)
    return trial.number, run_id


def test_recover_fails_a_dead_workers_trial_ends_its_run_and_queues_a_retry(
        tmp_path: Path, tracker: Tracker, tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"max_retries": 1})
    study, _ = open_study(spec, storage_for(spec, f"sqlite:///{tmp_path}/optuna.db"))
    dead, dead_run = _running_trial(study, tracker, _dead_pid(), platform.node())
    alive_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive, alive_run = _running_trial(study, tracker, alive_proc.pid, platform.node())
        elsewhere, elsewhere_run = _running_trial(study, tracker, _dead_pid(), "another-host")
        assert recover_stale_trials(study, tracker) == [dead]
    finally:
        alive_proc.kill()
        alive_proc.wait()
    trials = {t.number: t for t in study.get_trials()}
    assert trials[dead].state == optuna.trial.TrialState.FAIL
    assert trials[dead].user_attrs[ATTR_FAIL_REASON] == "worker-died"
    run = tracker.client.get_run(dead_run)
    assert run.info.status == "KILLED" and run.data.tags[TAG_FAIL_REASON] == "worker-died"
    for number, run_id in ((alive, alive_run), (elsewhere, elsewhere_run)):  # a live pid; another host's pid
        assert trials[number].state == optuna.trial.TrialState.RUNNING
        assert tracker.run_status(run_id) == "RUNNING"
    retries = [t for t in trials.values() if t.state == optuna.trial.TrialState.WAITING]
    assert len(retries) == 1 and retries[0].params == trials[dead].params  # max_retries = 1: one re-run queued


def test_recover_ends_the_run_of_a_failed_trial_that_never_learnt_its_run_id(
        tmp_path: Path, tracker: Tracker, tiny_spec: Callable[..., StudySpec]) -> None:
    """A full disk (or a kill) between making a trial's run and writing its id into the Optuna trial: the next
    run's recovery still ends that run (the CI of this change caught one left RUNNING after a full disk)."""
    spec = tiny_spec()
    study, _ = open_study(spec, storage_for(spec, f"sqlite:///{tmp_path}/optuna.db"))
    experiment = tracker.experiment(study.study_name)
    study.set_user_attr(STUDY_EXPERIMENT, experiment)
    trial = study.ask({"units": optuna.distributions.CategoricalDistribution([8, 16])})
    orphan = tracker.create_child_run(experiment, None, study.study_name, trial.number, params={}, tags={})
    other = study.ask({"units": optuna.distributions.CategoricalDistribution([8, 16])})  # still running elsewhere
    running = tracker.create_child_run(experiment, None, study.study_name, other.number, params={}, tags={})
    other.set_user_attr(ATTR_HOST, "another-host")
    trial.set_user_attr(ATTR_FAIL_REASON, "disk-full")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert recover_stale_trials(study, tracker) == [trial.number]
    run = tracker.client.get_run(orphan)
    assert run.info.status == "FAILED" and run.data.tags[TAG_FAIL_REASON] == "disk-full"
    assert tracker.run_status(running) == "RUNNING"  # its trial is not over
    assert recover_stale_trials(study, tracker) == []  # nothing left to end


def test_recover_is_a_no_op_the_second_time_and_skips_runs_deleted_from_mlflow(
        tmp_path: Path, tracker: Tracker, tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"max_retries": 0})
    study, _ = open_study(spec, storage_for(spec, f"sqlite:///{tmp_path}/optuna.db"))
    _, deleted_run = _running_trial(study, tracker, _dead_pid(), platform.node())
    tracker.client.delete_run(deleted_run)
    tracker.client._tracking_client.store._hard_delete_run(deleted_run)  # gone from MLflow altogether
    assert recover_stale_trials(study, tracker) == []
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL]  # max_retries = 0: no re-run
    assert recover_stale_trials(study, tracker) == []


def test_own_running_trial_is_left_alone(tmp_path: Path, tracker: Tracker,
                                         tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec()
    study, _ = open_study(spec, storage_for(spec, f"sqlite:///{tmp_path}/optuna.db"))
    _running_trial(study, tracker, os.getpid(), platform.node())
    assert recover_stale_trials(study, tracker) == []
    assert study.get_trials()[0].state == optuna.trial.TrialState.RUNNING


def _ownerless_trial(study: optuna.Study, started: datetime.datetime) -> int:
    """A RUNNING trial as a process leaves it when its first write (params, pid) found the disk full."""
    template = optuna.trial.FrozenTrial(number=0, state=optuna.trial.TrialState.RUNNING, value=None,
                                        datetime_start=started, datetime_complete=None, params={}, distributions={},
                                        user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=0)
    return study._storage.create_new_trial(study._study_id, template_trial=template)


def test_recover_fails_a_trial_whose_process_never_wrote_its_pid_once_the_grace_has_passed(
        tmp_path: Path, tracker: Tracker, tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"max_retries": 0, "heartbeat_grace": 60})
    study, _ = open_study(spec, storage_for(spec, f"sqlite:///{tmp_path}/optuna.db"))
    now = datetime.datetime.now()
    old = _ownerless_trial(study, now - datetime.timedelta(seconds=120))
    young = _ownerless_trial(study, now)  # its process may be about to write its pid
    recover_stale_trials(study, tracker)
    states = {t._trial_id: t for t in study.get_trials()}
    assert states[old].state == optuna.trial.TrialState.FAIL
    assert states[old].user_attrs[ATTR_FAIL_REASON] == "worker-died"
    assert states[young].state == optuna.trial.TrialState.RUNNING


def test_an_interrupted_process_ends_the_trials_it_started_even_without_their_pid(
        tmp_path: Path, tracker: Tracker, tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec()
    study, _ = open_study(spec, storage_for(spec, f"sqlite:///{tmp_path}/optuna.db"))
    mine = _ownerless_trial(study, datetime.datetime.now())
    other = _ownerless_trial(study, datetime.datetime.now())  # another process's, just made
    end_interrupted_trials(study, tracker, [os.getpid()], reason="disk-full", trial_ids=[mine])
    states = {t._trial_id: t for t in study.get_trials()}
    assert states[mine].state == optuna.trial.TrialState.FAIL and states[mine].user_attrs[ATTR_FAIL_REASON] == "disk-full"
    assert states[other].state == optuna.trial.TrialState.RUNNING


def test_reading_storage_builds_the_trials_optuna_builds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=url, directions=["minimize", "maximize"])
    dists = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
             "units": optuna.distributions.IntDistribution(8, 64, step=8),
             "opt": optuna.distributions.CategoricalDistribution(["adam", "sgd", None])}
    for i, (state, values) in enumerate([(optuna.trial.TrialState.COMPLETE, [0.5, float("inf")]),
                                         (optuna.trial.TrialState.COMPLETE, [float("-inf"), 2.0]),
                                         (optuna.trial.TrialState.FAIL, None),
                                         (optuna.trial.TrialState.PRUNED, None)]):
        study.add_trial(optuna.trial.create_trial(
            state=state, values=values, params={"lr": 0.01 * (i + 1), "units": 8 * (i + 1), "opt": [None, "sgd"][i % 2]},
            distributions=dists, user_attrs={"seed": i, "nested": {"a": [1, i]}}, system_attrs={"fixed_params": {"x": i}},
            intermediate_values={1: 0.7, 2: float("nan"), 3: float("inf")}))
    running = study.ask()  # no values, no end time
    running.suggest_float("lr", 1e-4, 1.0, log=True)
    read = optuna.load_study(study_name="s", storage=make_storage(url, create=False))
    plain = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url, skip_table_creation=True))
    assert type(read._storage._backend).__name__ == "ReadingStorage"  # type: ignore[attr-defined]

    def same(a: list[optuna.trial.FrozenTrial], b: list[optuna.trial.FrozenTrial]) -> bool:  # NaN != NaN: by repr
        return [(repr(t), t._trial_id) for t in a] == [(repr(t), t._trial_id) for t in b]

    assert same(read.get_trials(deepcopy=False), plain.get_trials(deepcopy=False))
    assert len(read.trials) == 5 and read.trials[1].values == [float("-inf"), 2.0]
    assert read.trials[0].intermediate_values[3] == float("inf") and read.trials[0].params["opt"] is None
    done = (optuna.trial.TrialState.COMPLETE,)
    assert same(read.get_trials(states=done), plain.get_trials(states=done))
    study.tell(running, [0.1, 3.0])  # read again: the trial that finished since is read as it is now
    assert read.trials[-1].state == optuna.trial.TrialState.COMPLETE and same(read.trials, plain.trials)


def test_reading_storage_falls_back_to_optunas_reader_where_its_tables_differ(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another Optuna version (a renamed column, another signature of the private reader): Optuna reads them."""
    from nnstudy.storage import ReadingStorage

    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)

    def renamed(self: ReadingStorage, *args: object, **kwargs: object) -> list[optuna.trial.FrozenTrial]:
        raise AttributeError("type object 'TrialModel' has no attribute '_datetime_start_utc'")

    monkeypatch.setattr(ReadingStorage, "_read_rows", renamed)
    read = optuna.load_study(study_name="s", storage=make_storage(url, create=False))
    assert [(t.number, t.value, t.params) for t in read.trials] == [(t.number, t.value, t.params) for t in study.trials]
