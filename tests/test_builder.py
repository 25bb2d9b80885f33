"""Loading and calling a user's model builder file, with real Keras and real Optuna trials."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import keras
import optuna
import pytest

from nnstudy.builder import (
    BuilderError,
    BuilderRef,
    ModelInfo,
    call_builder,
    is_compiled,
    load_builder,
    parse_builder_ref,
)
from nnstudy.errors import SpecError, UserInputError
from nnstudy.hyperparameters import HyperParameters

INFO = ModelInfo(input_shape=(5,), n_outputs=3, task="multiclass")
SPEC = "study.toml"


def write(folder: Path, name: str, code: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(code).lstrip("\n"), encoding="utf-8")
    return path


def load(folder: Path, code: str, ref: str = "models.py:build", **siblings: str) -> Any:
    for name, text in siblings.items():
        write(folder, f"{name}.py", text)
    write(folder, "models.py", code)
    return load_builder(parse_builder_ref(ref, folder, SPEC), SPEC)


def new_hp(params: dict[str, Any] | None = None) -> HyperParameters:
    if params is None:
        return HyperParameters(optuna.create_study().ask())
    return HyperParameters(optuna.trial.FixedTrial(params))


ONE_ARG = """
import keras

def build(hp):
    model = keras.Sequential([keras.Input((4,))])
    for i in range(hp.Int("layers", 1, 3)):
        model.add(keras.layers.Dense(hp.Int(f"units_{i}", 4, 16, step=4), activation="relu"))
    model.add(keras.layers.Dense(1, activation="sigmoid"))
    return model
"""


def test_one_argument_builder_in_a_study(tmp_path: Path) -> None:
    fn = load(tmp_path, ONE_ARG)
    study = optuna.create_study()
    for _ in range(3):
        trial = study.ask()
        model = call_builder(fn, HyperParameters(trial), INFO)
        assert isinstance(model, keras.Sequential) and not is_compiled(model)
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        assert len(dense) == trial.params["layers"] + 1
        assert [d.units for d in dense[:-1]] == [trial.params[f"units_{i}"] for i in range(len(dense) - 1)]
        study.tell(trial, 0.0)


def test_two_argument_builder_gets_model_info_and_may_compile(tmp_path: Path) -> None:
    fn = load(tmp_path, """
        import keras

        def build(hp, info):
            model = keras.Sequential([keras.Input(info.input_shape),
                                      keras.layers.Dense(hp.Choice("units", [8, 16])),
                                      keras.layers.Dense(info.n_outputs, activation="softmax")])
            model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-2, sampling="log")),
                          loss="sparse_categorical_crossentropy")
            return model
    """)
    model = call_builder(fn, new_hp({"units": 16, "lr": 0.001}), INFO)
    assert is_compiled(model)
    assert model.input_shape == (None, 5) and model.output_shape == (None, 3)
    assert model.layers[0].units == 16


def test_builder_imports_a_sibling_module(tmp_path: Path) -> None:
    fn = load(tmp_path, """
        import keras
        from blocks_for_nnstudy_test import hidden

        def build(hp):
            return keras.Sequential([keras.Input((2,)), hidden(hp), keras.layers.Dense(1)])
    """, blocks_for_nnstudy_test="""
        import keras

        def hidden(hp):
            return keras.layers.Dense(hp.Int("units", 2, 4))
    """)
    assert str(tmp_path) not in sys.path  # only on sys.path while importing and building
    model = call_builder(fn, new_hp({"units": 3}), INFO)
    assert model.layers[0].units == 3 and str(tmp_path) not in sys.path


@pytest.mark.parametrize(("ref", "message"), [
    ("models.py", r"'models.py' is not of the form FILE.py:FUNCTION"),
    ("models.py:", r"is not of the form FILE.py:FUNCTION"),
    ("models.py:2build", r"is not of the form FILE.py:FUNCTION"),
    ("models.txt:build", r"names 'models.txt', not a .py file"),
    ("missing.py:build", r"'missing.py:build': file '.*missing.py' does not exist"),
    ("pkg.py:build", r"is not a regular file"),
])
def test_bad_references(tmp_path: Path, ref: str, message: str) -> None:
    (tmp_path / "models.txt").write_text("")
    (tmp_path / "pkg.py").mkdir()
    with pytest.raises(SpecError, match=r"^study.toml: \[model\].builder: .*" + message):
        parse_builder_ref(ref, tmp_path, SPEC)


def test_reference_resolves_against_the_spec_folder(tmp_path: Path) -> None:
    write(tmp_path, "models.py", ONE_ARG)
    ref = parse_builder_ref("models.py:build", tmp_path, SPEC)
    assert ref == BuilderRef(path=(tmp_path / "models.py").resolve(), function="build")


def test_missing_function_suggests_and_lists(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"defines no 'buidl' \(did you mean 'build'\?\); allowed: build, helper"):
        load(tmp_path, ONE_ARG + "\ndef helper():\n    pass\n", ref="models.py:buidl")


def test_not_callable_and_bad_signature(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"'models.py:build' is a int, not a function"):
        load(tmp_path, "build = 3\n")
    with pytest.raises(BuilderError, match=r"models.py:1: build\(hp, info, extra\) cannot be called"):
        load(tmp_path, "def build(hp, info, extra):\n    pass\n")


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(BuilderError, match=r"models.py:3: SyntaxError: .* \(while importing the builder\)") as err:
        load(tmp_path, "import keras\n\ndef build(hp)\n    pass\n")
    assert isinstance(err.value, UserInputError) and err.value.line == 3
    assert "\n" not in str(err.value)


def test_exception_at_import_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(BuilderError, match=r"models.py:4: ZeroDivisionError: division by zero") as err:
        load(tmp_path, "import keras\n\nSCALE = 2\nRATE = SCALE / 0\n\ndef build(hp):\n    pass\n")
    assert "nnstudy" not in str(err.value)
    assert not any(name.startswith("_nnstudy_builder_") and name.endswith("_models") and
                   getattr(mod, "__file__", "") == str(tmp_path / "models.py") for name, mod in sys.modules.items())


def test_exception_inside_build_names_the_deepest_user_line(tmp_path: Path) -> None:
    fn = load(tmp_path, """
        import keras

        def layer(units):
            return keras.layers.Dense(units // 0)

        def build(hp):
            return keras.Sequential([layer(hp.Int("units", 1, 4))])
    """)
    with pytest.raises(BuilderError) as err:
        call_builder(fn, new_hp({"units": 2}), INFO)
    message = str(err.value)
    assert message == f"{(tmp_path / 'models.py').resolve()}:4: ZeroDivisionError: integer division or modulo by zero (in build())"
    assert "nnstudy" not in message.replace(str(tmp_path), "")


def test_keras_error_and_hp_misuse_inside_build(tmp_path: Path) -> None:
    fn = load(tmp_path, """
        import keras

        def build(hp):
            units = hp.Int("units", 8, 4)
            return keras.Sequential([keras.layers.Dense(units)])
    """)
    with pytest.raises(BuilderError, match=r"models.py:4: ValueError: Int 'units': min_value = 8 > max_value = 4"):
        call_builder(fn, new_hp(), INFO)
    fn = load(tmp_path, """
        import keras

        def build(hp):
            return keras.Sequential([keras.layers.Dense(-3)])
    """)
    with pytest.raises(BuilderError, match=r"models.py:4: ValueError: .*units"):
        call_builder(fn, new_hp(), INFO)


@pytest.mark.parametrize(("body", "what"), [
    ("inputs = keras.Input((3,))\n    return keras.Model(inputs, keras.layers.Dense(1)(inputs))",
     r"returned a Functional model \(keras.src.models.functional.Functional\)"),
    ("return 42", r"returned 42 \(builtins.int\)"),
    ("pass", r"returned None"),
])
def test_non_sequential_results_are_refused(tmp_path: Path, body: str, what: str) -> None:
    fn = load(tmp_path, f"import keras\n\ndef build(hp):\n    {body}\n")
    with pytest.raises(BuilderError, match=r"models.py:3: build\(\) " + what
                       + r"; allowed: a keras.Sequential model, compiled or not"):
        call_builder(fn, new_hp(), INFO)


def test_trial_pruned_passes_through(tmp_path: Path) -> None:
    fn = load(tmp_path, "import optuna\n\ndef build(hp):\n    raise optuna.TrialPruned()\n")
    with pytest.raises(optuna.TrialPruned):
        call_builder(fn, new_hp(), INFO)


def test_optional_second_parameter_and_varargs(tmp_path: Path) -> None:
    fn = load(tmp_path, """
        import keras

        def build(hp, *rest):
            assert rest and rest[0].task == "multiclass"
            return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    """)
    assert isinstance(call_builder(fn, new_hp(), INFO), keras.Sequential)
