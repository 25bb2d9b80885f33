"""Layer templates: parsing [model].layers, building real Keras layers, limits and reproducibility."""

from __future__ import annotations

import json
import time
import tomllib
from typing import Any

import keras
import numpy as np
import pytest

from nnstudy.errors import SpecError
from nnstudy.layers import MAX_NESTING, LayerTemplate, _estimate, parse_layers, refused_types

EXAMPLE = """
[model]
layers = [
  { type = "Conv2D", filters = "$filters", kernel_size = "$kernel", activation = "relu", padding = "same" },
  { type = "MaxPooling2D", pool_size = 2 },
  { type = "Flatten" },
  { repeat = "$depth", layers = [
      { type = "Dense", units = "$units", activation = "relu", kernel_regularizer = { l2 = "$l2" } },
      { type = "BatchNormalization" },
      { type = "Dropout", rate = "$dropout" },
  ] },
]
"""
PARAMS = {"filters": 8, "kernel": 3, "depth": 2, "units": 16, "l2": 1e-4, "dropout": 0.2}


def example() -> LayerTemplate:
    return parse_layers(tomllib.loads(EXAMPLE)["model"]["layers"], "spec.toml")


def error(raw: Any, params: dict[str, Any] | None = None, shape: tuple[int, ...] = (4,), **kw: Any) -> str:
    """The message of the SpecError that parsing (and, with params, building) raises."""
    with pytest.raises(SpecError) as info:
        template = parse_layers(raw, "spec.toml")
        if params is not None:
            template.build(params, shape, file="spec.toml", **kw)
    message = str(info.value)
    assert "\n" not in message and message.startswith("spec.toml: ")
    return message


# --------------------------------------------------------------------------- parse


def test_example_builds_with_repeat_expanded() -> None:
    layers = example().build(PARAMS, (8, 8, 1), file="spec.toml")
    assert [type(layer).__name__ for layer in layers] == [
        "Conv2D", "MaxPooling2D", "Flatten",
        "Dense", "BatchNormalization", "Dropout", "Dense", "BatchNormalization", "Dropout"]
    assert layers[0].filters == 8 and layers[0].kernel_size == (3, 3)
    assert layers[3].units == 16 and isinstance(layers[3].kernel_regularizer, keras.regularizers.L2)
    assert layers[5].rate == 0.2


def test_references_and_round_trip() -> None:
    template = example()
    assert template.references() == {"filters", "kernel", "depth", "units", "l2", "dropout"}
    raw = template.to_list()
    assert raw == tomllib.loads(EXAMPLE)["model"]["layers"]
    assert parse_layers(json.loads(json.dumps(raw)), "spec.toml") == template
    assert hash(template) == hash(parse_layers(raw, "spec.toml"))


@pytest.mark.parametrize(("name", "suggestion"), [("Dense2", "Dense"), ("Conv2d", "Conv2D"), ("LTSM", "LSTM")])
def test_unknown_type_suggests(name: str, suggestion: str) -> None:
    message = error([{"type": "Flatten"}, {"type": name}])
    assert f"[model].layers[1].type: '{name}' is not a keras.layers class (did you mean '{suggestion}'?)" in message


def test_unknown_type_inside_repeat_names_the_nested_field() -> None:
    message = error([{"type": "Flatten"}, {"repeat": 2, "layers": [{"type": "Dens", "units": 3}]}])
    assert "[model].layers[1].layers[0].type" in message and "'Dense'" in message


@pytest.mark.parametrize("name", ["Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "InputLayer", "Input",
                                  "RNN", "Layer", "Bidirectional", "Add"])
def test_code_running_and_unusable_types_are_refused(name: str) -> None:
    message = error([{"type": name}])
    assert f"[model].layers[0].type: '{name}' is refused: it {refused_types()[name]}" in message
    assert "arbitrary Python code" in refused_types()["Lambda"]


def test_unknown_argument_lists_the_allowed_ones() -> None:
    message = error([{"type": "Dense", "unit": 4}])
    assert "[model].layers[0].unit: unknown argument of Dense (did you mean 'units'?)" in message
    assert "allowed: units, activation, use_bias" in message and "name, dtype, trainable" in message
    assert "adds the input" in error([{"type": "Dense", "units": 4, "input_shape": [3]}])


def test_regularizer_initializer_and_constraint_tables() -> None:
    assert "[model].layers[0].kernel_regularizer.l3: unknown key; allowed: l1, l2" in error(
        [{"type": "Dense", "units": 4, "kernel_regularizer": {"l3": 0.1}}])
    assert "Keras serialization tables are refused" in error(
        [{"type": "Dense", "units": 4, "kernel_initializer": {"class_name": "HeNormal", "config": {}}}])
    assert "[model].layers[0].kernel_initializer.type: 'HeNormall' is not a keras.initializers class " \
           "(did you mean 'HeNormal'?)" in error(
               [{"type": "Dense", "units": 4, "kernel_initializer": {"type": "HeNormall"}}])
    assert "[model].layers[0].kernel_constraint.max_valu: unknown key (did you mean 'max_value'?)" in error(
        [{"type": "Dense", "units": 4, "kernel_constraint": {"type": "MaxNorm", "max_valu": 3}}])
    assert "a table only for *_initializer" in error([{"type": "Dense", "units": {"low": 1}}])
    template = parse_layers([{"type": "Dense", "units": 4, "kernel_regularizer": {"l1": "$a", "l2": 0.01},
                              "bias_initializer": {"type": "Constant", "value": "$b"},
                              "kernel_constraint": {"type": "MaxNorm", "max_value": 3}}], "spec.toml")
    assert template.references() == {"a", "b"}
    dense = template.build({"a": 0.1, "b": 0.5}, (3,))[0]
    assert isinstance(dense.kernel_regularizer, keras.regularizers.L1L2)
    assert isinstance(dense.kernel_constraint, keras.constraints.MaxNorm)
    np.testing.assert_allclose(dense.bias.numpy(), [0.5] * 4)


def test_initializer_as_string_and_table() -> None:
    for init in ("he_normal", {"type": "HeNormal", "seed": 3}):
        dense = parse_layers([{"type": "Dense", "units": 4, "kernel_initializer": init}], "s").build({}, (3,))[0]
        assert isinstance(dense.kernel_initializer, keras.initializers.HeNormal)


def test_kernel_size_as_a_list_and_nested_padding() -> None:
    layers = parse_layers([{"type": "ZeroPadding2D", "padding": [[1, 1], [2, 2]]},
                           {"type": "Conv2D", "filters": 2, "kernel_size": [3, "$k"]}], "s").build({"k": 1}, (6, 6, 1))
    assert layers[1].kernel_size == (3, 1) and tuple(layers[1].output.shape) == (None, 6, 10, 2)


@pytest.mark.parametrize(("raw", "where"), [
    ([], "[model].layers: [] is not allowed; allowed: a non-empty list"),
    (["Dense"], "[model].layers[0]: 'Dense' is not a table"),
    ([{"units": 3}], "[model].layers[0]: lacks 'type'"),
    ([{"repeat": -1, "layers": [{"type": "Flatten"}]}], "[model].layers[0].repeat: -1 is not allowed"),
    ([{"repeat": 2, "layers": []}], "[model].layers[0].layers: [] is not allowed"),
    ([{"repeat": 2, "layer": []}], "[model].layers[0].layer: unknown key of a repeat block (did you mean 'layers'?)"),
    ([{"type": "Dense", "units": "$3"}], "[model].layers[0].units: '$3' is not a reference"),
    ([{"type": "$kind"}], "[model].layers[0].type: '$kind' is not allowed"),
    ([{"type": "Reshape", "target_shape": [[[[[1]]]]]}],
     ("target_shape[0][0][0][0]: [1] is not allowed; allowed: lists nested at most 4 deep")),
    ([{"type": "Dense", "units": float("nan")}], "[model].layers[0].units: nan is not allowed; allowed: a finite"),
    ([{"type": "Dense", "units": 2, "kernel_initializer": {"seed": 1}}],
     "kernel_initializer: {'seed': 1} lacks 'type'; allowed: a name such as \"he_normal\""),
])
def test_structure_errors(raw: Any, where: str) -> None:
    assert where in error(raw)


def test_deeply_nested_repeats_are_refused() -> None:
    raw: list[Any] = [{"type": "Flatten"}]
    for _ in range(MAX_NESTING + 1):
        raw = [{"repeat": 1, "layers": raw}]
    assert f"nested too deep; allowed: at most {MAX_NESTING} levels" in error(raw)
    for _ in range(5000):  # far beyond Python's recursion limit: still a SpecError
        raw = [{"repeat": 1, "layers": raw}]
    assert "nested too deep" in error(raw)


# --------------------------------------------------------------------------- build


def test_missing_reference_names_field_and_reference() -> None:
    message = error([{"type": "Dense", "units": "$units"}], {"depth": 2})
    assert "[model].layers[0].units: '$units' refers to no parameter; allowed: a [search] parameter (depth)" in message
    assert "[model].layers[0].repeat: '$n' refers to no parameter" in error(
        [{"repeat": "$n", "layers": [{"type": "Flatten"}]}], {})


def test_wrong_values_give_one_line_spec_errors() -> None:
    message = error([{"type": "Dense", "units": "abc"}], {})
    assert "[model].layers[0]: Dense cannot be made from its arguments: Received an invalid value for `units`" \
        in message and "allowed: units, activation" in message
    assert "Expected a float value between 0 and 1" in error([{"type": "Dropout", "rate": 2.0}], {})
    assert "[model].layers[0].kernel_regularizer" in error(
        [{"type": "Dense", "units": 2, "kernel_regularizer": {"l2": "x"}}], {})
    assert "[model].layers[0].repeat: 2.5 is not allowed; allowed: an integer >= 0" in error(
        [{"repeat": "$d", "layers": [{"type": "Flatten"}]}], {"d": 2.5})
    assert "[model].layers[0].layers[0]: Conv1D (repeat 3 of 4) does not fit its input of shape (None, 1, 2)" in error(
        [{"repeat": 4, "layers": [{"type": "Conv1D", "filters": 2, "kernel_size": 3}]}], {}, (5, 1))


def test_shape_error_names_the_layer() -> None:
    message = error([{"type": "Conv2D", "filters": 4, "kernel_size": 3}], {}, (4,))
    assert "[model].layers[0]: Conv2D does not fit its input of shape (None, 4)" in message
    assert "expected min_ndim=4" in message


def test_duplicate_names_are_refused() -> None:
    message = error([{"repeat": 2, "layers": [{"type": "Dense", "units": 2, "name": "same"}]}], {})
    assert "[model].layers[0].layers[0].name: 'same' is taken (by an earlier layer or by nnstudy: features, output)" \
        in message
    assert "'output' is taken" in error([{"type": "Dense", "units": 2, "name": "$n"}], {"n": "output"})


def test_huge_dense_is_refused_before_allocating() -> None:
    start = time.monotonic()
    message = error([{"type": "Dense", "units": 10**6}, {"type": "Dense", "units": 10**6}], {}, (10**4,))
    assert time.monotonic() - start < 5
    assert "[model].layers[0]: Dense brings the model to 10,001,000,000 weights, over the limit of 50,000,000" \
        in message and "allowed: at most 50,000,000 weights" in message
    assert "over the limit of 1,000" in error(
        [{"type": "Conv2D", "filters": 64, "kernel_size": 3}], {}, (8, 8, 3), max_params=1_000)
    assert "LSTM brings the model to 4,080" in error([{"type": "LSTM", "units": 20}], {}, (5, 30), max_params=1_000)
    einsum = [{"type": "EinsumDense", "equation": "ab,bc->ac", "output_shape": 400}]  # no estimate: counted after
    assert "EinsumDense brings the model to 4,000 weights" in error(einsum, {}, (10,), max_params=1_000)


def test_estimates_match_keras_counts() -> None:
    raw: list[dict[str, Any]] = [
        {"type": "Conv2D", "filters": 4, "kernel_size": [3, 2]},
        {"type": "SeparableConv2D", "filters": 3, "kernel_size": 3, "depth_multiplier": 2},
        {"type": "DepthwiseConv2D", "kernel_size": 2},
        {"type": "Conv2DTranspose", "filters": 2, "kernel_size": 3, "use_bias": False},
        {"type": "Conv2D", "filters": 4, "kernel_size": 1, "groups": 2},
        {"type": "Reshape", "target_shape": [-1, 4]},
        {"type": "GRU", "units": 3, "return_sequences": True},
        {"type": "LSTM", "units": 2, "return_sequences": True},
        {"type": "SimpleRNN", "units": 2},
        {"type": "Dense", "units": 5},
        {"type": "Embedding", "input_dim": 7, "output_dim": 3},
        {"type": "Reshape", "target_shape": [5, 3, 1]},
        {"type": "ConvLSTM1D", "filters": 2, "kernel_size": 2},
    ]
    layers = parse_layers(raw, "s").build({}, (9, 9, 2))
    for layer, spec in zip(layers, raw):
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        expected = 0 if spec["type"] == "Reshape" else layer.count_params()
        assert _estimate(spec["type"], kwargs, tuple(layer.input.shape)) == expected, spec["type"]
        assert expected > 0 or spec["type"] == "Reshape"
    total = sum(layer.count_params() for layer in layers)
    assert "over the limit" in error(raw, {}, (9, 9, 2), max_params=total - 1)
    assert len(parse_layers(raw, "s").build({}, (9, 9, 2), max_params=total)) == len(raw)


def test_too_many_layers_are_refused_instantly() -> None:
    start = time.monotonic()
    message = error([{"repeat": 100_000, "layers": [{"type": "Dense", "units": 2}]}], {})
    assert "[model].layers: 100,000 layers after expanding repeats exceed the limit of 500" in message
    nested = [{"repeat": 10**6, "layers": [{"repeat": 10**6, "layers": [{"type": "Flatten"}]}]}]
    assert "1,000,000,000,000 layers" in error(nested, {})
    empty = [{"repeat": 10**9, "layers": [{"repeat": 0, "layers": [{"type": "Flatten"}]}]}]
    assert parse_layers(empty, "s").build({}, (3,)) == []
    assert time.monotonic() - start < 5


def test_same_seed_gives_the_same_weights() -> None:
    def weights() -> list[np.ndarray]:
        keras.utils.set_random_seed(7)
        layers = example().build(PARAMS, (8, 8, 1))
        model = keras.Sequential([keras.Input(shape=(8, 8, 1)), *layers, keras.layers.Dense(1)])
        assert model.layers[0] is layers[0]  # reused as built, not rebuilt
        return [w.numpy() for w in model.weights]

    first, second = weights(), weights()
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    keras.utils.set_random_seed(8)
    other = example().build(PARAMS, (8, 8, 1))[0].kernel.numpy()
    assert not np.array_equal(other, first[0])
