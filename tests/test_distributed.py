"""The multi-machine topology without Docker: real PostgreSQL, a real ``mlflow server``, real workers.

One PostgreSQL server holds two fresh databases (Optuna's and MLflow's: both keep an
``alembic_version`` table, so they never share one). A real ``mlflow server`` (proxied artifacts,
``--serve-artifacts --artifacts-destination file://...``, as in the Docker setup) runs on a free
local port in its own process group. Each ``nnstudy run`` worker runs in its own empty working
directory, as if on its own machine: everything it records goes through ``--storage
postgresql://...`` and ``--tracking-uri http://...``.

* three workers started at the same moment on a cold store: one study, one parent run, exact
  trial counts and one consistent child run per trial;
* a worker SIGKILLed mid-trial: the next ``nnstudy run`` on the same host repairs both stores and
  re-runs the dead trial's parameters with its seed;
* races of the parent run's tag writes and of the sampler seeds, driven deterministically.

Skipped (with the reason) only when PostgreSQL is not reachable on 127.0.0.1:5432.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

PG_HOST, PG_PORT, PG_USER, PG_ADMIN_DB = "127.0.0.1", 5432, "postgres", "test"
BIN = Path(sys.executable).parent
NNSTUDY = str(BIN / "nnstudy")
MLFLOW = str(BIN / "mlflow")
HEALTH_TIMEOUT_S = 120.0

SPEC = """
[study]
name = "{name}"
n_trials = {n_trials}
pruner = "none"
seed = {seed}

[data]
source = "pass_fail"
n_samples = {n_samples}

[train]
max_epochs = {epochs}
early_stopping_patience = {patience}

[search]
learning_rate = {{ low = 1e-3, high = 1e-1, log = true }}
batch_size = {batch_size}
depth = 1
units = [8, 16]
"""


def _spec(name: str, *, n_trials: int = 2, seed: int = 7, n_samples: int = 300, epochs: int = 3,
          patience: int = 2, batch_size: str = "[16, 32]") -> str:
    return SPEC.format(name=name, n_trials=n_trials, seed=seed, n_samples=n_samples, epochs=epochs,
                       patience=patience, batch_size=batch_size)


def _pg_url(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def _text(value: Any) -> str:
    """How nnstudy writes a parameter into MLflow (floats as repr)."""
    return repr(value) if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class Databases:
    optuna_url: str
    mlflow_url: str
    optuna_engine: sqlalchemy.engine.Engine  # to watch the Optuna tables without creating them


def _admin_engine() -> sqlalchemy.engine.Engine:
    # the driver SQLAlchemy picks for postgresql:// is the one nnstudy, Optuna and MLflow use
    return sqlalchemy.create_engine(_pg_url(PG_ADMIN_DB), isolation_level="AUTOCOMMIT",
                                    connect_args={"connect_timeout": 5}, poolclass=sqlalchemy.pool.NullPool)


def _drop_database(admin: sqlalchemy.engine.Engine, name: str) -> None:
    for attempt in range(10):
        try:
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                             "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": name})
                conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
            return
        except sqlalchemy.exc.OperationalError:  # a backend still closing ("being accessed by other users")
            if attempt == 9:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="module")
def databases() -> Iterator[Databases]:
    """Two fresh databases (Optuna's, MLflow's) in the real PostgreSQL; dropped afterwards."""
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.OperationalError as err:
        admin.dispose()
        first = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        pytest.skip(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({first})")
    token = uuid.uuid4().hex[:10]
    names = (f"nnstudy_optuna_{token}", f"nnstudy_mlflow_{token}")
    created: list[str] = []
    optuna_engine = None
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
                created.append(name)
        optuna_engine = sqlalchemy.create_engine(_pg_url(names[0]), poolclass=sqlalchemy.pool.NullPool)
        yield Databases(_pg_url(names[0]), _pg_url(names[1]), optuna_engine)
    finally:
        if optuna_engine is not None:
            optuna_engine.dispose()
        for name in created:
            _drop_database(admin, name)
        admin.dispose()


# --------------------------------------------------------------------------- MLflow tracking server


@dataclass(frozen=True)
class Server:
    url: str
    artifacts: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of process group ``pgid``, as ``ps`` lines."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True,
                         check=True).stdout
    members = []
    for line in out.splitlines():
        fields = line.split(None, 3)
        if len(fields) >= 3 and fields[1] == str(pgid) and not fields[2].startswith("Z"):
            members.append(line.strip())
    return members


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """SIGTERM the process group led by ``proc`` (start_new_session=True), SIGKILL what remains."""
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader
        if proc.returncode is not None and not _group_members(pgid):
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        pass
    deadline = time.monotonic() + 10
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@pytest.fixture(scope="module")
def server(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``mlflow server`` on the MLflow database, proxying artifacts to a local folder (as the
    Docker setup does), in its own process group; stopped, group and all, afterwards."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    artifacts.mkdir()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for name in ("MLFLOW_TRACKING_URI", "PYTEST_CURRENT_TEST"):  # the latter turns on MLflow's test-only checks
        env.pop(name, None)
    for attempt in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = root / f"server-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [MLFLOW, "server", "--backend-store-uri", databases.mlflow_url,
                 "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(),
                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        # /health alone could be answered by someone else's server on a reused port: also wait
        # for our own uvicorn to say it bound the port
        bound = f"Uvicorn running on {url}"
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        ok = False
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text(errors="replace")
            if "address already in use" in text:
                break
            if bound in text and _healthy(url):
                ok = True
                break
            time.sleep(0.5)
        if ok:
            break
        _stop_group(proc)
        text = log.read_text(errors="replace")
        if "address already in use" not in text:
            pytest.fail(f"mlflow server not healthy within {HEALTH_TIMEOUT_S:.0f} s "
                        f"(exit code {proc.returncode}):\n{text[-4000:]}")
    else:
        pytest.fail("mlflow server: no free port after 3 tries")
    try:
        yield Server(url=url, artifacts=artifacts, log=log)
    finally:
        _stop_group(proc)
        left = _group_members(proc.pid)
        assert not left, "processes of the mlflow server survived SIGKILL:\n" + "\n".join(left)


# --------------------------------------------------------------------------- workers


def _worker_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in ("MLFLOW_TRACKING_URI", "PYTEST_CURRENT_TEST"):
        env.pop(name, None)
    return env


def _start_worker(machine: Path, spec: Path, databases: Databases, server: Server) -> subprocess.Popen[bytes]:
    """``nnstudy run`` in ``machine`` (an otherwise empty folder: its own 'machine')."""
    with (machine / "worker.log").open("ab") as out:
        return subprocess.Popen(
            [NNSTUDY, "run", str(spec), "--storage", databases.optuna_url, "--tracking-uri", server.url,
             "--no-progress"], cwd=machine, env=_worker_env(), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)


def _log(machine: Path) -> str:
    path = machine / "worker.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


def _kill_leftovers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)


def _study_exists(databases: Databases, name: str) -> bool:
    """Whether a worker has created study ``name`` (read directly: never creates Optuna's schema,
    so the poller takes no part in the workers' schema-creation race)."""
    try:
        with databases.optuna_engine.connect() as conn:
            return conn.execute(sqlalchemy.text("SELECT 1 FROM studies WHERE study_name = :n"),
                                {"n": name}).first() is not None
    except sqlalchemy.exc.ProgrammingError:  # no schema yet
        return False


def _experiment_runs(client: MlflowClient, name: str) -> tuple[Any, list[Any], list[Any]]:
    """The study's experiment, its active parent runs and its active trial runs."""
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no MLflow experiment {name!r}"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)  # active runs only
    parents = [r for r in runs if r.data.tags.get("nnstudy.role") == "study"]
    children = [r for r in runs if r.data.tags.get("nnstudy.role") == "trial"]
    return experiment, parents, children


def _assert_nothing_running(study: optuna.Study, client: MlflowClient, experiment_id: str) -> None:
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,)), "a RUNNING Optuna trial is left"
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    assert [r.info.run_id for r in running] == [], "a RUNNING MLflow run is left"


# --------------------------------------------------------------------------- A: three workers at once


def test_three_workers_started_together_share_one_study_and_one_parent_run(
        databases: Databases, server: Server, tmp_path: Path) -> None:
    name = "dist-three"
    machines = [tmp_path / f"machine-{i}" for i in range(3)]
    specs = []
    for machine in machines:
        machine.mkdir()
        spec = machine / "study.toml"  # each machine has its own copy of the spec
        spec.write_text(_spec(name, n_trials=2))
        specs.append(spec)

    procs: list[subprocess.Popen[bytes]] = []
    try:
        for machine, spec in zip(machines, specs):  # as close together as possible
            procs.append(_start_worker(machine, spec, databases, server))
        for proc in procs:
            proc.wait(timeout=240)
    finally:
        _kill_leftovers(procs)
    for proc, machine in zip(procs, machines):
        assert proc.returncode == 0, f"worker in {machine.name} exited {proc.returncode}:\n{_log(machine)}"

    # nothing was written on the 'machines' themselves: both stores are remote
    assert [m.name for m in machines if (m / "mlruns").exists()] == []

    study = optuna.load_study(study_name=name, storage=databases.optuna_url)
    trials = study.get_trials()
    assert len(trials) == 6
    assert sorted(t.number for t in trials) == list(range(6))
    assert [t.number for t in trials if t.state != optuna.trial.TrialState.COMPLETE] == []
    assert {t.user_attrs["pid"] for t in trials} == {p.pid for p in procs}  # really three processes
    assert all(t.user_attrs["host"] == platform.node() for t in trials)

    client = MlflowClient(tracking_uri=server.url)
    experiments = [e for e in client.search_experiments(filter_string=f"name = '{name}'")]
    assert len(experiments) == 1
    experiment, parents, children = _experiment_runs(client, name)
    assert len(parents) == 1, f"{len(parents)} active parent runs: {[p.info.run_id for p in parents]}"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.info.lifecycle_stage == "active"
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert study.user_attrs["mlflow_experiment_id"] == experiment.experiment_id
    assert parent.data.tags["nnstudy.best_trial"] == str(study.best_trial.number)
    assert parent.data.tags["nnstudy.best_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]

    metric = "best_val_loss"
    by_run = {r.info.run_id: r for r in children}
    assert len(by_run) == len(children) == 6  # one child run per trial, no orphans
    assert sorted(t.user_attrs["mlflow_run_id"] for t in trials) == sorted(by_run)
    for trial in trials:
        run = by_run[trial.user_attrs["mlflow_run_id"]]
        where = f"trial {trial.number} (run {run.info.run_id})"
        assert run.info.status == "FINISHED", where
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, where
        assert run.data.tags["nnstudy.trial_number"] == str(trial.number), where
        assert run.data.tags["nnstudy.study"] == name, where
        assert {k: run.data.params.get(k) for k in trial.params} == \
            {k: _text(v) for k, v in trial.params.items()}, where
        assert run.data.params["seed"] == str(trial.user_attrs["seed"]), where
        assert run.data.metrics[metric] == trial.value, where

    # artifacts went through the server (proxied) into its artifact folder
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:"), parent.info.artifact_uri
    study_files = {f.path for f in client.list_artifacts(parent.info.run_id, "study")}
    assert "study/spec.json" in study_files, study_files
    local = client.download_artifacts(parent.info.run_id, "study/spec.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["study"]["name"] == name
    assert list(server.artifacts.rglob("study/spec.json")), "spec.json is not in the server's artifact folder"
    assert "report/trials.csv" in {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    _assert_nothing_running(study, client, experiment.experiment_id)


# --------------------------------------------------------------------------- B: SIGKILL mid-trial


def _wait_for_running_trial(databases: Databases, name: str, proc: subprocess.Popen[bytes], machine: Path,
                            timeout: float = 180) -> optuna.trial.FrozenTrial:
    """Poll the real storage until a trial is RUNNING with its MLflow run and some epochs reported."""
    deadline = time.monotonic() + timeout
    storage: optuna.storages.RDBStorage | None = None
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the worker exited {proc.returncode} early:\n{_log(machine)}"
            if storage is None and _study_exists(databases, name):
                storage = optuna.storages.RDBStorage(databases.optuna_url)
            if storage is not None:
                study = optuna.load_study(study_name=name, storage=storage)
                running = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                           if "mlflow_run_id" in t.user_attrs and len(t.intermediate_values) >= 2]
                if running:
                    return running[0]
            time.sleep(0.3)
    finally:
        if storage is not None:
            storage.engine.dispose()
    raise AssertionError(f"no running trial appeared within {timeout:.0f} s:\n{_log(machine)}")


def test_worker_killed_mid_trial_is_repaired_and_retried_by_the_next_run(
        databases: Databases, server: Server, tmp_path: Path) -> None:
    name = "dist-kill"
    machine_a, machine_b = tmp_path / "machine-a", tmp_path / "machine-b"
    machine_a.mkdir()
    machine_b.mkdir()
    slow = machine_a / "study.toml"
    slow.write_text(_spec(name, n_trials=2, seed=5, n_samples=400, epochs=400, patience=400, batch_size="8"))

    victim_proc = _start_worker(machine_a, slow, databases, server)
    try:
        victim = _wait_for_running_trial(databases, name, victim_proc, machine_a)
        os.kill(victim_proc.pid, signal.SIGKILL)
        victim_proc.wait(timeout=30)
    finally:
        _kill_leftovers([victim_proc])
    assert victim_proc.returncode == -signal.SIGKILL
    assert victim.user_attrs["pid"] == victim_proc.pid and victim.user_attrs["host"] == platform.node()
    victim_run_id = victim.user_attrs["mlflow_run_id"]
    client = MlflowClient(tracking_uri=server.url)
    assert client.get_run(victim_run_id).info.status == "RUNNING"  # the dead worker left it open

    fast = machine_b / "study.toml"  # another 'machine' on the same host, short epochs, same study
    fast.write_text(_spec(name, n_trials=2, seed=5, n_samples=400, epochs=3, patience=3, batch_size="8"))
    rerun = _start_worker(machine_b, fast, databases, server)
    try:
        rerun.wait(timeout=240)
    finally:
        _kill_leftovers([rerun])
    assert rerun.returncode == 0, f"the re-run exited {rerun.returncode}:\n{_log(machine_b)}"
    assert [m.name for m in (machine_a, machine_b) if (m / "mlruns").exists()] == []

    study = optuna.load_study(study_name=name, storage=databases.optuna_url)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))
    killed = trials[victim.number]
    assert killed.state == optuna.trial.TrialState.FAIL
    assert killed.user_attrs["fail_reason"] == "worker-died"
    assert killed.intermediate_values  # the epochs it reported are kept

    old_run = client.get_run(victim_run_id)
    assert old_run.info.status == "KILLED"
    assert old_run.data.tags["nnstudy.fail_reason"] == "worker-died"
    assert client.get_metric_history(victim_run_id, "loss")  # curves logged before the kill are kept

    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2  # the re-run's two trials, the first of them the retry
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1, [t.number for t in retries]
    retry = retries[0]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == victim.params
    assert retry.user_attrs["seed"] == victim.user_attrs["seed"]
    assert retry.user_attrs["pid"] == rerun.pid != victim_proc.pid

    new_run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert new_run.info.run_id != victim_run_id
    assert new_run.info.status == "FINISHED"
    assert new_run.data.tags["nnstudy.retry_of_run"] == victim_run_id
    assert new_run.data.tags["nnstudy.retry_of_trial"] == str(victim.number)
    assert old_run.data.tags["nnstudy.retried_by"] == new_run.info.run_id
    assert new_run.data.params["seed"] == old_run.data.params["seed"]
    assert {k: new_run.data.params[k] for k in retry.params} == {k: old_run.data.params[k] for k in victim.params}

    experiment, parents, children = _experiment_runs(client, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    _assert_nothing_running(study, client, experiment.experiment_id)


# --------------------------------------------------------------------------- races, driven deterministically
# The functions below run in spawned processes (one per 'machine'); they must stay importable.


def _find_parent_run(tracking_uri: str, experiment_id: str, study_name: str, queue: Any) -> None:
    """A worker's start that does not know the parent run yet: ``open_context`` passes no run id."""
    from nnstudy.tracking import Tracker

    try:
        queue.put(Tracker(tracking_uri).parent_run(experiment_id, study_name, None, params={"seed": 1}, tags={}))
    except Exception as err:  # noqa: BLE001 - reported to the test
        queue.put("error: " + (str(err).strip().splitlines() or [type(err).__name__])[0][:300])


def _open_and_ask(spec_path: str, storage_url: str, barrier: Any, queue: Any) -> None:
    """A worker's start: open the study (as ``open_context`` does), then ask for its first trial."""
    import warnings

    warnings.simplefilter("ignore")
    from nnstudy.storage import make_storage, open_study
    from nnstudy.spec import load_spec

    spec = load_spec(Path(spec_path))
    barrier.wait(timeout=120)
    study, _ = open_study(spec, make_storage(storage_url))
    barrier.wait(timeout=120)  # both have opened the study before either asks for a trial
    trial = study.ask()
    params = spec.space.suggest(trial)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    queue.put((os.getpid(), trial.number, params))


def _join(procs: list[Any], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(max(1.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
    assert [p.exitcode for p in procs] == [0] * len(procs)


_WAITING_ON_TAGS = sqlalchemy.text(
    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'tags' "
    "AND NOT l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def test_workers_finding_the_parent_run_at_the_same_moment_all_start(databases: Databases, server: Server) -> None:
    """Worker A has created the study's parent run; B, C and D start before A has recorded it in the
    Optuna study (or the Optuna storage was reset while MLflow kept the experiment), so they find it
    by search at the same moment and each marks it RUNNING. The MLflow database's ``tags`` table is
    held in SHARE mode (reads pass, writes wait) until all three wait to write, so their writes meet
    deterministically, as they do by chance when workers start together."""
    from nnstudy.tracking import Tracker

    n_workers = 3
    tracker = Tracker(server.url)
    study_name = f"find-{uuid.uuid4().hex[:8]}"
    experiment_id = tracker.experiment(study_name)
    run_id = tracker.parent_run(experiment_id, study_name, None, params={"seed": 1}, tags={})  # worker A's

    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    procs = [spawn.Process(target=_find_parent_run, args=(server.url, experiment_id, study_name, queue))
             for _ in range(n_workers)]
    engine = sqlalchemy.create_engine(databases.mlflow_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as holder, engine.connect() as watcher:
            holder.execute(sqlalchemy.text("LOCK TABLE tags IN SHARE MODE"))
            for proc in procs:
                proc.start()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and any(p.is_alive() for p in procs):
                if watcher.execute(_WAITING_ON_TAGS).scalar() >= n_workers:
                    break
                watcher.rollback()
                time.sleep(0.2)
            holder.commit()  # releases the lock: the waiting writes go on together
        results = [queue.get(timeout=120) for _ in procs]
        _join(procs)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        engine.dispose()

    errors = [r for r in results if r.startswith("error: ")]
    assert errors == [], f"{len(errors)} of {n_workers} workers failed to start; first: {errors[0]}"
    assert results == [run_id] * n_workers
    run = MlflowClient(tracking_uri=server.url).get_run(run_id)
    assert run.info.status == "RUNNING" and "nnstudy.resumed_at" in run.data.tags


def test_workers_opening_the_study_together_propose_different_configurations(
        databases: Databases, tmp_path: Path) -> None:
    name = "dist-seeds"
    spec = tmp_path / "study.toml"
    spec.write_text(_spec(name, n_trials=1))
    optuna.create_study(study_name=name, storage=databases.optuna_url, direction="minimize")
    spawn = multiprocessing.get_context("spawn")
    barrier, queue = spawn.Barrier(2), spawn.Queue()
    procs = [spawn.Process(target=_open_and_ask, args=(str(spec), databases.optuna_url, barrier, queue))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    asked = [queue.get(timeout=180) for _ in procs]
    _join(procs)
    (pid_a, number_a, params_a), (pid_b, number_b, params_b) = asked
    assert pid_a != pid_b and {number_a, number_b} == {0, 1}
    assert params_a != params_b, f"both workers proposed {params_a}"
