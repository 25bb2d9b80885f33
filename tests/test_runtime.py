"""runtime.configure: environment defaults and the Keras backend, set before Keras is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from nnstudy.runtime import ENVIRONMENT

PROBE = """
import json, os, sys
from nnstudy import runtime
runtime.configure({backend}, import_keras={import_keras})
print(json.dumps({{"env": {{k: os.environ.get(k) for k in {keys!r}}},
                  "loaded": sorted(m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules)}}))
"""


def _probe(backend: str | None = None, *, import_keras: bool = False, **env: str) -> dict:  # type: ignore[type-arg]
    """What ``configure`` leaves in a fresh process: the environment, the loaded frameworks, stderr."""
    keys = [*ENVIRONMENT, "KERAS_BACKEND"]
    clean = {k: v for k, v in os.environ.items() if k not in keys}
    code = PROBE.format(backend=repr(backend), import_keras=import_keras, keys=keys)
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         check=True, timeout=180)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


def test_configure_sets_defaults_without_importing_tensorflow() -> None:
    result = _probe()
    assert result["env"] == {**ENVIRONMENT, "KERAS_BACKEND": "tensorflow"}
    assert result["loaded"] == []


def test_a_value_set_by_the_user_wins_over_the_default() -> None:
    result = _probe(TF_CPP_MIN_LOG_LEVEL="0", MLFLOW_HTTP_REQUEST_TIMEOUT="7", KERAS_BACKEND="jax")
    assert result["env"]["TF_CPP_MIN_LOG_LEVEL"] == "0" and result["env"]["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert result["env"]["KERAS_BACKEND"] == "jax"  # no backend given: the existing value is kept


def test_an_explicit_backend_replaces_the_environment_value() -> None:
    assert _probe("tensorflow", KERAS_BACKEND="jax")["env"]["KERAS_BACKEND"] == "tensorflow"


def test_import_keras_loads_tensorflow_quietly() -> None:
    result = _probe("tensorflow", import_keras=True)
    assert "tensorflow" in result["loaded"]
    assert "oneDNN" not in result["stderr"] and "cpu_feature_guard" not in result["stderr"]


def test_a_backend_that_is_not_installed_is_refused_before_keras_loads() -> None:
    import importlib.util

    import pytest

    from nnstudy import runtime
    from nnstudy.errors import UserInputError

    missing = [b for b, (package, _) in runtime.BACKEND_PACKAGES.items() if importlib.util.find_spec(package) is None]
    if not missing:
        pytest.skip("every Keras backend is installed here")
    backend = missing[0]
    with pytest.raises(UserInputError, match=rf"spec\.toml: \[train\]\.backend: '{backend}' needs the package "
                                             rf"'{backend}', which is not installed; allowed: .*nnstudy\[{backend}\]"):
        runtime.check_backend(backend, "spec.toml: [train].backend")


def test_freeze_imported_imports_then_freezes_what_is_alive() -> None:
    code = ("import gc, sys; from nnstudy import runtime; runtime.freeze_imported('colorsys', 'nnstudy.pareto'); "
            "print(gc.get_freeze_count() > 1000, 'colorsys' in sys.modules and 'nnstudy.pareto' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=180)
    assert out.stdout.split() == ["True", "True"]
