"""The objective's failure handling, with the training step replaced where a real failure cannot be forced."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

import nnstudy.objective as objective_module
from nnstudy.contract import trial_seed
from nnstudy.objective import is_out_of_memory
from nnstudy.runner import run_study
from nnstudy.spec import parse_spec


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
