"""nnstudy: hyperparameter studies for Keras Sequential models, searched with Optuna, tracked in MLflow.

Import the short names from here; the modules behind them may move::

    from nnstudy import load_spec, run_study
    outcome = run_study(load_spec("studies/pass_fail.toml"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nnstudy.errors import (
    DataError,
    NnstudyError,
    SpecError,
    StoreError,
    StudyInterrupted,
    TrialFailed,
    UserInputError,
)
from nnstudy.spec import StudySpec, load_spec, parse_spec

__version__ = "0.1.0"

if TYPE_CHECKING:
    from nnstudy.runner import StudyOutcome, run_study


def __getattr__(name: str) -> Any:
    # heavy modules (TensorFlow, MLflow, Optuna) load only when used, so `nnstudy --help` is instant
    if name in ("run_study", "StudyOutcome"):
        from nnstudy import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'nnstudy' has no attribute {name!r}")


__all__ = [
    "DataError", "NnstudyError", "SpecError", "StoreError", "StudyInterrupted", "StudySpec", "TrialFailed",
    "UserInputError", "load_spec", "parse_spec", "run_study", "StudyOutcome",
]
