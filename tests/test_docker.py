"""The Docker image and the compose set-up, built and run for real (no container registry needed).

``docker/build-images.sh`` builds the images from Debian's packages and PyPI: a debootstrapped bookworm base
(``docker/base-image.sh``), nnstudy's image FROM it (the Dockerfile's ``BASE_IMAGE``) and PostgreSQL
(``docker/postgres.Dockerfile``). CI starts that build in the background before pytest; the script holds a
lock, so the call here waits for it and then finds every layer cached (seconds).

* a 2-trial study in a container (``--network host``) against the machine's PostgreSQL (a fresh database)
  and an ``mlflow server`` started here: the parent run and both trial runs read back with MlflowClient;
* ``docker-compose.yml`` with ``docker/compose.local.yml`` (the local images): PostgreSQL, the MLflow server
  and 2 worker replicas sharing one study, read back through the published ports, then ``down -v``.

Skipped (with the reason) only when no docker daemon answers and ``docker/dockerd.sh`` cannot start one;
with ``NNSTUDY_TEST_DOCKER=1`` (CI) that is a failure instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

# the fresh PostgreSQL databases and the host's mlflow server of the distributed tests, and their spec
from test_distributed import Databases, Server, _spec, databases, server  # noqa: F401 (fixtures)

from nnstudy.contract import ROLE_STUDY, ROLE_TRIAL, TAG_PARENT, TAG_ROLE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).parents[1]
IMAGE = os.environ.get("NNSTUDY_IMAGE", "nnstudy:local")  # as docker/build-images.sh names it
BUILD_TIMEOUT_S = 1500  # a cold build: base image ~1 min, nnstudy's image ~2-4 min, PostgreSQL's ~1 min
RUN_TIMEOUT_S = 600


def test_the_gpu_image_gets_nvml_for_the_trial_runs_gpu_metrics() -> None:
    """``[train].system_metrics`` samples system/gpu_* only with nvidia-ml-py (the ``gpu-metrics`` extra)."""
    import sys

    listed = {device: subprocess.run([sys.executable, str(ROOT / "docker" / "requirements.py"), device,
                                      str(ROOT / "pyproject.toml")], capture_output=True, text=True, check=True,
                                     timeout=60).stdout.split()
              for device in ("cpu", "gpu")}
    assert any(r.startswith("nvidia-ml-py") for r in listed["gpu"]), listed["gpu"]
    assert not any(r.startswith("nvidia-ml-py") for r in listed["cpu"])


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Docker:
    compose: list[str]  # `docker compose` (v2) or `docker-compose` (v1, Debian's package)


@pytest.fixture(scope="module")
def docker() -> Docker:
    """A docker daemon that answers (started by docker/dockerd.sh where none runs) and a compose command."""
    started = subprocess.run([str(ROOT / "docker" / "dockerd.sh")], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        reason = f"no docker daemon: {started.stderr.strip() or started.stdout.strip()}"
        if os.environ.get("NNSTUDY_TEST_DOCKER") == "1":
            pytest.fail(f"{reason} (NNSTUDY_TEST_DOCKER=1: Docker must run here)")
        pytest.skip(reason)
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return Docker(compose=["docker", "compose"])
    v1 = shutil.which("docker-compose")
    assert v1, "dockerd runs but there is no compose: apt-get install docker-compose"
    return Docker(compose=[v1])


@pytest.fixture(scope="module")
def image(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> str:
    """nnstudy's image (and the PostgreSQL one), built by docker/build-images.sh: waits for a build that is
    running (CI starts one before pytest), then every layer is cached."""
    log = tmp_path_factory.mktemp("docker-build") / "build.log"
    started = time.monotonic()
    with log.open("wb") as out:
        result = subprocess.run([str(ROOT / "docker" / "build-images.sh")], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT_S,
                                env={**os.environ, "NNSTUDY_IMAGE": IMAGE})
    text = log.read_text(errors="replace")
    assert result.returncode == 0, f"docker/build-images.sh failed:\n{_tail(text)}"
    print(f"images ready after {time.monotonic() - started:.0f}s: " +
          "; ".join(line for line in text.splitlines() if line.startswith(("image ", "base image "))))
    return IMAGE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spec_folder(tmp_path: Path, name: str, n_trials: int) -> Path:
    """A folder holding ``{name}.toml`` that the image's unprivileged user (uid 1000) can read."""
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / f"{name}.toml").write_text(_spec(name, n_trials=n_trials), encoding="utf-8")
    folder.chmod(0o755)
    (folder / f"{name}.toml").chmod(0o644)
    return folder


def _assert_one_study(client: MlflowClient, name: str, n_trials: int) -> None:
    """One experiment ``name``: one FINISHED parent run and ``n_trials`` FINISHED trial runs under it, each
    with its curves and the study metric."""
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no MLflow experiment {name!r}"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(TAG_ROLE) == ROLE_STUDY]
    children = [r for r in runs if r.data.tags.get(TAG_ROLE) == ROLE_TRIAL]
    assert len(parents) == 1, [r.data.tags for r in parents]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == n_trials, [r.info.run_name for r in children]
    for run in children:
        assert run.info.status == "FINISHED", (run.info.run_name, run.info.status)
        assert run.data.tags[TAG_PARENT] == parents[0].info.run_id
        assert {"best_val_loss", "val_loss", "loss", "best_epoch"} <= set(run.data.metrics), run.data.metrics
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) >= 1
    # the artifacts went through the server (proxied uploads from inside the containers)
    assert "study" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}


def test_a_study_runs_in_the_image_against_postgresql_and_an_mlflow_server(
        image: str, databases: Databases, server: Server, tmp_path: Path) -> None:  # noqa: F811
    name = "docker-run"
    specs = _spec_folder(tmp_path, name, n_trials=2)
    container = f"nnstudy-test-{uuid.uuid4().hex[:10]}"
    command = ["docker", "run", "--rm", "--name", container, "--network", "host", "-v", f"{specs}:/specs:ro",
               image, "run", f"/specs/{name}.toml", "--storage", databases.optuna_url,
               "--tracking-uri", server.url, "--no-progress"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)  # only after a timeout
    assert result.returncode == 0, _tail(result.stdout + result.stderr)
    assert "2 complete" in result.stdout, _tail(result.stdout)

    _assert_one_study(MlflowClient(server.url), name, n_trials=2)
    study = optuna.load_study(study_name=name, storage=databases.optuna_url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


@dataclass(frozen=True)
class Compose:
    command: list[str]  # the compose command with the project name and the files
    env: dict[str, str]
    pg_port: int
    mlflow_port: int

    def __call__(self, *args: str, timeout: float = RUN_TIMEOUT_S, check: bool = True) -> str:
        result = subprocess.run([*self.command, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, f"{' '.join(args)}:\n{_tail(result.stdout + result.stderr)}"
        return result.stdout


@pytest.fixture
def compose(docker: Docker, image: str, tmp_path: Path) -> Iterator[Compose]:
    """docker-compose.yml + docker/compose.local.yml + a test file mounting the specs into the workers,
    under a unique project name and free host ports; everything (volumes too) removed afterwards."""
    override = tmp_path / "compose.test.yml"
    override.write_text(f"services:\n  worker:\n    volumes:\n      - {tmp_path / 'specs'}:/specs:ro\n",
                        encoding="utf-8")
    project = f"nnstudytest{uuid.uuid4().hex[:10]}"
    pg_port, mlflow_port = _free_port(), _free_port()
    env = {**os.environ, "NNSTUDY_IMAGE": image, "NNSTUDY_BIND": "127.0.0.1", "NNSTUDY_PG_PORT": str(pg_port),
           "NNSTUDY_MLFLOW_PORT": str(mlflow_port)}
    run = Compose([*docker.compose, "-p", project, "-f", str(ROOT / "docker-compose.yml"),
                   "-f", str(ROOT / "docker" / "compose.local.yml"), "-f", str(override)], env, pg_port, mlflow_port)
    try:
        yield run
    finally:
        run("down", "-v", "--remove-orphans", "--timeout", "3", check=False)


def test_compose_runs_two_workers_sharing_one_study(compose: Compose, tmp_path: Path) -> None:
    name = "compose-two"
    _spec_folder(tmp_path, name, n_trials=2)
    compose.env["NNSTUDY_SPEC"] = f"/specs/{name}.toml"
    compose("build", timeout=900)  # the override's builds: docker/build-images.sh left every layer cached
    compose("up", "-d", "--scale", "worker=2")  # returns once PostgreSQL and the MLflow server are healthy
    workers = compose("ps", "-q", "worker").split()
    assert len(workers) == 2, workers
    waited = subprocess.run(["docker", "wait", *workers], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    logs = compose("logs", "--no-color", "--tail", "40", check=False)
    assert waited.stdout.split() == ["0", "0"], f"worker exit codes {waited.stdout.split()}:\n{_tail(logs, 120)}"

    # read back through the published ports, as a client on the host would
    client = MlflowClient(f"http://127.0.0.1:{compose.mlflow_port}")
    _assert_one_study(client, name, n_trials=4)  # each worker adds the spec's 2 trials
    storage = f"postgresql://nnstudy:nnstudy@127.0.0.1:{compose.pg_port}/optuna"
    summaries = optuna.get_all_study_summaries(storage)
    assert [(s.study_name, s.n_trials) for s in summaries] == [(name, 4)]
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
