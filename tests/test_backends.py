"""Other Keras backends: a JAX study on the CPU runs through the CLI and its trials reproduce exactly.

The backend is chosen before Keras is imported, and this pytest process has imported Keras with
TensorFlow already, so every JAX run is a subprocess that lets nnstudy choose (``--backend jax``,
then the backend recorded with the study). The ``[test]`` extra installs jax; where it is missing these
tests skip, naming the extra, and CI's ``NNSTUDY_TEST_BACKENDS=jax`` turns that skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from nnstudy.reproduction import exactness_note
from nnstudy.runtime import BACKEND_PACKAGES
from nnstudy.training import ShuffledBatches


def _require(backend: str) -> None:
    package, install = BACKEND_PACKAGES[backend]
    if importlib.util.find_spec(package) is None:
        reason = f"the {backend} backend needs {package!r}, which is not installed: {install}"
        if backend in os.environ.get("NNSTUDY_TEST_BACKENDS", "").split(","):
            pytest.fail(f"NNSTUDY_TEST_BACKENDS asks for it, but {reason}")
        pytest.skip(reason)


def _env() -> dict[str, str]:
    """This environment without a chosen backend or tracking server: nnstudy decides, files go to the cwd."""
    drop = {"KERAS_BACKEND", "MLFLOW_TRACKING_URI"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _nnstudy(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from nnstudy.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=300)


# --------------------------------------------------------------------------- fast: no training

def test_batches_follow_the_seed_and_epoch_not_numpys_global_state() -> None:
    x, y = np.arange(10, dtype="float32").reshape(10, 1), np.arange(10)
    batches = ShuffledBatches(x, y, batch_size=4, seed=7)
    assert len(batches) == 3

    def epoch_rows(epoch: int) -> list[int]:
        batches.set_epoch(epoch)
        np.random.seed(epoch)  # whatever else draws from the global state leaves the order alone
        np.random.rand(5)
        rows = [int(v) for i in range(len(batches)) for v in batches[i][1]]
        assert [len(batches[i][0]) for i in range(len(batches))] == [4, 4, 2]
        return rows

    first, second = epoch_rows(0), epoch_rows(1)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second  # every row once, reshuffled
    assert epoch_rows(0) == first and ShuffledBatches(x, y, 4, seed=7)[0][1].tolist() == first[:4]
    other = ShuffledBatches(x, y, 4, seed=8)  # another trial, another order
    assert [int(v) for i in range(len(other)) for v in other[i][1]] != first


def test_reproduce_notes_where_a_backend_is_not_bit_exact() -> None:
    assert exactness_note("tensorflow", True, "CPU", "CPU") is None
    assert exactness_note("tensorflow", True, "CPU", "NVIDIA H100") is None  # op determinism covers GPUs
    assert exactness_note("jax", True, "CPU", "CPU") is None
    gpu = exactness_note("jax", True, "CPU", "NVIDIA H100")
    assert gpu is not None and gpu.startswith("note: jax on NVIDIA H100 ") and "--tolerance" in gpu
    assert "torch on CPU" in (exactness_note("torch", True, "CPU", "CPU") or "")
    assert "deterministic = false" in (exactness_note("tensorflow", False, "CPU", "CPU") or "")


# --------------------------------------------------------------------------- slow: JAX trains on the CPU

SPEC = """
[study]
name = "jax-cpu"
n_trials = 2
pruner = "none"
seed = 7

[data]
source = "pass_fail"
n_samples = 300

[train]
max_epochs = 4
early_stopping_patience = 3

[search]
learning_rate = { low = 1e-3, high = 5e-2, log = true }
batch_size = 16
dropout = 0.25
depth = { low = 1, high = 2 }
units = [8, 16]
"""

#: one trial trained twice in one JAX process, with NumPy's and Python's global random state used in between
PROBE = """
import random
from nnstudy import runtime
runtime.configure("jax", import_keras=True)
import keras, numpy as np, optuna
from nnstudy.data import prepare
from nnstudy.model import ModelFactory
from nnstudy.spec import parse_spec
from nnstudy.training import InputPipeline, configure_determinism, train
assert keras.backend.backend() == "jax"
spec = parse_spec({"data": {"source": "pass_fail", "n_samples": 300}, "train": {"max_epochs": 3}})
configure_determinism(True)
data = prepare(spec)
pipeline = InputPipeline(data, spec.train)
params = {"depth": 2, "units": 16, "activation": "relu", "dropout": 0.3, "learning_rate": 0.01,
          "optimizer": "adam", "batch_size": 16}
factory = ModelFactory(spec, data.input_shape, data.task, data.n_classes, data.target_mean)
curves = []
for disturb in (False, True):
    model = factory.build(params, optuna.trial.FixedTrial(params), seed=123)
    if disturb:
        np.random.rand(3), random.random()
    hook = (lambda epoch, logs: bool(np.random.rand() > 2)) if disturb else None
    result = train(data, params, spec.train, model=model, metric="val_loss", direction="minimize", seed=123,
                   pipeline=pipeline, on_epoch=hook)
    curves.append(result.history["val_loss"])
print("curves", curves[0] == curves[1], curves)
"""


@pytest.fixture(scope="module")
def jax_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require("jax")
    root = tmp_path_factory.mktemp("jax")
    (root / "jax.toml").write_text(SPEC)
    out = _nnstudy(root, "run", "jax.toml", "--backend", "jax", "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    return root


@pytest.mark.slow
def test_a_jax_study_runs_on_the_cpu_and_records_its_backend(jax_study: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{jax_study / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("jax-cpu")
    assert experiment is not None
    trials = [r for r in client.search_runs([experiment.experiment_id]) if "nnstudy.keras_backend" in r.data.tags
              and r.data.tags.get("mlflow.parentRunId")]
    assert len(trials) == 2
    assert {r.data.tags["nnstudy.keras_backend"] for r in trials} == {"jax"}
    assert {r.data.tags["nnstudy.device"] for r in trials} == {"CPU"}
    assert all(r.info.status == "FINISHED" for r in trials)


@pytest.mark.slow
def test_a_jax_trial_reproduces_exactly_in_a_fresh_process(jax_study: Path) -> None:
    out = _nnstudy(jax_study, "reproduce", "--study-name", "jax-cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "max abs difference of val_loss: 0.0\n" in out.stdout, out.stdout
    assert "note:" not in out.stdout and "differs:" not in out.stdout, out.stdout


@pytest.mark.slow
def test_a_jax_curve_does_not_depend_on_numpys_global_random_state() -> None:
    _require("jax")
    out = subprocess.run([sys.executable, "-c", PROBE], env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "curves True" in out.stdout, out.stdout


def test_a_jax_model_requires_jax_not_tensorflow() -> None:
    _require("jax")
    code = ("from nnstudy.mlflow_model import requirements; r = requirements(); "
            "assert not [x for x in r if x.startswith('tensorflow')], r; "
            "assert [x for x in r if x.startswith('jax==')], r; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KERAS_BACKEND": "jax"})
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
