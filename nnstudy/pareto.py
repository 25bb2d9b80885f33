"""Studies of several objectives (``[study].objectives``): their names, directions and Pareto front.

The first objective is the study metric (a per-epoch metric: early stopping watches it, the value is
taken at its best epoch); the others are measures of the whole trial (:data:`TRIAL_MEASURES`),
logged for every trial whatever the study optimizes. A trial is on the Pareto front when no
complete trial is at least as good in every objective and better in one.

Works on any ``optuna.Study`` (one objective or several), so readers need not ask which it is:
:func:`best_trials` is ``[study.best_trial]`` or the front. Imports neither Keras nor MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nnstudy.contract import TrialRecord

#: objectives measured once per trial (not per epoch): the model's weights, and its prediction time per row
TRIAL_MEASURES = ("n_params", "latency_ms")
#: their directions: smaller models that predict faster
MEASURE_DIRECTIONS = {"n_params": "minimize", "latency_ms": "minimize"}


def is_multi(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def directions(study: optuna.Study) -> list[str]:
    """``minimize``/``maximize`` per objective."""
    return [d.name.lower() for d in study.directions]


def objective_names(study: optuna.Study, metric: str) -> list[str]:
    """The names of the study's objectives: as set when it was created, else ``metric`` (one objective)."""
    names = study.metric_names
    if names and len(names) == len(study.directions):
        return [str(n) for n in names]
    return [metric] if not is_multi(study) else [metric, *(f"objective_{i}" for i in range(1, len(study.directions)))]


def values_of(trial: FrozenTrial) -> list[float] | None:
    """A trial's objective values (None unless it completed); ``trial.value`` raises for several."""
    values = trial.values
    return [float(v) for v in values] if values is not None else None


def first_value(trial: FrozenTrial) -> float | None:
    """The study metric's value of a trial (the first objective)."""
    values = values_of(trial)
    return values[0] if values else None


def dominates(a: Sequence[float], b: Sequence[float], study_directions: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    signs = [1.0 if d == "minimize" else -1.0 for d in study_directions]
    pairs = [(s * x, s * y) for s, x, y in zip(signs, a, b)]
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def on_front(values: Sequence[float], others: Sequence[Sequence[float]], study_directions: Sequence[str]) -> bool:
    """No vector of ``others`` dominates ``values`` (equal values stay on the front together)."""
    if not all(math.isfinite(v) for v in values):
        return False
    return not any(dominates(o, values, study_directions) for o in others)


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials on the Pareto front (Optuna's ``best_trials``: trials of equal values are on it
    together), best first in the first objective, then by trial number."""
    key = sort_key(study)
    return sorted(study.best_trials, key=lambda t: (key(t), t.number))


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (one objective) or the Pareto front (several); empty before a trial completes."""
    if is_multi(study):
        return front(study)
    try:
        return [study.best_trial]
    except ValueError:
        return []


def sort_key(study: optuna.Study) -> Callable[[FrozenTrial], float]:
    """A key ordering trials best first by the first objective (trials without a value last)."""
    sign = 1.0 if directions(study)[0] == "minimize" else -1.0

    def key(trial: FrozenTrial) -> float:
        value = first_value(trial)
        return math.inf if value is None else sign * value

    return key


def front_text(trials: Sequence[FrozenTrial], limit: int = 5000) -> str:
    """The trial numbers of a front, as the parent run's tag holds them: ``3,7,12`` (ending ``,...`` where
    more than ``limit`` characters would be needed; the table artifact lists them all)."""
    text = ",".join(str(t.number) for t in sorted(trials, key=lambda t: t.number))
    return text if len(text) <= limit else text[:text.rindex(",", 0, limit - 3)] + ",..."


def front_rows(study: optuna.Study, trials: Sequence[FrozenTrial], names: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of a front's table: trial, one column per objective, best_epoch, mlflow_run_id, model_uri,
    then the parameters (``param_<name>`` where a name is taken)."""
    rows = []
    for t in trials:
        rec = TrialRecord.from_trial(t, study.user_attrs)
        row: dict[str, Any] = {"trial": t.number, **dict(zip(names, rec.values or ())),
                               "best_epoch": rec.best_epoch, "mlflow_run_id": rec.run_id, "model_uri": rec.model_uri}
        for k, v in t.params.items():
            row[f"param_{k}" if k in row else k] = v
        rows.append(row)
    return rows
