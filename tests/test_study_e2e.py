"""End-to-end: tiny real studies through the CLI, read back through MlflowClient and Optuna's own CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from nnstudy.cli import cli

pytestmark = pytest.mark.slow



def _write(tmp: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["run", *args, "--no-progress"], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _child_runs(client: MlflowClient, experiment_id: str) -> list:
    runs = client.search_runs([experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("nnstudy.role") == "trial"]


def test_study_runs_records_and_resumes(workdir: Path, e2e_spec: Callable[..., Path]) -> None:
    spec = e2e_spec("tiny")
    code, out = _run(str(spec))
    assert code == 0, out
    assert "mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db" in out

    client = MlflowClient(f"sqlite:///{Path.cwd()}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("nnstudy.role") == "study"]
    children = _child_runs(client, experiment.experiment_id)
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert "best_value" in parent.data.metrics

    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in trials}
    for run in children:
        trial = by_run[run.info.run_id]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["nnstudy.trial_number"] == str(trial.number)
        assert run.data.tags["nnstudy.study"] == "tiny"
        assert run.info.status == "FINISHED"
        for name, value in trial.params.items():  # every searched parameter is on the run
            assert run.data.params[name] == (repr(value) if isinstance(value, float) else str(value))
        assert run.data.params["dropout"] == "0.0" and run.data.params["activation"] == "relu"  # fixed ones too
        val_loss = client.get_metric_history(run.info.run_id, "val_loss")
        loss = client.get_metric_history(run.info.run_id, "loss")
        steps = sorted(m.step for m in val_loss)
        assert steps == list(range(1, len(steps) + 1)) and len(loss) == len(val_loss)
        best_epoch = int(run.data.metrics["best_epoch"])
        assert best_epoch == trial.user_attrs["best_epoch"]
        by_step = {m.step: m.value for m in val_loss}
        assert by_step[best_epoch] == pytest.approx(trial.value)  # value = metric at the best epoch
        assert by_step[best_epoch] == min(by_step.values())
        assert run.data.metrics["stopped_epoch"] == len(steps)
        assert "test_loss" in run.data.metrics and "test_accuracy" in run.data.metrics
        assert run.data.tags["nnstudy.device"]
        assert "nnstudy.version.keras" in run.data.tags

    # the study report is on the parent run, with the link to the best child
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    for name in ("trials.csv", "best_params.json", "optimization_history.png", "learning_curves.html"):
        assert f"report/{name}" in artifacts
    best = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db").best_trial
    assert parent.data.tags["nnstudy.best_run_id"] == best.user_attrs["mlflow_run_id"]
    for trial in trials:  # every finished trial carries its diagnosis, in both stores
        label = trial.user_attrs["diagnosis"]
        assert label in ("diverged", "too-slow", "overfitting", "underfitting", "ok")
        assert client.get_run(trial.user_attrs["mlflow_run_id"]).data.tags["nnstudy.diagnosis"] == label

    # trials and report commands
    listed = CliRunner().invoke(cli, ["trials", "--format", "json"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [r["number"] for r in rows][0] == best.number and len(rows) == 3
    assert {"learning_rate", "best_epoch", "stopped_epoch", "diagnosis", "mlflow_run_id"} <= set(rows[0])
    made = CliRunner().invoke(cli, ["report", "--out", "rep"], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    assert (workdir / "rep" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"

    # Optuna's own CLI reads the storage we wrote
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "optuna"), "trials", "--storage", "sqlite:///mlruns/optuna.db",
         "--study-name", "tiny", "-f", "json"], capture_output=True, text=True, check=True)
    assert len(json.loads(listed.stdout)) == 3

    # running again adds trials to the same study, under the same parent run
    code, out = _run(str(spec), "--n-trials", "2")
    assert code == 0, out
    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    assert [t.number for t in study.get_trials()] == [0, 1, 2, 3, 4]
    runs = client.search_runs([experiment.experiment_id])
    assert len([r for r in runs if r.data.tags.get("nnstudy.role") == "study"]) == 1
    assert len(_child_runs(client, experiment.experiment_id)) == 5
    assert {t.user_attrs["mlflow_run_id"] for t in study.get_trials()} == {
        r.info.run_id for r in _child_runs(client, experiment.experiment_id)}


def test_diverging_learning_rate_fails_trial_and_study_goes_on(workdir: Path) -> None:
    spec = _write(workdir, """
[study]
name = "diverge"
metric = "val_loss"
n_trials = 2
pruner = "none"

[data]
source = "grades"
n_samples = 200

[train]
max_epochs = 5
early_stopping_patience = 5

[search]
learning_rate = [1e-3, 1e4]
optimizer = "sgd"
depth = 2
units = 16

[[enqueue]]
learning_rate = 1e4

[[enqueue]]
learning_rate = 1e-3
""")
    code, out = _run(str(spec))
    assert code == 0, out
    study = optuna.load_study(study_name="diverge", storage="sqlite:///mlruns/optuna.db")
    first, second = study.get_trials()
    assert first.state == optuna.trial.TrialState.FAIL
    assert first.user_attrs["fail_reason"] == "diverged"
    assert second.state == optuna.trial.TrialState.COMPLETE
    assert study.best_trial.number == 1 and study.best_value < 1e6
    client = MlflowClient(f"sqlite:///{Path.cwd()}/mlruns/mlflow.db")
    run = client.get_run(first.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["nnstudy.fail_reason"] == "diverged"


def test_enqueue_file_is_tried_first(workdir: Path, e2e_spec: Callable[..., Path]) -> None:
    spec = e2e_spec("queued", study={"n_trials": 1})
    queue = workdir / "queue.json"
    queue.write_text(json.dumps([{"learning_rate": 0.05, "optimizer": "rmsprop", "units": 16}]))
    code, out = _run(str(spec), "--enqueue", str(queue))
    assert code == 0, out
    trial = optuna.load_study(study_name="queued", storage="sqlite:///mlruns/optuna.db").trials[0]
    assert trial.params["learning_rate"] == 0.05 and trial.params["optimizer"] == "rmsprop"
    assert trial.params["units"] == 16


def test_a_pruned_trial_is_killed_in_mlflow_and_pruned_in_optuna(workdir: Path, e2e_spec: Callable[..., Path]) -> None:
    """A good configuration first, then one that learns nothing: the median pruner (after 1 trial, from
    epoch 1: the [study] pruner settings) stops the second at its first epoch."""
    spec = e2e_spec("pruned", study={"n_trials": 2, "pruner": "median", "pruner_startup_trials": 1,
                                     "pruner_warmup_epochs": 0},
                    search={"learning_rate": {"low": 1e-7, "high": 0.1, "log": True}})
    queue = workdir / "queue.json"
    queue.write_text(json.dumps([{"learning_rate": 0.05, "optimizer": "adam"},
                                 {"learning_rate": 1e-7, "optimizer": "rmsprop", "units": 8, "depth": 1,
                                  "batch_size": 64}]))
    code, out = _run(str(spec), "--enqueue", str(queue))
    assert code == 0, out
    first, second = optuna.load_study(study_name="pruned", storage="sqlite:///mlruns/optuna.db").trials
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert second.state == optuna.trial.TrialState.PRUNED and second.user_attrs["pruned_at"] == 1
    run = MlflowClient(f"sqlite:///{Path.cwd()}/mlruns/mlflow.db").get_run(second.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["nnstudy.pruned"] == "true"
    assert run.data.metrics["pruned_at_epoch"] == 1
