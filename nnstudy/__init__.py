"""nnstudy: hyperparameter studies for Keras Sequential models, searched with Optuna, tracked in MLflow.

Import the short names from here; the modules behind them may move::

    from nnstudy import load_spec, open_study, run_study, trials_frame
    outcome = run_study(load_spec("studies/pass_fail.toml"))
    trials_frame(open_study("pass_fail"))
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

__version__ = "0.1.0"

if TYPE_CHECKING:
    from nnstudy.api import best, open_study, predict, reproduce, run_study, trials_frame
    from nnstudy.runner import StudyOutcome
    from nnstudy.spec import StudySpec, load_spec, parse_spec

_API = ("run_study", "open_study", "trials_frame", "best", "reproduce", "predict")
_SPEC = ("StudySpec", "load_spec", "parse_spec")


def __getattr__(name: str) -> Any:
    # heavy modules (TensorFlow, MLflow, Optuna; pydantic for the spec) load only when used, so `nnstudy --help`
    # is instant and the commands that read a study never build the spec's models
    if name in _SPEC:
        from nnstudy import spec

        return getattr(spec, name)
    if name in _API:
        from nnstudy import api

        return getattr(api, name)
    if name == "StudyOutcome":
        from nnstudy import runner

        return runner.StudyOutcome
    raise AttributeError(f"module 'nnstudy' has no attribute {name!r}")


__all__ = [
    "DataError", "NnstudyError", "SpecError", "StoreError", "StudyInterrupted", "StudySpec", "TrialFailed",
    "UserInputError", "load_spec", "parse_spec", "StudyOutcome", "run_study", "open_study", "trials_frame", "best",
    "reproduce", "predict",
]
