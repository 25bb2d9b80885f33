"""The objective's failure handling, with the training step replaced where a real failure cannot be forced."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import optuna
import pytest
from mlflow.tracking import MlflowClient

import nnstudy.objective as objective_module
from nnstudy.contract import trial_seed
from nnstudy.objective import is_out_of_memory
from nnstudy.context import StudyContext
from nnstudy.runner import run_study
from nnstudy.spec import StudySpec, parse_spec
from nnstudy.tracking import Tracker


def test_trial_seed_depends_on_study_seed_and_number() -> None:
    assert trial_seed(42, 3) == trial_seed(42, 3)
    assert len({trial_seed(42, n) for n in range(100)}) == 100
    assert trial_seed(1, 0) != trial_seed(2, 0)


def test_out_of_memory_errors_are_recognised() -> None:
    import tensorflow as tf

    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(ValueError("shapes do not match"))


@pytest.mark.slow
def test_out_of_memory_fails_the_trial_and_the_sampler_avoids_bigger_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    real_train = objective_module.train

    def train_with_small_memory(data, params, *args, **kwargs):  # type: ignore[no-untyped-def]
        if params["units"] >= 512:  # what the framework raises when a layer does not fit
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[2,1024]")
        return real_train(data, params, *args, **kwargs)

    monkeypatch.setattr(objective_module, "train", train_with_small_memory)
    monkeypatch.chdir(tmp_path)
    spec = parse_spec({
        "study": {"name": "oom", "n_trials": 3, "pruner": "none"},
        "data": {"source": "pass_fail", "n_samples": 200},
        "train": {"max_epochs": 2, "early_stopping_patience": 2},
        "search": {"units": [8, 1024, 2048], "depth": 1},
        "enqueue": [{"units": 1024}, {"units": 8}, {"units": 2048}],
    })
    outcome = run_study(spec, show_progress=False)
    first, second, third = outcome.study.get_trials()
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["fail_reason"] == "out-of-memory"
    assert second.state == optuna.trial.TrialState.COMPLETE  # the next trial runs normally
    assert third.state == optuna.trial.TrialState.PRUNED  # bigger than one that ran out: not trained
    assert third.user_attrs["fail_reason"] == "out-of-memory-predicted"
    assert "stopped_epoch" not in third.user_attrs
    client = MlflowClient(f"sqlite:///{Path.cwd()}/mlruns/mlflow.db")
    run = client.get_run(first.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["nnstudy.fail_reason"] == "out-of-memory"
    skipped = client.get_run(third.user_attrs["mlflow_run_id"])
    assert skipped.info.status == "KILLED" and skipped.data.tags["nnstudy.larger_than_trial"] == "0"


def test_a_trial_run_has_system_metrics_unless_the_spec_turns_them_off(
        tracker: Tracker, tiny_spec: Callable[..., StudySpec]) -> None:
    import threading

    from nnstudy.data import prepare
    from nnstudy.objective import Objective
    from nnstudy.recorder import RunTarget

    study = optuna.create_study()
    for on in (True, False):
        spec = tiny_spec(train={"system_metrics": on, "system_metrics_interval": 1})
        objective = Objective(spec, prepare(spec), RunTarget(tracker, tracker.experiment("tiny"), None, "tiny"))
        objective(study.ask())
        assert objective.last_recorder is not None and objective.last_recorder.run_id is not None
        run = tracker.client.get_run(objective.last_recorder.run_id)
        system = {k for k in run.data.metrics if k.startswith("system/")}
        if on:
            assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
        else:
            assert not system
        assert "loss" in run.data.metrics and run.info.status == "FINISHED"
        assert not [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]  # stopped with the run


# --------------------------------------------------------------------------- resuming a dead worker's trial


class _Died(BaseException):
    """Stands for the worker killed mid-trial (the real SIGKILL: tests/test_faults.py)."""


def test_a_checkpoint_outlives_a_change_of_the_settings_that_do_not_change_the_curve(
        tiny_spec: Callable[..., StudySpec]) -> None:
    """Turning system metrics off (or checkpoint_every) between a killed run and its re-run still resumes."""
    from nnstudy.objective import curve_settings

    base = tiny_spec(train={"max_epochs": 6, "checkpoint_every": 2})
    quieter = tiny_spec(train={"max_epochs": 6, "checkpoint_every": 3, "system_metrics": False,
                               "system_metrics_interval": 5})
    assert curve_settings(base) == curve_settings(quieter)
    assert curve_settings(base) != curve_settings(tiny_spec(train={"max_epochs": 7, "checkpoint_every": 2}))


def _dead_trial_with_checkpoint(tmp_path: Path, spec: StudySpec, die_at: int) -> tuple[StudyContext, optuna.Study, Path]:
    """Run trial 0 until epoch ``die_at`` and leave what a killed worker leaves: the trial RUNNING under a dead
    pid and its last checkpoint on disk. Returns the study context, the study and the checkpoint's path."""
    import shutil
    import subprocess
    import sys

    from nnstudy.context import open_context
    from nnstudy.contract import ATTR_PID
    from nnstudy.objective import Objective
    from nnstudy.store import resolve_store

    store = resolve_store(directory=tmp_path / "mlruns")
    store.prepare()
    ctx = open_context(spec, store)
    folder = store.checkpoint_folder(spec.name)
    left = tmp_path / "left.npz"

    def die(number: int, epoch: int, logs: dict[str, float]) -> None:
        if epoch == die_at:
            shutil.copy(folder / "trial-00000.npz", left)  # the file as the kill leaves it
            raise _Died

    objective = Objective(spec, ctx.data, ctx.runs, progress=die, checkpoints=folder)
    trial = ctx.study.ask()
    with pytest.raises(_Died):
        objective(trial)
    shutil.move(left, folder / "trial-00000.npz")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ctx.study._storage.set_trial_user_attr(trial._trial_id, ATTR_PID, int(dead.stdout))
    return ctx, ctx.study, folder / "trial-00000.npz"


@pytest.mark.slow
def test_the_retry_of_a_dead_trial_resumes_from_its_checkpoint_and_reproduces_exactly(
        tmp_path: Path, tiny_spec: Callable[..., StudySpec], capsys: pytest.CaptureFixture[str]) -> None:
    from nnstudy.api import open_study
    from nnstudy.contract import ATTR_RESUMED_FROM
    from nnstudy.reproduction import reproduce
    from nnstudy.storage import recover_stale_trials

    spec = tiny_spec(study={"name": "resume"}, train={"max_epochs": 6, "early_stopping_patience": 6,
                                                     "checkpoint_every": 2},
                     search={"learning_rate": 0.01, "optimizer": "adam", "depth": 1, "units": 8, "dropout": 0.2})
    ctx, study, checkpoint = _dead_trial_with_checkpoint(tmp_path, spec, die_at=5)
    recover_stale_trials(study, ctx.tracker)
    ctx.optimize(1, timeout=None)
    retry = study.trials[1]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.user_attrs[ATTR_RESUMED_FROM] == 4
    assert "trial 1 (a re-run of trial 0) resumes from its checkpoint at epoch 4 of 6" in capsys.readouterr().err
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4, 5, 6] and not checkpoint.exists()
    records = open_study("resume", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db",
                         tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert reproduce(records, trial_number=1).max_abs_diff == 0.0  # trained from epoch 1 without a stop


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_ignored_with_a_warning_and_the_retry_starts_from_epoch_1(
        tmp_path: Path, tiny_spec: Callable[..., StudySpec], capsys: pytest.CaptureFixture[str]) -> None:
    """(A foreign one -- another configuration, seed or data set -- is refused the same way: test_training.py.)"""
    from nnstudy.contract import ATTR_RESUMED_FROM
    from nnstudy.storage import recover_stale_trials

    spec = tiny_spec(study={"name": "resume"}, train={"max_epochs": 4, "early_stopping_patience": 4,
                                                     "checkpoint_every": 2}, search={"learning_rate": 0.01})
    ctx, study, checkpoint = _dead_trial_with_checkpoint(tmp_path, spec, die_at=3)
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])  # cut short (a disk that failed, say)
    recover_stale_trials(study, ctx.tracker)
    ctx.optimize(1, timeout=None)
    retry = study.trials[1]
    err = capsys.readouterr().err
    assert f"warning: ignoring the checkpoint {checkpoint} (unreadable" in err
    assert "trial 1 (a re-run of trial 0) starts from epoch 1" in err
    assert retry.state == optuna.trial.TrialState.COMPLETE and ATTR_RESUMED_FROM not in retry.user_attrs
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4] and not checkpoint.exists()
