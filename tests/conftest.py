"""Shared pytest fixtures.

Fixtures of the fast unit tests (space, spec, data, store, bad input) come first; add new
fixtures below them.
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pytest

from nnstudy.errors import StoreError
from nnstudy.spec import StudySpec, parse_spec
from nnstudy.storage import make_storage

if TYPE_CHECKING:
    from nnstudy.tracking import Tracker

# `nnstudy run` defaults to one worker process per core (`--workers auto`): the suite's tiny studies run in one
# process unless a test asks for workers (tests/test_workers.py checks the default with this unset)
os.environ.setdefault("NNSTUDY_WORKERS", "1")

# --------------------------------------------------------------------------- unit-test fixtures


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write ``text`` to ``tmp_path / name`` (folders created) and return the path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def no_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset ``MLFLOW_TRACKING_URI`` so store defaults do not depend on the caller's shell."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# --------------------------------------------------------------------------- other fixtures

#: the tiny study the end-to-end tests run through the CLI: 3 trials of the course example, 6 epochs at most
E2E_SPEC: dict[str, dict[str, Any]] = {
    "study": {"n_trials": 3, "pruner": "none", "seed": 3},
    "data": {"source": "pass_fail", "n_samples": 300},
    "train": {"max_epochs": 6, "early_stopping_patience": 3},
    "search": {"learning_rate": {"low": 1e-3, "high": 1e-1, "log": True}, "optimizer": ["adam", "rmsprop"],
               "batch_size": [32, 64], "depth": {"low": 1, "high": 2}, "units": [8, 16]},
}


def toml_text(sections: dict[str, dict[str, Any]]) -> str:
    """A spec as TOML text: one table per section, values as TOML literals (ranges as inline tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"

    return "".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items()) + "\n"
                   for name, table in sections.items())


@pytest.fixture
def e2e_spec(tmp_path: Path) -> Callable[..., Path]:
    """``e2e_spec(name, study={...}, train={...}, ...)``: write :data:`E2E_SPEC` named ``name``, with the
    given keys of each section replaced, to ``tmp_path / f"{name}.toml"`` and return the path."""

    def write(name: str, **sections: dict[str, Any]) -> Path:
        raw = copy.deepcopy(E2E_SPEC)
        raw["study"]["name"] = name
        for section, values in sections.items():
            raw.setdefault(section, {}).update(values)
        path = tmp_path / f"{name}.toml"
        path.write_text(toml_text(raw), encoding="utf-8")
        return path

    return write



#: the tiny study every module test starts from: the course example, 120 rows, 2 epochs, one layer of 8 units
TINY_SPEC: dict[str, dict[str, Any]] = {
    "study": {"name": "tiny", "n_trials": 1, "pruner": "none", "seed": 5},
    "data": {"source": "pass_fail", "n_samples": 120},
    "train": {"max_epochs": 2, "early_stopping_patience": 2},
    "search": {"learning_rate": {"low": 1e-3, "high": 1e-1, "log": True}, "optimizer": ["adam", "sgd"],
               "depth": 1, "units": 8},
}


@pytest.fixture
def tiny_spec() -> Callable[..., StudySpec]:
    """``tiny_spec(study={...}, train={...}, search={...}, path=None)``: :data:`TINY_SPEC` with the given
    keys of each section replaced, parsed (and so validated) by ``parse_spec``."""

    def make(*, path: Path | None = None, **sections: dict[str, Any]) -> StudySpec:
        raw = copy.deepcopy(TINY_SPEC)
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        return parse_spec(raw, path=path)

    return make


def study_being_run(url: str, name: str) -> optuna.Study | None:
    """The study ``name`` in a store that a process under test may still be creating, or None while it is not there
    yet: polling with a plain ``optuna.load_study`` races that process to write the schema's version row."""
    try:
        return optuna.load_study(study_name=name, storage=make_storage(url, create=False))
    except (KeyError, StoreError):
        return None


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed again before it is returned)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its schema made once per session (creating one costs seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def seed_mlflow_db(mlflow_db_template: Path) -> Callable[[Path], str]:
    """Copy the empty MLflow store to ``path`` (folders made); returns its ``sqlite:///`` URI."""

    def seed(path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mlflow_db_template, path)
        return f"sqlite:///{path}"

    return seed


@pytest.fixture
def tracker(tmp_path: Path, seed_mlflow_db: Callable[[Path], str]) -> Tracker:
    """A :class:`~nnstudy.tracking.Tracker` on a real, empty SQLite MLflow store in ``tmp_path``."""
    from nnstudy.tracking import Tracker

    return Tracker(seed_mlflow_db(tmp_path / "mlflow.db"), tmp_path / "artifacts")


@pytest.fixture
def study_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed_mlflow_db: Callable[[Path], str]) -> Path:
    """``tmp_path`` as the working folder of a study run with the default store (``./mlruns``), its
    MLflow database already made; ``MLFLOW_TRACKING_URI`` unset."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seed_mlflow_db(tmp_path / "mlruns" / "mlflow.db")
    return tmp_path


@dataclass
class RecordedStudy:
    """A study written by hand into real stores: an Optuna SQLite storage and an MLflow SQLite store,
    with the parent run made by :func:`nnstudy.parent.open_parent` and one real child run per trial."""

    spec: StudySpec
    storage: str
    tracking_uri: str
    tracker: Tracker
    study: optuna.Study
    experiment_id: str
    parent_id: str

    def add(self, value: float | None, params: dict[str, Any], *, state: str = "COMPLETE",
            curves: dict[str, list[float]] | None = None, attrs: dict[str, Any] | None = None,
            run: bool = True) -> optuna.trial.FrozenTrial:
        """Add a finished trial (``params``: learning_rate and optimizer) and its child run, whose
        curves, summary and status follow the trial."""
        from nnstudy.contract import (
            ATTR_BEST_EPOCH,
            ATTR_RUN_ID,
            ATTR_SEED,
            ATTR_STOPPED_EPOCH,
            trial_seed,
        )
        from nnstudy.tracking import param_text

        number = len(self.study.get_trials(deepcopy=False))
        curves = curves if curves is not None else {"loss": [0.9, 0.7], "val_loss": [0.95, 0.8]}
        best = min(range(len(curves["val_loss"])), key=lambda i: curves["val_loss"][i]) + 1
        seed = trial_seed(self.spec.study.seed, number)
        user_attrs: dict[str, Any] = {ATTR_SEED: seed, ATTR_BEST_EPOCH: best,
                                      ATTR_STOPPED_EPOCH: len(curves["val_loss"]), **(attrs or {})}
        if run:
            run_id = self.tracker.create_child_run(
                self.experiment_id, self.parent_id, self.spec.name, number,
                params={**{k: param_text(v) for k, v in params.items()}, "seed": str(seed)}, tags={})
            self.tracker.log_curves(run_id, {k: dict(enumerate(v, 1)) for k, v in curves.items()})
            summary = {"best_epoch": best, "stopped_epoch": len(curves["val_loss"])}
            if value is not None:
                summary[f"best_{self.spec.study.metric}"] = value
            self.tracker.log_summary(run_id, summary)
            self.tracker.end_run(run_id, {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED"))
            user_attrs[ATTR_RUN_ID] = run_id
        trial = optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], value=value if state == "COMPLETE" else None, params=params,
            distributions=TINY_DISTRIBUTIONS, user_attrs=user_attrs,
            intermediate_values=dict(enumerate(curves["val_loss"], 1)))
        self.study.add_trial(trial)
        return self.study.get_trials(deepcopy=False)[-1]


TINY_DISTRIBUTIONS = {
    "learning_rate": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True),
    "optimizer": optuna.distributions.CategoricalDistribution(["adam", "sgd"]),
}


@pytest.fixture
def recorded_study(tmp_path: Path, tracker: Tracker, tiny_spec: Callable[..., StudySpec]) -> Callable[..., RecordedStudy]:
    """``recorded_study(**sections)``: an empty :class:`RecordedStudy` of ``tiny_spec(**sections)`` in
    ``tmp_path`` (``optuna.db`` and ``mlflow.db``); add trials with :meth:`RecordedStudy.add`."""
    from nnstudy.data import prepare
    from nnstudy.parent import open_parent
    from nnstudy.storage import open_study, storage_for
    from nnstudy.store import Store

    def make(**sections: dict[str, Any]) -> RecordedStudy:
        spec = tiny_spec(**sections)
        storage = f"sqlite:///{tmp_path}/optuna.db"
        study, created = open_study(spec, storage_for(spec, storage))
        store = Store(storage=storage, tracking_uri=tracker.tracking_uri, artifact_root=tracker.artifact_root)
        experiment_id = tracker.experiment(spec.name)
        parent_id = open_parent(spec, store, study, created=created, tracker=tracker, experiment_id=experiment_id,
                                data=prepare(spec), env={})
        return RecordedStudy(spec, storage, tracker.tracking_uri, tracker, study, experiment_id, parent_id)

    return make



class Tmpfs:
    """tmpfs mounts under a test's ``tmp_path``: disks that can be filled, made read-only and resized."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted: list[Path] = []

    def mount(self, name: str, size: str = "8m") -> Path:
        """A fresh tmpfs of ``size`` (``mount -t tmpfs -o size=SIZE``) on ``root / name``."""
        point = self.root / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "nnstudy-test", str(point)], check=True)
        self.mounted.append(point)
        return point

    @staticmethod
    def remount(point: Path, options: str) -> None:
        """``mount -o remount,OPTIONS``: ``ro``, ``rw`` or ``size=64m``."""
        subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True)

    def unmount_all(self) -> None:
        for point in reversed(self.mounted):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], check=False)  # still busy: detach it now


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    """A :class:`Tmpfs` on ``tmp_path``; every mount is unmounted at the end. Mounting needs root (CI
    runs as root); otherwise the test is skipped."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount tmpfs")
    mounts = Tmpfs(tmp_path)
    try:
        yield mounts
    finally:
        mounts.unmount_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Docker tests last: CI builds their images in the background while the rest of the suite runs."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_docker.py"))
