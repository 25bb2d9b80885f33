"""Worker processes: placement plans and ``auto`` (unit), real studies on 1, 2 and 4 workers (end to end)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from nnstudy.cli import cli
from nnstudy.contract import TAG_THREADS, TAG_TRIAL
from nnstudy.errors import UserInputError
from nnstudy.workers import (
    AUTO_TRIALS_PER_WORKER,
    AUTO_WORKER_MEMORY,
    auto_workers,
    plan_workers,
    resolve_workers,
    TrialGrants,
    ask_for_trial,
)


def test_grants_hand_out_exactly_the_runs_trials_and_take_back_a_dead_workers() -> None:
    grants = TrialGrants(3)
    assert [grants.grant(1), grants.grant(2), grants.grant(1), grants.grant(2)] == [True, True, True, False]
    assert grants.granted == {1: 2, 2: 1} and not grants.open
    grants.give_back(1, ended=1)  # worker 1 died in its second trial: that trial is granted anew
    assert grants.open and grants.grant(3) and not grants.grant(2)
    grants.give_back(2, ended=1)  # died between trials: nothing to give back
    assert not grants.open
    late = TrialGrants(5, deadline=time.monotonic() - 1)  # the run's timeout has passed
    assert not late.open and not late.grant(1)


def test_a_worker_asks_the_parent_before_each_trial_over_its_pipe() -> None:
    import multiprocessing
    import threading

    parent, child = multiprocessing.Pipe()
    grants = TrialGrants(2)
    answered = []
    serve = threading.Thread(target=lambda: answered.extend(grants.answer(7, parent) for _ in range(3)))
    serve.start()
    assert [ask_for_trial(child) for _ in range(3)] == [True, True, False]
    serve.join()
    assert answered == [True, True, True] and grants.granted == {7: 2}
    child.close()
    assert grants.answer(7, parent) is False  # the worker's end is closed: it has ended
    assert ask_for_trial(parent) is False  # the other side is gone: no more trials


def test_one_worker_runs_in_process() -> None:
    (plan,) = plan_workers(1)
    assert plan.env == {}


def test_cpu_workers_share_the_cores() -> None:
    plans = plan_workers(4, cpu_count=8)
    assert len(plans) == 4
    assert all(p.env["TF_NUM_INTRAOP_THREADS"] == "2" and p.env["OMP_NUM_THREADS"] == "2" for p in plans)
    assert plan_workers(4, cpu_count=2)[0].env["TF_NUM_INTRAOP_THREADS"] == "1"


def test_gpu_slots_see_only_their_gpu() -> None:
    plans = plan_workers(gpus=["0", "1"], trials_per_gpu=2, available_gpus=["0", "1"], cpu_count=16)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "0", "1", "1"]
    assert all(p.env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for p in plans)
    assert all(p.env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for p in plans)
    assert plans[0].env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.45"
    assert plans[0].env["TF_NUM_INTRAOP_THREADS"] == "4"
    assert [p.device for p in plan_workers(gpus=["all"], available_gpus=["0", "1", "2"])] == \
        ["gpu:0", "gpu:1", "gpu:2"]


def test_no_gpu_falls_back_to_cpu_workers(capsys: pytest.CaptureFixture[str]) -> None:
    plans = plan_workers(2, gpus=["0"], available_gpus=[], cpu_count=2)
    assert [p.device for p in plans] == ["cpu", "cpu"]
    assert all(p.env["CUDA_VISIBLE_DEVICES"] == "" for p in plans)
    assert "no GPU found" in capsys.readouterr().err


def test_bad_worker_arguments_are_user_errors() -> None:
    with pytest.raises(UserInputError, match="--workers 0"):
        plan_workers(0)
    with pytest.raises(UserInputError, match="GPU 3 does not exist"):
        plan_workers(gpus=["3"], available_gpus=["0", "1"])


def test_auto_starts_one_worker_per_core_where_it_pays() -> None:
    memory = 64 * AUTO_WORKER_MEMORY
    many = 100 * AUTO_TRIALS_PER_WORKER
    assert auto_workers(2 * AUTO_TRIALS_PER_WORKER, cores=2, gpus=[], available_memory=memory) == 2
    assert auto_workers(many, cores=8, gpus=[], available_memory=memory) == 8
    # a worker costs seconds to start: each needs AUTO_TRIALS_PER_WORKER trials, and a short study stays in-process
    assert auto_workers(3 * AUTO_TRIALS_PER_WORKER, cores=8, gpus=[], available_memory=memory) == 3
    assert auto_workers(2 * AUTO_TRIALS_PER_WORKER - 1, cores=8, gpus=[], available_memory=memory) == 1
    assert auto_workers(many, cores=8, gpus=[], available_memory=3 * AUTO_WORKER_MEMORY + 1) == 3  # GiBs free
    assert auto_workers(many, cores=1, gpus=[], available_memory=memory) == 1  # one core: trials in this process
    assert auto_workers(many, cores=8, gpus=["0"], available_memory=memory) == 1  # a GPU: one process trains on it
    assert auto_workers(many, cores=8, gpus=[], available_memory=AUTO_WORKER_MEMORY // 2) == 1


def test_resolve_workers_takes_a_count_or_auto() -> None:
    assert resolve_workers(3, 10) == 3
    assert resolve_workers("4", 10) == 4
    assert 1 <= resolve_workers("auto", 100) <= len(os.sched_getaffinity(0))
    with pytest.raises(UserInputError, match="--workers lots: allowed: auto or an integer >= 1"):
        resolve_workers("lots", 10)


_FIXED = """
[study]
name = "fixed"
n_trials = 16
pruner = "none"
[data]
source = "pass_fail"
n_samples = 300
[train]
max_epochs = 2
[search]
learning_rate = { low = 1e-3, high = 0.2, log = true }
units = [8, 16]
dropout = { low = 0.0, high = 0.3 }
depth = 1
""" + "".join(f"""[[enqueue]]
learning_rate = {lr}
units = {units}
dropout = {dropout}
""" for lr, units, dropout in [(0.01 * (k + 1), (8, 16)[k % 2], (0.0, 0.1, 0.2, 0.3)[k % 4]) for k in range(16)])


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="auto starts workers only on a machine of 2+ cores")
def test_by_default_a_study_uses_every_core_with_the_values_of_one_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --workers: one worker per core (this suite sets NNSTUDY_WORKERS=1, unset here); each of the fixed
    (enqueued) trials gets the value one process gives it: its seed decides its curve, not its worker."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    values, threads = {}, {}
    for variant in ("auto", "1"):
        work = tmp_path / variant
        work.mkdir()
        monkeypatch.chdir(work)
        (work / "f.toml").write_text(_FIXED)
        if variant == "auto":
            monkeypatch.delenv("NNSTUDY_WORKERS", raising=False)
        else:
            monkeypatch.setenv("NNSTUDY_WORKERS", variant)
        result = CliRunner().invoke(cli, ["run", "f.toml", "--no-progress"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        trials = optuna.load_study(study_name="fixed", storage="sqlite:///mlruns/optuna.db").get_trials()
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 16
        expected = min(16 // AUTO_TRIALS_PER_WORKER, len(os.sched_getaffinity(0))) if variant == "auto" else 1
        assert len({t.user_attrs["pid"] for t in trials}) == expected
        values[variant] = {t.number: (t.params, t.value) for t in trials}
        client = MlflowClient("sqlite:///mlruns/mlflow.db")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        threads[variant] = {r.data.tags.get(TAG_THREADS) for r in runs if TAG_TRIAL in r.data.tags}
    assert threads["auto"] == {"1"}  # each worker trains with its share of the cores
    assert {n: p for n, (p, _) in values["auto"].items()} == {n: p for n, (p, _) in values["1"].items()}
    if threads["1"] == threads["auto"]:
        assert values["auto"] == values["1"]
    else:  # this process trains with every core: a reduction may sum in another order, in the last digits
        assert {n: v for n, (_, v) in values["auto"].items()} == pytest.approx(
            {n: v for n, (_, v) in values["1"].items()}, rel=1e-4)


def test_workers_started_for_bad_data_are_stopped_and_nothing_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers start before the data is read: bad data stops them (none left running) and no store exists."""
    import psutil

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    (tmp_path / "rows.csv").write_text("lectures,hours,passed\n")
    (tmp_path / "bad.toml").write_text('[data]\nsource = "rows.csv"\ntarget = "passed"\n')
    result = CliRunner().invoke(cli, ["run", "bad.toml", "--workers", "2", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "rows.csv" in result.output and "no rows" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "rows.csv"]
    # (spawned or forked: a child process started by this run and still running is a worker left behind)
    workers = [c for c in psutil.Process().children(recursive=True)
               if c.pid not in before and c.is_running() and c.status() != psutil.STATUS_ZOMBIE
               and "multiprocessing.resource_tracker" not in " ".join(c.cmdline())]  # Python's, kept for the process
    assert [" ".join(c.cmdline()) for c in workers] == []


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "n_trials"), [(4, 6)])
def test_workers_give_exact_counts_and_one_child_run_per_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               workers: int, n_trials: int) -> None:
    """Several processes on one SQLite store: exact count, unique numbers, one parent, no lock errors."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "w.toml").write_text(f"""
[study]
name = "two-workers"
n_trials = {n_trials}
pruner = "none"
[data]
source = "pass_fail"
n_samples = 300
[train]
max_epochs = 3
early_stopping_patience = 2
[search]
learning_rate = {{ low = 1e-3, high = 1e-1, log = true }}
units = [8, 16]
depth = 1
""")
    result = CliRunner().invoke(cli, ["run", "w.toml", "--workers", str(workers), "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "locked" not in result.output
    study = optuna.load_study(study_name="two-workers", storage="sqlite:///mlruns/optuna.db")
    trials = study.get_trials()
    assert len(trials) == n_trials and sorted(t.number for t in trials) == list(range(n_trials))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # really several processes; trials go to whichever worker asks first, so a worker that started last
    # may have found none left
    assert 2 <= len({t.user_attrs["pid"] for t in trials}) <= workers
    client = MlflowClient(f"sqlite:///{Path.cwd()}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("two-workers")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("nnstudy.role") == "study"]
    children = [r for r in runs if r.data.tags.get("nnstudy.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    # every worker process samples its trials' system metrics ([train].system_metrics is on by default)
    assert all("system/cpu_utilization_percentage" in r.data.metrics for r in children)


@pytest.mark.slow
def test_worker_processes_are_recycled_and_counts_stay_exact(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "r.toml").write_text("""
[study]
name = "recycled"
n_trials = 5
pruner = "none"
trials_per_process = 2
[data]
source = "pass_fail"
n_samples = 200
[train]
max_epochs = 2
[search]
units = [8, 16]
depth = 1
""")
    result = CliRunner().invoke(cli, ["run", "r.toml", "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="recycled", storage="sqlite:///mlruns/optuna.db").get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    pids = [t.user_attrs["pid"] for t in sorted(trials, key=lambda t: t.number)]
    assert len(set(pids)) == 3  # 2 + 2 + 1 trials, each batch in a fresh process
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[1] != pids[2]


_START_METHODS = """
import sys
from nnstudy import runtime
from nnstudy.workers import WorkerPlan, WorkerPool, plan_workers, start_method

cpu = plan_workers(2)[0]
gpu = WorkerPlan(name="gpu0", env={"CUDA_VISIBLE_DEVICES": "0"})
print("before-import", start_method(cpu, "tensorflow"))
runtime.configure("tensorflow", import_keras=True)
import keras  # noqa: F401
print("imported", start_method(cpu, "tensorflow"), start_method(gpu, "tensorflow"), start_method(cpu, "jax"))
pool = WorkerPool([cpu, cpu], "tensorflow")
procs = [pool.take(i, None)[0] for i in range(2)]  # no task: each forked worker closes its inherited ends and exits 0
for proc in procs:
    proc.join(120)
print("workers", [p._popen.method for p in procs], [p.exitcode for p in procs])
import tensorflow as tf
tf.constant(1.0) + 1.0  # TensorFlow's runtime started: its threads would not survive a fork
print("after-op", start_method(cpu, "tensorflow"))
"""


def test_workers_are_forked_only_while_tensorflow_is_imported_but_not_started(tmp_path: Path) -> None:
    """A CPU worker is forked from a parent that imported TensorFlow without running it (it starts with
    everything imported) and works; a GPU worker, another backend, a parent that never imported TensorFlow
    or one whose runtime has started gets a fresh (spawned) Python."""
    import subprocess
    import sys

    script = tmp_path / "methods.py"
    script.write_text(_START_METHODS)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["before-import"] == "spawn"
    assert lines["imported"] == "fork spawn spawn"
    assert lines["workers"] == "['fork', 'fork'] [0, 0]"
    assert lines["after-op"] == "spawn"
