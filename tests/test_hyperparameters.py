"""Keras Tuner's HyperParameters API on real in-memory Optuna studies."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from nnstudy.hyperparameters import HyperParameters

optuna.logging.set_verbosity(optuna.logging.WARNING)


def hypermodel(hp: HyperParameters) -> dict[str, Any]:
    """A Keras-Tuner-style build function (returns what it read instead of a model)."""
    out: dict[str, Any] = {
        "layers": hp.Int("layers", 1, 3),
        "lr": hp.Float("lr", 1e-4, 1e-1, sampling="log"),
        "act": hp.Choice("act", ["relu", "tanh"]),
        "bn": hp.Boolean("bn"),
        "epochs": hp.Fixed("epochs", 7),
        "opt": hp.Choice("opt", ["sgd", "adam"]),
    }
    for i in range(out["layers"]):
        out[f"units_{i}"] = hp.Int(f"units_{i}", 8, 64, step=8)
    out["momentum"] = hp.Float("momentum", 0.0, 0.9, step=0.1, parent_name="opt", parent_values=["sgd"])
    with hp.conditional_scope("bn", True):
        out["bn_momentum"] = hp.Float("bn_momentum", 0.5, 0.99, default=0.9)
        with hp.conditional_scope("act", "relu"):
            out["bn_eps"] = hp.Choice("bn_eps", [1e-3, 1e-5])
    return out


def test_study_records_params_and_reproduces_them() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def objective(trial: optuna.Trial) -> float:
        hp = HyperParameters.from_trial(trial)
        out = hypermodel(hp)
        seen.append((dict(hp.values), out))
        assert hp.fixed == {"epochs": 7}
        return float(out["lr"])

    study.optimize(objective, n_trials=25)
    opts, bns = set(), set()
    for trial, (values, out) in zip(study.trials, seen):
        params = trial.params
        assert "epochs" not in params and values["epochs"] == 7 == out["epochs"]
        assert {k: v for k, v in values.items() if k != "epochs"} == params
        assert 1 <= params["layers"] <= 3 and 1e-4 <= params["lr"] <= 1e-1
        assert params["act"] in ("relu", "tanh") and params["bn"] in (False, True)
        assert {f"units_{i}" for i in range(params["layers"])} <= set(params)
        assert all(params[f"units_{i}"] % 8 == 0 and 8 <= params[f"units_{i}"] <= 64
                   for i in range(params["layers"]))
        opts.add(params["opt"])
        bns.add(params["bn"])
        # conditional via parent_name/parent_values
        assert ("momentum" in params) == (params["opt"] == "sgd")
        if params["opt"] == "sgd":
            assert 0.0 <= params["momentum"] <= 0.9
            assert math.isclose(params["momentum"] * 10, round(params["momentum"] * 10), abs_tol=1e-9)
        else:
            assert out["momentum"] == 0.0  # inactive: the default (min_value)
        # conditional via (nested) conditional_scope
        assert ("bn_momentum" in params) == params["bn"]
        assert ("bn_eps" in params) == (params["bn"] and params["act"] == "relu")
        if not params["bn"]:
            assert out["bn_momentum"] == 0.9 and out["bn_eps"] == 1e-3  # defaults: given, else first value
        # the same function on a FixedTrial of the recorded params gives the same values
        again = HyperParameters.from_trial(optuna.trial.FixedTrial(params))
        assert hypermodel(again) == out
        assert again.values == values
    assert opts == {"sgd", "adam"} and bns == {False, True}  # both branches were exercised


def test_int_log_with_step_is_multiplicative() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: HyperParameters(t).Int("units", 4, 100, step=2, sampling="log"), n_trials=30)
    values = {t.params["units"] for t in study.trials}
    assert values <= {4, 8, 16, 32, 64} and len(values) > 2
    dist = study.trials[0].distributions["units"]
    assert isinstance(dist, optuna.distributions.CategoricalDistribution)
    assert list(dist.choices) == [4, 8, 16, 32, 64]


def test_int_and_float_log_without_step_and_reverse_log() -> None:
    trial = optuna.create_study().ask()
    hp = HyperParameters(trial)
    n = hp.Int("n", 1, 1000, sampling="log")
    x = hp.Float("x", 1e-3, 1.0, sampling="reverse_log")
    assert isinstance(n, int) and 1 <= n <= 1000 and 1e-3 <= x <= 1.0
    assert trial.distributions["n"] == optuna.distributions.IntDistribution(1, 1000, log=True)
    assert trial.distributions["x"] == optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)


def test_linear_step_never_exceeds_max() -> None:
    trial = optuna.create_study().ask()
    hp = HyperParameters(trial)
    hp.Int("k", 0, 10, step=3)
    hp.Float("f", 0.0, 1.0, step=0.3)
    assert trial.distributions["k"] == optuna.distributions.IntDistribution(0, 9, step=3)
    assert trial.distributions["f"] == optuna.distributions.FloatDistribution(0.0, 0.9, step=0.3)


def test_duplicate_name_returns_same_value_and_conflict_raises() -> None:
    trial = optuna.create_study().ask()
    hp = HyperParameters(trial)
    first = hp.Int("units", 1, 100)
    assert all(hp.Int("units", 1, 100) == first for _ in range(5))
    assert hp.Choice("act", ["a", "b"]) == hp.Choice("act", ["a", "b"])
    with pytest.raises(ValueError, match=r"'units' is already defined as Int\(min_value=1, max_value=100"):
        hp.Int("units", 1, 50)
    with pytest.raises(ValueError, match="already defined"):
        hp.Float("units", 1.0, 100.0)
    assert hp["units"] == first and hp.get("units") == first and "units" in hp


def test_same_name_in_exclusive_scopes_is_one_parameter() -> None:
    trial = optuna.trial.FixedTrial({"kind": "b", "child": 5})
    hp = HyperParameters(trial)
    hp.Choice("kind", ["a", "b"])
    with hp.conditional_scope("kind", "a"):
        assert hp.Choice("child", [4, 5, 6]) == 4  # inactive: first value
    with hp.conditional_scope("kind", "b"):
        assert hp.Choice("child", [4, 5, 6]) == 5
    assert hp.values == {"kind": "b", "child": 5}


def test_get_inactive_and_unknown() -> None:
    hp = HyperParameters(optuna.trial.FixedTrial({"opt": "adam"}))
    hp.Choice("opt", ["sgd", "adam"])
    assert hp.Float("momentum", 0.0, 0.9, parent_name="opt", parent_values="sgd") == 0.0
    assert "momentum" in hp and not hp.is_active("momentum")
    with pytest.raises(ValueError, match="inactive"):
        hp.get("momentum")
    with pytest.raises(KeyError, match="does not exist"):
        hp["nope"]


def test_inactive_parent_makes_children_inactive() -> None:
    hp = HyperParameters(optuna.trial.FixedTrial({"a": False}))
    hp.Boolean("a")
    with hp.conditional_scope("a", True):
        hp.Boolean("b")
        with hp.conditional_scope("b", [False, True]):
            assert hp.Int("c", 2, 5) == 2
    assert hp.values == {"a": False}


@pytest.mark.parametrize(("call", "message"), [
    (lambda hp: hp.Int("n", 5, 1), r"min_value = 5 > max_value = 1"),
    (lambda hp: hp.Float("x", 1.0, 0.5), r"min_value = 1.0 > max_value = 0.5"),
    (lambda hp: hp.Int("n", 1, 5, sampling="logarithmic"), r"sampling = 'logarithmic'; allowed: 'linear', 'log'"),
    (lambda hp: hp.Float("x", 0.0, 1.0, sampling="log"), r"with min_value = 0.0; allowed: min_value > 0"),
    (lambda hp: hp.Int("n", 1, 5, step=0), r"step = 0; allowed: a step > 0"),
    (lambda hp: hp.Int("n", 1, 64, step=1, sampling="log"), r"step = 1; allowed: a factor > 1 with log sampling"),
    (lambda hp: hp.Int("n", 1.5, 5), r"min_value = 1.5; allowed: an integer"),
    (lambda hp: hp.Float("x", 0.0, float("inf")), r"max_value = inf; allowed: a finite number"),
    (lambda hp: hp.Int("n", 1, 5, default=9), r"default = 9 is outside \[1, 5\]"),
    (lambda hp: hp.Choice("c", []), r"values = \[\]; allowed: a non-empty list"),
    (lambda hp: hp.Choice("c", [1, "a"]), r"allowed: values of one type"),
    (lambda hp: hp.Choice("c", [1, 2], default=3), r"default = 3 is not one of \[1, 2\]"),
    (lambda hp: hp.Boolean("b", default=1), r"default = 1; allowed: True or False"),
    (lambda hp: hp.Fixed("f", [1]), r"value = \[1\]; allowed: an int, float, str or bool"),
    (lambda hp: hp.Int("", 1, 2), r"non-empty string"),
    (lambda hp: hp.Int("n", 1, 2, parent_name="missing", parent_values=[1]),
     r"parent_name = 'missing' is not a defined hyperparameter"),
])
def test_bad_calls_raise_value_error(call: Any, message: str) -> None:
    hp = HyperParameters(optuna.create_study().ask())
    with pytest.raises(ValueError, match=message):
        call(hp)


def test_conditional_scope_needs_existing_parent() -> None:
    hp = HyperParameters(optuna.create_study().ask())
    with pytest.raises(ValueError, match="define the parent first"), hp.conditional_scope("model_type", ["cnn"]):
        pass


def test_space_lists_definitions_with_conditions() -> None:
    hp = HyperParameters(optuna.trial.FixedTrial({"opt": "sgd", "m": 0.5}))
    hp.Choice("opt", ["sgd", "adam"])
    hp.Float("m", 0.0, 0.9, parent_name="opt", parent_values="sgd")
    assert [d.name for d in hp.space] == ["opt", "m"]
    assert hp.space[1].conditions[0].parent_name == "opt" and hp.space[1].conditions[0].values == ("sgd",)


def test_float_log_with_step_and_default_is_not_part_of_the_definition() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    study.optimize(lambda t: HyperParameters(t).Float("lr", 1e-4, 1e-1, step=10, sampling="log"), n_trials=20)
    assert {t.params["lr"] for t in study.trials} <= {1e-4, 1e-4 * 10, 1e-4 * 100, 1e-4 * 1000}
    hp = HyperParameters(optuna.trial.FixedTrial({"n": 3}))
    assert hp.Int("n", 1, 5) == hp.Int("n", 1, 5, step=1, default=2) == 3  # step 1 is the linear default
