"""Property test: parse_spec on random spec data returns a StudySpec or raises SpecError -- nothing else --
and every SpecError says what is allowed (or suggests a name, or says what is missing / not valid).

Random sections and keys are mixed with the real ones, and real keys get values of random types;
search keys get fixed values, lists of choices and range tables with random low/high/log/step.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from nnstudy.errors import SpecError
from nnstudy.space import ACTIVATIONS, OPTIMIZERS, PARAMETERS
from nnstudy.spec import METRICS, DataSection, StudySection, StudySpec, TrainSection, metric_names, parse_spec

WORDS = ["tpe", "random", "grid", "cmaes", "median", "hyperband", "none", "minimize", "maximize", "auto", "binary",
         "multiclass", "regression", "error", "drop", "mean", "median", "best", "all", "pass_fail", "grades",
         "digits", "breast_cancer", "rows.csv", "passed", "", *OPTIMIZERS, *ACTIVATIONS,
         *sorted({m for t in METRICS for m in metric_names(t)})]
VOCABULARY = ("allowed", "did you mean", "missing", "not valid")

numbers = st.one_of(
    st.integers(min_value=-5, max_value=300),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 1e-4, 0.5, 0.999, 1.0, 2**32, -0.0, 10**400]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=6), st.sampled_from(WORDS))
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=4), scalars, max_size=2))
ranges = st.fixed_dictionaries(
    {"low": numbers, "high": numbers},
    optional={"log": st.one_of(st.booleans(), scalars), "step": st.one_of(numbers, scalars), "lo": scalars},
)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` about nine times out of ten, else ``bad`` (one_of alone would favour the simpler branch)."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 9 else good)


def _random_keys(keys: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Usually nothing, sometimes one or two unknown keys with random values."""
    return _mostly(st.just({}), st.dictionaries(keys, values, min_size=1, max_size=2))


def _section(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A table with some of ``fields`` (mostly plausible values), rarely unknown keys, rarely not a table."""
    known = st.fixed_dictionaries({}, optional={k: _mostly(v, values) for k, v in fields.items()})
    table = st.tuples(_random_keys(st.text(min_size=1, max_size=10)), known).map(lambda t: {**t[0], **t[1]})
    return _mostly(table, values)


fractions = st.floats(min_value=0.0, max_value=0.9)
STUDY = {
    "name": st.text(min_size=1, max_size=8), "direction": st.sampled_from(["minimize", "maximize"]),
    "metric": st.sampled_from(sorted({m for t in METRICS for m in metric_names(t)})),
    "n_trials": st.integers(1, 50), "timeout": st.floats(0.1, 1e4), "sampler": st.sampled_from(["tpe", "random", "grid"]),
    "pruner": st.sampled_from(["median", "hyperband", "none"]), "seed": st.integers(0, 2**31),
    "keep_models": st.sampled_from(["best", "all", "none"]),
}
DATA = {
    "source": st.sampled_from(["pass_fail", "grades", "digits", "breast_cancer", "rows.csv"]),
    "target": st.sampled_from(["passed", "grade", "target", "y"]),
    "task": st.sampled_from(["auto", "binary", "multiclass", "regression"]),
    "validation_fraction": fractions, "test_fraction": fractions, "exclude": st.lists(st.text(max_size=5), max_size=2),
    "missing": st.sampled_from(["error", "drop", "mean", "median"]), "n_samples": st.integers(0, 2_000_000),
    "seed": st.integers(0, 100),
}
TRAIN = {
    "max_epochs": st.integers(-2, 200_000), "early_stopping_patience": st.integers(-1, 50),
    "restore_best_weights": st.booleans(), "min_delta": st.floats(-1, 1), "deterministic": st.booleans(),
}


def _fields(model: type[BaseModel], plausible: dict[str, st.SearchStrategy[Any]]) -> dict[str, st.SearchStrategy[Any]]:
    """Every field of ``model``: a plausible-value strategy where one is written here, random values otherwise."""
    return {name: plausible.get(name, values) for name in model.model_fields}


def _good_range(low: st.SearchStrategy[Any], high: st.SearchStrategy[Any],
                step: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"low": low, "high": high}, optional={"log": st.booleans(), "step": step})


PARAM_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "learning_rate": st.floats(1e-5, 1.0),
    "optimizer": st.sampled_from(OPTIMIZERS),
    "batch_size": st.integers(0, 256),
    "dropout": st.floats(0.0, 1.0),
    "depth": st.integers(-1, 5),
    "units": st.integers(0, 128),
    "activation": st.sampled_from(ACTIVATIONS),
}
PARAM_STEPS = {"learning_rate": st.sampled_from([0.01, 0.1, 0.0, math.nan]),
               "dropout": st.sampled_from([0.05, 0.1, 0.25, -0.1, math.nan]),
               "batch_size": st.integers(-1, 64), "depth": st.integers(0, 2), "units": st.integers(0, 32)}


def _param(name: str) -> st.SearchStrategy[Any]:
    value = PARAM_VALUES[name]
    good = st.one_of(value, st.lists(value, max_size=4))
    if name in PARAM_STEPS:
        good = st.one_of(good, _good_range(value, value, PARAM_STEPS[name]))
    return _mostly(good, st.one_of(scalars, ranges, values))


search_tables = st.tuples(
    _random_keys(st.text(min_size=1, max_size=12)),
    st.fixed_dictionaries({}, optional={name: _param(name) for name in PARAMETERS}),
).map(lambda t: {**t[0], **t[1]})
enqueue_entries = _mostly(
    st.lists(st.fixed_dictionaries({}, optional={name: _mostly(PARAM_VALUES[name], scalars) for name in PARAMETERS}),
             max_size=3),
    st.one_of(values, st.lists(st.dictionaries(st.text(max_size=6), scalars, max_size=2), max_size=2)),
)
specs = st.tuples(
    _random_keys(st.text(min_size=1, max_size=8)),
    st.fixed_dictionaries({}, optional={
        "study": _section(_fields(StudySection, STUDY)),
        "data": _section(_fields(DataSection, DATA)),
        "train": _section(_fields(TrainSection, TRAIN)),
        "search": _mostly(search_tables, values),
        "enqueue": enqueue_entries,
    }),
).map(lambda t: {**t[0], **t[1]})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=specs)
def test_parse_spec_returns_a_spec_or_raises_spec_error(raw: dict[str, Any]) -> None:
    try:
        spec = parse_spec(raw)
    except SpecError as err:
        message = str(err)
        assert message.startswith("<spec>")
        assert any(word in message for word in VOCABULARY), message
        return
    assert isinstance(spec, StudySpec)
    assert parse_spec(spec.to_dict()).space == spec.space


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(list(PARAMETERS)), raw=ranges)
def test_random_ranges_parse_or_raise_spec_error(name: str, raw: dict[str, Any]) -> None:
    try:
        spec = parse_spec({"search": {name: raw}})
    except SpecError as err:
        assert err.field.startswith(f"[search].{name}")
        return
    dim = spec.space.dimensions[name]
    assert dim.low <= dim.high  # type: ignore[union-attr]


def test_the_strategies_name_only_real_spec_keys() -> None:
    assert set(STUDY) <= set(StudySection.model_fields)
    assert set(DATA) <= set(DataSection.model_fields)
    assert set(TRAIN) <= set(TrainSection.model_fields)
    assert set(PARAM_VALUES) == set(PARAMETERS)
