"""The built-in MLP: layers per depth and dropout, the output per task, compiling, the size checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import optuna
import pytest

from nnstudy.errors import SpecError
from nnstudy.model import (
    OUTPUTS,
    ModelFactory,
    build_model,
    check_model,
    compile_model,
    make_optimizer,
    model_summary,
    n_outputs,
)
from nnstudy.spec import StudySpec

PARAMS = {"depth": 1, "units": 8, "activation": "relu", "dropout": 0.0, "learning_rate": 0.01, "optimizer": "adam",
          "batch_size": 32}


def _kinds(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize(("depth", "dropout", "kinds"), [
    (0, 0.0, ["Dense"]),
    (2, 0.0, ["Dense", "Dense", "Dense"]),
    (2, 0.3, ["Dense", "Dropout", "Dense", "Dropout", "Dense"]),
])
def test_layers_follow_depth_and_dropout(depth: int, dropout: float, kinds: list[str]) -> None:
    model = build_model({**PARAMS, "depth": depth, "dropout": dropout}, n_features=3, task="binary")
    assert _kinds(model) == kinds
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [dropout] * (
        depth if dropout else 0)
    hidden = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][:-1]
    assert all(layer.units == 8 and layer.activation.__name__ == "relu" for layer in hidden)


@pytest.mark.parametrize(("task", "n_classes"), [("binary", 1), ("multiclass", 4), ("regression", 1)])
def test_output_layer_follows_the_task(task: str, n_classes: int) -> None:
    model = build_model(PARAMS, n_features=5, task=task, n_classes=n_classes)
    output = model.layers[-1]
    assert output.name == "output" and output.units == n_outputs(task, n_classes)
    assert output.activation.__name__ == OUTPUTS[task][0]
    assert model.output_shape == (None, n_classes if task == "multiclass" else 1)


def test_output_bias_starts_from_the_base_rate() -> None:
    binary = build_model(PARAMS, n_features=2, task="binary", target_mean=0.2)
    assert float(binary.layers[-1].bias.numpy()[0]) == pytest.approx(math.log(0.2 / 0.8))
    regression = build_model(PARAMS, n_features=2, task="regression", target_mean=55.0)
    assert float(regression.layers[-1].bias.numpy()[0]) == pytest.approx(55.0)
    pure = build_model(PARAMS, n_features=2, task="binary", target_mean=1.0)  # log-odds of 1 is infinite
    assert float(pure.layers[-1].bias.numpy()[0]) == 0.0


def test_inputs_of_several_axes_are_flattened() -> None:
    model = build_model(PARAMS, n_features=(8, 8, 1), task="multiclass", n_classes=10)
    assert _kinds(model)[0] == "Flatten" and model.input_shape == (None, 8, 8, 1)
    assert model.predict(np.zeros((2, 8, 8, 1), dtype=np.float32), verbose=0).shape == (2, 10)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta"])
def test_optimizers_by_name_get_the_learning_rate(name: str) -> None:
    optimizer = make_optimizer(name, 0.125)
    assert type(optimizer).__name__.lower() == name and float(optimizer.learning_rate.numpy()) == 0.125


def test_compile_uses_the_task_loss_and_steps_per_execution() -> None:
    model = build_model(PARAMS, n_features=2, task="regression")
    compile_model(model, {**PARAMS, "optimizer": "sgd", "learning_rate": 0.5}, task="regression",
                  steps_per_execution=7)
    assert model.loss == "mean_squared_error" and model.steps_per_execution == 7
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate.numpy()) == 0.5


def test_factory_builds_the_same_weights_for_the_same_seed(tiny_spec: Callable[..., StudySpec]) -> None:
    factory = ModelFactory(tiny_spec(), (2,), "binary")
    assert factory.kind == "mlp"
    trial = optuna.trial.FixedTrial(PARAMS)
    a, b = (factory.build(PARAMS, trial, seed=3) for _ in range(2))
    c = factory.build(PARAMS, trial, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    assert a.optimizer is not None and "nnstudy_mlp" in model_summary(a)


def test_check_model_reports_the_largest_configuration(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(search={"depth": {"low": 1, "high": 3}, "units": [4, 16]})
    info: dict[str, Any] = check_model(spec, (2,), "binary", 1, np.zeros((3, 2), dtype=np.float32))
    assert info["kind"] == "mlp" and info["checked_params"]["depth"] == 3 and info["checked_params"]["units"] == 16
    assert info["layers"] == 4  # three hidden Dense layers and the output
    assert info["n_params"] == (2 + 1) * 16 + 2 * (16 + 1) * 16 + (16 + 1)


def test_check_model_refuses_too_many_layers(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(search={"depth": 6, "dropout": 0.1}, model={"max_layers": 12})
    with pytest.raises(SpecError, match=r"\[search\]\.depth: depth 6 makes 13 layers, over the limit of 12"):
        check_model(spec, (2,), "binary", 1, np.zeros((3, 2), dtype=np.float32))


@pytest.mark.parametrize(("task", "n_classes"), [
    ("multiclass", 10),
    ("binary", 1),
    ("regression", 1),
])
def test_check_model_accepts_a_model_exactly_at_max_params(tiny_spec: Callable[..., StudySpec], task: str,
                                                            n_classes: int) -> None:
    real = build_model({**PARAMS, "depth": 2, "units": 16}, n_features=2, task=task, n_classes=n_classes)
    x = np.zeros((3, 2), dtype=np.float32)
    exact = tiny_spec(search={"depth": 2, "units": 16}, model={"max_params": real.count_params()})
    assert check_model(exact, (2,), task, n_classes, x)["n_params"] == real.count_params()
    smaller = tiny_spec(search={"depth": 2, "units": 16}, model={"max_params": real.count_params() - 1})
    with pytest.raises(SpecError, match=r"\[search\]\.units: .* over the limit"):
        check_model(smaller, (2,), task, n_classes, x)


def test_a_space_whose_largest_model_cannot_be_built_is_accepted_with_a_warning(tiny_spec: Callable[..., StudySpec]) -> None:
    layers = [{"type": "Reshape", "target_shape": [2, 1]}, {"type": "Conv1D", "filters": 4, "kernel_size": "$k"},
              {"type": "Flatten"}]
    spec = tiny_spec(search={"k": [1, 3]}, model={"layers": layers})
    x = np.zeros((2, 2), dtype=np.float32)
    summary = check_model(spec, (2,), "binary", 1, x)
    assert summary["checked_params"]["k"] == 1  # the smallest configuration builds
    assert "largest configuration cannot be built" in summary["warning"] and "Conv1D" in summary["warning"]
    too_big = tiny_spec(search={"k": [3, 5]}, model={"layers": layers})
    with pytest.raises(SpecError, match=r"\[model\]\.layers\[1\]: Conv1D does not fit"):
        check_model(too_big, (2,), "binary", 1, x)  # no configuration builds: refused
