"""MLflow tracking server stopped mid-study: training goes on, nothing is lost, `nnstudy sync` writes it later."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import study_being_run
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SPEC = """
[study]
name = "outage"
n_trials = 3
pruner = "none"
seed = 9

[data]
source = "pass_fail"
n_samples = 300

[train]
max_epochs = 40
early_stopping_patience = 40

[search]
learning_rate = { low = 1e-3, high = 1e-2, log = true }
batch_size = 8
depth = 1
units = 8
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(root: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root}/server.db",
         "--artifacts-destination", f"{root}/server-artifacts", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=root, env=env, start_new_session=True,
        stdout=open(root / "server.log", "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            time.sleep(0.5)
    raise AssertionError("the MLflow server did not start")


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def test_server_down_mid_study_then_sync_writes_everything(tmp_path: Path) -> None:
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    (tmp_path / "outage.toml").write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # fail fast while the server is down
    env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"
    study_proc = subprocess.Popen([str(BIN / "nnstudy"), "run", "outage.toml", "--tracking-uri", uri, "--no-progress"],
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until the first trial has logged a few epochs
            if (tmp_path / "mlruns" / "optuna.db").exists() and study_proc.poll() is None:
                study = study_being_run(storage, "outage")
                trials = [] if study is None else study.get_trials()
                if trials and len(trials[0].intermediate_values) >= 3:
                    break
            assert study_proc.poll() is None, study_proc.communicate()[0]
            time.sleep(0.3)
        _stop_server(server)  # the tracking server dies mid-trial
        out, _ = study_proc.communicate(timeout=300)
    finally:
        _stop_server(server)
    assert study_proc.returncode == 0, out
    assert "nnstudy sync" in out
    study = optuna.load_study(study_name="outage", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3  # training went on
    assert all("mlflow_pending" in t.user_attrs for t in study.trials)  # and every record was kept

    server = _start_server(tmp_path, port)  # the server is back
    try:
        synced = subprocess.run([str(BIN / "nnstudy"), "sync", "--tracking-uri", uri], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=180)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert "wrote 3 trial record(s)" in synced.stdout
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("outage")
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id])
        children = {r.data.tags["nnstudy.trial_number"]: r for r in runs if r.data.tags.get("nnstudy.role") == "trial"}
        parents = [r for r in runs if r.data.tags.get("nnstudy.role") == "study"]
        assert sorted(children) == ["0", "1", "2"] and len(parents) == 1
        assert parents[0].info.status == "FINISHED"
        for trial in study.trials:
            run = children[str(trial.number)]
            assert run.info.status == "FINISHED"
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss"))
            assert steps == list(range(1, trial.user_attrs["stopped_epoch"] + 1))  # the whole curve, once
            assert run.data.metrics["best_val_loss"] == pytest.approx(trial.value)
        again = subprocess.run([str(BIN / "nnstudy"), "sync", "--tracking-uri", uri], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=180)
        assert "wrote 0 trial record(s)" in again.stdout  # repeating is safe
    finally:
        _stop_server(server)
