"""Faults during a study, with real processes and real signals: SIGKILL then resume, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

SPEC = """
[study]
name = "faulty"
n_trials = 2
pruner = "none"
seed = 5

[data]
source = "pass_fail"
n_samples = 400

[train]
max_epochs = {epochs}
early_stopping_patience = {epochs}

[search]
learning_rate = {{ low = 1e-3, high = 1e-2, log = true }}
batch_size = 8
depth = 1
units = 8
"""

NNSTUDY = str(Path(sys.executable).parent / "nnstudy")
STORAGE = "sqlite:///mlruns/optuna.db"


def _start(workdir: Path, spec: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([NNSTUDY, "run", str(spec), "--no-progress"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_running_trial(workdir: Path, proc: subprocess.Popen[str], *, after_complete: int,
                            timeout: float = 240) -> optuna.trial.FrozenTrial:
    """Poll the real storage until a trial is RUNNING with its MLflow run open (and some epochs logged)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        if (workdir / "mlruns" / "mlflow.db").exists():  # created after the Optuna schema: no init race
            try:
                study = optuna.load_study(study_name="faulty", storage=f"sqlite:///{workdir}/mlruns/optuna.db")
            except KeyError:
                study = None
            if study is not None:
                trials = study.get_trials(deepcopy=False)
                done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
                running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                           and "mlflow_run_id" in t.user_attrs and t.intermediate_values]
                if len(done) >= after_complete and running:
                    return running[0]
        time.sleep(0.3)
    raise AssertionError("no running trial appeared")


def _no_running_left(workdir: Path) -> tuple[optuna.Study, MlflowClient]:
    study = optuna.load_study(study_name="faulty", storage=f"sqlite:///{workdir}/mlruns/optuna.db")
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    client = MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("faulty")
    assert experiment is not None
    running = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
    assert running == []
    return study, client


def test_sigkill_mid_trial_then_rerun_repairs_records_and_continues(tmp_path: Path) -> None:
    spec = tmp_path / "faulty.toml"
    spec.write_text(SPEC.format(epochs=400))
    proc = _start(tmp_path, spec)
    victim = _wait_for_running_trial(tmp_path, proc, after_complete=0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    spec.write_text(SPEC.format(epochs=3))  # the resumed study trains fast; same study name and storage
    rerun = subprocess.run([NNSTUDY, "run", str(spec), "--no-progress"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env={k: v for k, v in os.environ.items()
                                                        if k != "MLFLOW_TRACKING_URI"})
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    study, client = _no_running_left(tmp_path)
    killed = study.trials[victim.number]
    assert killed.state == optuna.trial.TrialState.FAIL
    assert killed.user_attrs["fail_reason"] == "worker-died"
    assert killed.intermediate_values  # the epochs it reported are still there
    run = client.get_run(victim.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert client.get_metric_history(run.info.run_id, "loss")  # curves logged before the kill are kept
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2  # the re-run added its trials
    (retry,) = [t for t in complete if t.user_attrs.get("retry_of") == victim.number]  # re-ran the dead trial
    assert retry.params == victim.params and retry.user_attrs["seed"] == victim.user_attrs["seed"]
    retry_run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert retry_run.data.tags["nnstudy.retry_of_run"] == run.info.run_id
    assert client.get_run(run.info.run_id).data.tags["nnstudy.retried_by"] == retry_run.info.run_id
    assert [t.number for t in study.trials] == list(range(len(study.trials)))


def test_sigterm_stops_cleanly_and_says_how_to_resume(tmp_path: Path) -> None:
    spec = tmp_path / "faulty.toml"
    spec.write_text(SPEC.format(epochs=400))
    proc = _start(tmp_path, spec)
    victim = _wait_for_running_trial(tmp_path, proc, after_complete=0)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Run the same command again to resume" in out
    assert "Traceback" not in out
    study, client = _no_running_left(tmp_path)
    trial = study.trials[victim.number]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "interrupted"
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    assert client.get_run(parent_id).info.status == "KILLED"


def test_two_runs_at_once_both_contribute(tmp_path: Path) -> None:
    spec = tmp_path / "faulty.toml"
    spec.write_text(SPEC.format(epochs=3))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [subprocess.Popen([NNSTUDY, "run", str(spec), "--no-progress"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0][-3000:] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    study, client = _no_running_left(tmp_path)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    experiment = client.get_experiment_by_name("faulty")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len([r for r in runs if r.data.tags.get("nnstudy.role") == "study"]) == 1
    assert sorted(r.info.run_id for r in runs if r.data.tags.get("nnstudy.role") == "trial") == \
        sorted(t.user_attrs["mlflow_run_id"] for t in trials)


def test_read_only_store_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "faulty.toml"
    spec.write_text(SPEC.format(epochs=3))
    result = subprocess.run([NNSTUDY, "run", str(spec), "--no-progress", "--storage", "sqlite:////proc/nnstudy/optuna.db",
                             "--tracking-uri", "sqlite:////proc/nnstudy/mlflow.db"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "/proc/nnstudy" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faulty.toml"]
