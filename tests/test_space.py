"""SearchSpace: parsing raw [search] values, sampling with Optuna, enqueue checks and grids."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from nnstudy.errors import SpecError
from nnstudy.space import (
    ACTIVATIONS,
    OPTIMIZERS,
    PARAMETERS,
    Choice,
    Fixed,
    Range,
    SearchSpace,
    did_you_mean,
)

DEFAULTS = {name: pdef.default for name, pdef in PARAMETERS.items()}


# --------------------------------------------------------------------------- parse


def test_parse_empty_search_gives_every_parameter_its_default() -> None:
    space = SearchSpace.parse({})
    assert set(space.dimensions) == set(PARAMETERS)
    assert space.dimensions == {name: Fixed(value) for name, value in DEFAULTS.items()}
    assert space.searched == []


def test_parse_fixed_value() -> None:
    space = SearchSpace.parse({"optimizer": "sgd", "units": 64, "learning_rate": 0.05})
    assert space.dimensions["optimizer"] == Fixed("sgd")
    assert space.dimensions["units"] == Fixed(64)
    assert space.dimensions["learning_rate"] == Fixed(0.05)
    assert space.dimensions["depth"] == Fixed(DEFAULTS["depth"])  # untouched parameter keeps its default
    assert space.searched == []


def test_parse_list_of_choices() -> None:
    space = SearchSpace.parse({"optimizer": ["adam", "sgd"], "batch_size": [16, 32, 64]})
    assert space.dimensions["optimizer"] == Choice(("adam", "sgd"))
    assert space.dimensions["batch_size"] == Choice((16, 32, 64))
    assert space.searched == ["optimizer", "batch_size"]


def test_parse_single_element_list_is_a_fixed_value() -> None:
    space = SearchSpace.parse({"activation": ["tanh"]})
    assert space.dimensions["activation"] == Fixed("tanh")
    assert "activation" not in space.searched


def test_parse_int_range_defaults_log_false_and_no_step() -> None:
    dim = SearchSpace.parse({"depth": {"low": 0, "high": 3}}).dimensions["depth"]
    assert dim == Range(low=0, high=3, log=False, step=None)


def test_parse_float_range_with_log_scale() -> None:
    dim = SearchSpace.parse({"learning_rate": {"low": 1e-4, "high": 1.0, "log": True}}).dimensions["learning_rate"]
    assert dim == Range(low=1e-4, high=1.0, log=True, step=None)


def test_parse_range_with_step() -> None:
    dims = SearchSpace.parse({"units": {"low": 8, "high": 64, "step": 8},
                              "dropout": {"low": 0.0, "high": 0.5, "step": 0.1}}).dimensions
    assert dims["units"] == Range(low=8, high=64, step=8)
    assert dims["dropout"] == Range(low=0.0, high=0.5, step=0.1)


def test_parse_float_range_accepts_integer_bounds() -> None:
    dim = SearchSpace.parse({"dropout": {"low": 0, "high": 0.5}}).dimensions["dropout"]
    assert isinstance(dim, Range) and dim.low == 0 and dim.high == 0.5


def test_parse_int_range_rejects_float_bounds() -> None:
    with pytest.raises(SpecError, match=r"\[search\]\.units\.high: 64\.5 has the wrong type; allowed: an integer"):
        SearchSpace.parse({"units": {"low": 8, "high": 64.5}})


def test_parse_low_equal_high_is_allowed() -> None:
    assert SearchSpace.parse({"depth": {"low": 2, "high": 2}}).dimensions["depth"] == Range(2, 2)


@pytest.mark.parametrize(("raw", "field", "words"), [
    ({"learning_rate": {"low": 1.0, "high": 0.1}}, "[search].learning_rate", "greater than high"),
    ({"depth": {"low": 0, "high": 3, "log": True}}, "[search].depth.low", "low > 0 on a log scale"),
    ({"units": {"low": 8, "high": 64, "step": 0}}, "[search].units.step", "> 0"),
    ({"units": {"low": 8, "high": 64, "step": 2.5}}, "[search].units.step", "an integer > 0"),
    ({"learning_rate": {"low": 1e-3, "high": 1.0, "log": True, "step": 0.1}}, "[search].learning_rate.step",
     "not both"),
    ({"units": {"low": 8, "high": 64, "log": "yes"}}, "[search].units.log", "true or false"),
    ({"units": {"low": 8, "hihg": 64}}, "[search].units.hihg", "did you mean 'high'"),
    ({"units": []}, "[search].units", "at least one value"),
    ({"optimizer": "adamm"}, "[search].optimizer", "did you mean 'adam'"),
    ({"activation": ["relu", "rellu"]}, "[search].activation[1]", "did you mean 'relu'"),
    ({"batch_size": 0}, "[search].batch_size", "an integer >= 1"),
    ({"depth": -1}, "[search].depth", "an integer >= 0"),
    ({"dropout": 1.0}, "[search].dropout", "[0, 1)"),
    ({"learning_rate": 0}, "[search].learning_rate", "a number > 0"),
    ({"learning_rate": math.inf}, "[search].learning_rate", "a finite number"),
    ({"units": True}, "[search].units", "wrong type"),
    ({"learnig_rate": 0.1}, "[search].learnig_rate", "did you mean 'learning_rate'"),
])
def test_parse_rejects_bad_values_naming_the_field(raw: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        SearchSpace.parse(raw, "study.toml")
    assert info.value.field == field
    assert words in str(info.value)
    assert str(info.value).startswith(f"study.toml: {field}: ")


def test_parse_accepts_every_known_optimizer_and_activation() -> None:
    space = SearchSpace.parse({"optimizer": list(OPTIMIZERS), "activation": list(ACTIVATIONS)})
    assert space.dimensions["optimizer"] == Choice(OPTIMIZERS)
    assert space.dimensions["activation"] == Choice(ACTIVATIONS)


# --------------------------------------------------------------------------- suggest

MIXED = {
    "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True},
    "optimizer": ["adam", "sgd"],
    "batch_size": [16, 32],
    "dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
    "depth": {"low": 0, "high": 3},
    "units": {"low": 8, "high": 64, "step": 8},
    "activation": "tanh",
}


def test_suggest_with_fixed_trial_returns_the_trial_values_and_fixed_ones() -> None:
    space = SearchSpace.parse(MIXED)
    trial = optuna.trial.FixedTrial({"learning_rate": 0.01, "optimizer": "sgd", "batch_size": 32,
                                     "dropout": 0.2, "depth": 1, "units": 24})
    params = space.suggest(trial)
    assert params == {"learning_rate": 0.01, "optimizer": "sgd", "batch_size": 32, "dropout": 0.2,
                      "depth": 1, "units": 24, "activation": "tanh"}
    assert isinstance(params["depth"], int) and isinstance(params["units"], int)
    assert isinstance(params["learning_rate"], float)


def test_suggest_does_not_ask_the_trial_for_fixed_parameters() -> None:
    space = SearchSpace.parse({"units": 16})
    params = space.suggest(optuna.trial.FixedTrial({}))  # FixedTrial raises for any parameter it is asked for
    assert params == {**DEFAULTS, "units": 16}


def test_suggest_with_fixed_trial_missing_a_searched_parameter_fails() -> None:
    space = SearchSpace.parse({"depth": {"low": 0, "high": 3}})
    with pytest.raises(ValueError, match="depth"):
        space.suggest(optuna.trial.FixedTrial({}))


def test_suggest_in_a_real_study_stays_inside_the_space() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = SearchSpace.parse(MIXED)
    seen: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        seen.append(params)
        return float(params["learning_rate"])

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=40)
    assert len(seen) == 40
    for p in seen:
        assert 1e-4 <= p["learning_rate"] <= 1e-1
        assert p["optimizer"] in ("adam", "sgd") and p["batch_size"] in (16, 32)
        assert 0.0 <= p["dropout"] <= 0.5 and round(p["dropout"] * 10, 6) == round(p["dropout"] * 10)
        assert type(p["depth"]) is int and 0 <= p["depth"] <= 3
        assert type(p["units"]) is int and p["units"] % 8 == 0 and 8 <= p["units"] <= 64
        assert p["activation"] == "tanh"
    # the trial records only the searched parameters
    assert set(study.trials[0].params) == set(MIXED) - {"activation"}
    # a log-uniform range puts about half of its samples below the geometric middle (1e-2.5)
    below = sum(p["learning_rate"] < 10**-2.5 for p in seen)
    assert 8 <= below <= 32
    assert {p["optimizer"] for p in seen} == {"adam", "sgd"}


# --------------------------------------------------------------------------- check_params


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace.parse(MIXED)


def test_check_params_accepts_values_inside_the_space(space: SearchSpace) -> None:
    space.check_params({"learning_rate": 1e-3, "optimizer": "adam", "depth": 3, "units": 64,
                        "activation": "tanh"}, "s.toml", "[[enqueue]][0]")
    space.check_params({}, "s.toml", "[[enqueue]][0]")  # an empty entry samples everything


@pytest.mark.parametrize(("params", "field", "words"), [
    ({"learning_rate": 0.5}, "[[enqueue]][0].learning_rate", "0.0001 <= value <= 0.1"),
    ({"depth": 4}, "[[enqueue]][0].depth", "0 <= value <= 3"),
    ({"optimizer": "rmsprop"}, "[[enqueue]][0].optimizer", "'adam', 'sgd'"),
    ({"activation": "relu"}, "[[enqueue]][0].activation", "'tanh' (fixed)"),
    ({"unit": 8}, "[[enqueue]][0].unit", "did you mean 'units'"),
    ({"depth": 1.0}, "[[enqueue]][0].depth", "wrong type"),
    ({"optimizer": "nope"}, "[[enqueue]][0].optimizer", "one of sgd, adam"),
])
def test_check_params_rejects_values_outside_the_space(space: SearchSpace, params: dict[str, Any], field: str,
                                                       words: str) -> None:
    with pytest.raises(SpecError) as info:
        space.check_params(params, "s.toml", "[[enqueue]][0]")
    assert info.value.field == field
    assert words in str(info.value)
    assert "allowed" in str(info.value)


# --------------------------------------------------------------------------- grid


def test_grid_lists_choices_and_stepped_ranges_and_skips_fixed() -> None:
    space = SearchSpace.parse({"optimizer": ["adam", "sgd"], "depth": {"low": 0, "high": 2},
                               "units": {"low": 8, "high": 32, "step": 8},
                               "dropout": {"low": 0.0, "high": 0.3, "step": 0.1}, "activation": "relu"})
    grid = space.grid()
    assert set(grid) == {"optimizer", "depth", "units", "dropout"}
    assert grid["optimizer"] == ["adam", "sgd"]
    assert grid["depth"] == [0, 1, 2]
    assert grid["units"] == [8, 16, 24, 32] and all(type(v) is int for v in grid["units"])
    assert grid["dropout"] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_grid_rejects_a_continuous_float_range() -> None:
    space = SearchSpace.parse({"learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}})
    with pytest.raises(SpecError, match=r"\[search\]\.learning_rate: a continuous range .*allowed"):
        space.grid("s.toml")


def test_grid_of_a_space_with_nothing_searched_is_empty() -> None:
    assert SearchSpace.parse({}).grid() == {}


# --------------------------------------------------------------------------- to_dict / helpers


def test_to_dict_parses_back_to_the_same_space() -> None:
    space = SearchSpace.parse(MIXED)
    again = SearchSpace.parse(space.to_dict())
    assert again == space
    assert space.to_dict()["learning_rate"] == {"low": 1e-4, "high": 1e-1, "log": True}
    assert space.to_dict()["units"] == {"low": 8, "high": 64, "log": False, "step": 8}


def test_did_you_mean_suggests_only_near_misses() -> None:
    assert did_you_mean("n_trial", ["n_trials", "seed"]) == " (did you mean 'n_trials'?)"
    assert did_you_mean("zzz", ["n_trials", "seed"]) == ""
