"""The model builder: a compiled Keras Sequential network for one configuration, made one of
three ways. Knows nothing of Optuna's studies or MLflow.

* the built-in MLP (no ``[model]``): ``input -> depth x [Dense(units, activation) -> Dropout(dropout)]
  -> output``;
* ``[model].layers``: the user's layers (:mod:`nnstudy.layers`) between the input and the output;
* ``[model].builder``: the user's Keras-Tuner-style ``build(hp)`` (:mod:`nnstudy.builder`), its
  ``hp`` backed by the trial (:mod:`nnstudy.hyperparameters`).

The output layer and loss follow the task: sigmoid + binary cross-entropy, softmax + sparse
categorical cross-entropy, or linear + mean squared error.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import keras

from nnstudy.compiled import CompiledModels, kernels_kept

if TYPE_CHECKING:
    import optuna

    from nnstudy.layers import LayerTemplate
    from nnstudy.spec import StudySpec

OUTPUTS: dict[str, tuple[str, str, list[str]]] = {
    # task: (output activation, loss, metrics)
    "binary": ("sigmoid", "binary_crossentropy", ["accuracy"]),
    "multiclass": ("softmax", "sparse_categorical_crossentropy", ["accuracy"]),
    "regression": ("linear", "mean_squared_error", ["mae"]),
}

_OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "nadam": keras.optimizers.Nadam,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
}


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """An optimizer by name (``sgd``, ``adam``, ``rmsprop``, ``adagrad``, ``adadelta``, ...)."""
    return _OPTIMIZERS[name](learning_rate=learning_rate)


def n_outputs(task: str, n_classes: int) -> int:
    """Units of the output layer: the class count for multiclass, else 1."""
    return n_classes if task == "multiclass" else 1


def output_layer(task: str, n_classes: int, target_mean: float | None) -> keras.layers.Dense:
    """The task's output layer. ``target_mean`` initialises its bias (the mean for regression, the
    log-odds of the positive class for binary), so training starts from the base rate."""
    activation, _, _ = OUTPUTS[task]
    bias: Any = "zeros"
    if target_mean is not None and task == "regression":
        bias = keras.initializers.Constant(target_mean)
    elif target_mean is not None and task == "binary" and 0.0 < target_mean < 1.0:
        bias = keras.initializers.Constant(math.log(target_mean / (1.0 - target_mean)))
    return keras.layers.Dense(n_outputs(task, n_classes), activation=activation, bias_initializer=bias, name="output")


def build_model(params: dict[str, Any], *, n_features: int | tuple[int, ...], task: str, n_classes: int = 1,
                target_mean: float | None = None) -> keras.Sequential:
    """Build (not compile) the built-in MLP for one configuration (inputs of more than one axis,
    such as images, are flattened first)."""
    shape = (n_features,) if isinstance(n_features, int) else tuple(n_features)
    layers: list[keras.layers.Layer] = [keras.Input(shape=shape, name="features")]
    if len(shape) > 1:
        layers.append(keras.layers.Flatten(name="flatten"))
    for i in range(int(params["depth"])):
        layers.append(keras.layers.Dense(int(params["units"]), activation=params["activation"], name=f"dense_{i + 1}"))
        if params["dropout"] > 0:
            layers.append(keras.layers.Dropout(float(params["dropout"]), name=f"dropout_{i + 1}"))
    layers.append(output_layer(task, n_classes, target_mean))
    return keras.Sequential(layers, name="nnstudy_mlp")


def compile_model(model: keras.Model, params: dict[str, Any], *, task: str, steps_per_execution: int = 1,
                  optimizer: keras.optimizers.Optimizer | None = None, loss: Any = None) -> None:
    """Compile with the optimizer and learning rate of ``params`` (or the given ``optimizer`` and
    ``loss``, those of a builder's compiled model) and the task's loss and metrics."""
    _, task_loss, metrics = OUTPUTS[task]
    model.compile(
        optimizer=optimizer or make_optimizer(str(params["optimizer"]), float(params["learning_rate"])),
        loss=loss or task_loss,
        metrics=metrics,
        steps_per_execution=steps_per_execution,
    )


@dataclass
class ModelFactory:
    """Makes the compiled model of each trial the spec's way (see the module docstring); with
    ``[train].reuse_compiled`` the model of an earlier trial of the same shapes, holding the state this
    trial's own model was built with (:mod:`nnstudy.compiled`), given back by :meth:`give_back`."""

    spec: StudySpec
    input_shape: tuple[int, ...]
    task: str
    n_classes: int = 1
    target_mean: float | None = None
    _template: LayerTemplate | None = field(default=None, init=False)
    _builder: Callable[..., Any] | None = field(default=None, init=False)
    #: the parameters of the last model built: the [search] values it used, plus a builder's ``hp.values``
    last_params: dict[str, Any] = field(default_factory=dict, init=False)
    #: whether the last model built is an earlier trial's compiled model ([train].reuse_compiled)
    last_reused: bool = field(default=False, init=False)
    compiled: CompiledModels | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.spec.train.reuse_compiled:
            self.compiled = CompiledModels()
        model = self.spec.model
        if model.layers is not None:
            self._template = self.spec.layer_template()
        elif model.builder is not None:
            from nnstudy.builder import load_builder

            self._builder = load_builder(self.spec.builder_ref(), self.spec.path)

    @property
    def kind(self) -> str:
        return "layers" if self._template else "builder" if self._builder else "mlp"

    def build(self, params: dict[str, Any], trial: optuna.Trial | optuna.trial.FixedTrial, *, seed: int,
              steps_per_execution: int = 1) -> keras.Model:
        """Seed Keras, build and compile one trial's model (a builder asks ``trial`` for its parameters)."""
        # (reused traces keep their instantiated kernels: see kernels_kept)
        with kernels_kept() if self.compiled is not None else contextlib.nullcontext():
            keras.backend.clear_session(free_memory=False)  # the study runs gc.collect() once after each trial
            keras.utils.set_random_seed(seed)
        compiled_with: tuple[Any, Any] = (None, None)
        self.last_params = dict(params)
        if self._template is not None:
            body = self._template.build(params, self.input_shape, file=self.spec.path,
                                        max_layers=self.spec.model.max_layers, max_params=self.spec.model.max_params)
            model = keras.Sequential([keras.Input(shape=self.input_shape, name="features"), *body,
                                      output_layer(self.task, self.n_classes, self.target_mean)], name="nnstudy_layers")
            self._check_output(model)
        elif self._builder is not None:
            from nnstudy.builder import is_compiled
            from nnstudy.spec import BUILDER_SEARCH

            model, asked = self._from_builder(trial)
            # a builder's model uses [search] only for the optimizer and batches; its hp values win
            own = {k: params[k] for k in BUILDER_SEARCH}
            if is_compiled(model):  # its own optimizer and learning rate are what trains it: record those
                compiled_with = (model.optimizer, model.loss)
                own["optimizer"] = type(model.optimizer).__name__.lower()
                own["learning_rate"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
            self.last_params = {**own, **asked}
            params = self.last_params

        else:
            model = build_model(params, n_features=self.input_shape, task=self.task, n_classes=self.n_classes,
                                target_mean=self.target_mean)
        compile_model(model, params, task=self.task, steps_per_execution=steps_per_execution,
                      optimizer=compiled_with[0], loss=compiled_with[1])
        self.last_reused = False
        if self.compiled is not None:  # an earlier trial's traced model of these shapes, given this one's state
            model, self.last_reused = self.compiled.lend(model)
        return model

    def give_back(self, keep: bool = True) -> None:
        """The trial has ended: the compiled models it trained may serve later trials (``keep``; after a
        failed training they are dropped). Until then a trial's model is its own."""
        if self.compiled is not None:
            self.compiled.give_back(keep)

    def _from_builder(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> tuple[keras.Model, dict[str, Any]]:
        from nnstudy.builder import ModelInfo, call_builder
        from nnstudy.hyperparameters import HyperParameters

        assert self._builder is not None
        info = ModelInfo(self.input_shape, n_outputs(self.task, self.n_classes), self.task)
        hp = HyperParameters.from_trial(trial)
        model = call_builder(self._builder, hp, info)
        try:
            if not model.built:
                model.build((None, *self.input_shape))
        except Exception as err:  # Keras says why the layers do not fit the data's inputs
            from nnstudy.errors import SpecError

            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SpecError(self.spec.path, "[model].builder", f"the model cannot be built on the data's inputs of "
                            f"shape {(None, *self.input_shape)}: {first[:300]}") from None
        self._check_output(model)
        return model, dict(hp.values)

    def _check_output(self, model: keras.Model) -> None:
        from nnstudy.errors import SpecError

        want = (None, n_outputs(self.task, self.n_classes))
        got = tuple(model.output_shape)
        if got != want:
            where = "[model].builder" if self._builder else "[model].layers"
            hint = (" (add a Flatten or a GlobalAveragePooling layer before the output)" if len(got) > 2 else "")
            raise SpecError(self.spec.path, where, f"the model's output has shape {got}{hint}; allowed: {want} for "
                            f"a {self.task} task ({OUTPUTS[self.task][0]} output)")


def check_model(spec: StudySpec, input_shape: tuple[int, ...], task: str, n_classes: int,
                x_sample: Any) -> dict[str, Any]:
    """Build the spec's model for one configuration and run it on a few rows, without training, so
    that a model that cannot be built is refused before anything is written.

    The configuration is the largest of the space (a builder's: one it samples). A model over
    ``[model].max_layers``/``max_params`` is refused; one that cannot be built only in its largest
    configuration (a kernel larger than what is left of the image, say) is accepted when the
    smallest builds, with a ``warning``: such trials fail with ``model-error`` and the study goes on. So
    is one whose largest configuration runs out of memory here: such trials fail with ``out-of-memory``.
    Returns the kind of model, its layer and weight counts, the parameters checked (and the warning).
    """
    from nnstudy.errors import ModelTooLarge, UserInputError, is_out_of_memory

    try:
        return _check_one(spec, input_shape, task, n_classes, x_sample, largest=True)
    except ModelTooLarge:
        raise
    except UserInputError as err:
        if ModelFactory(spec, input_shape, task, n_classes).kind == "builder":
            raise
        try:
            summary = _check_one(spec, input_shape, task, n_classes, x_sample, largest=False)
        except UserInputError:
            raise err from None
        return {**summary, "warning": f"the largest configuration cannot be built: {err}; such trials fail "
                "with reason model-error"}
    except Exception as err:  # MemoryError, ResourceExhaustedError: the machine's limit, not the spec's fault
        if not is_out_of_memory(err):
            raise
        first = str(err).strip().splitlines()[0].split("}} ")[-1][:200] if str(err).strip() else type(err).__name__
        warning = f"the largest configuration ran out of memory ({type(err).__name__}: {first}); such trials " \
                  "fail with reason out-of-memory"
    # outside the handler: the failed attempt's frames (and the tensors that did fit) are freed by now
    if ModelFactory(spec, input_shape, task, n_classes).kind == "builder":
        return {"kind": "builder", "warning": warning}
    return {**_check_one(spec, input_shape, task, n_classes, x_sample, largest=False), "warning": warning}


def _check_one(spec: StudySpec, input_shape: tuple[int, ...], task: str, n_classes: int, x_sample: Any, *,
               largest: bool) -> dict[str, Any]:
    import optuna

    from nnstudy.errors import SpecError, UserInputError, is_out_of_memory

    factory = ModelFactory(spec, input_shape, task, n_classes)
    space = spec.space
    trial: optuna.Trial | optuna.trial.FixedTrial
    if factory.kind == "builder":
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.study.seed))
        trial = study.ask()
        params = space.suggest(trial)
    else:
        params = space.corner(largest=largest)
        trial = optuna.trial.FixedTrial(params)
        if factory.kind == "mlp":
            _check_mlp_size(spec, params, int(math.prod(input_shape)), n_outputs(task, n_classes))
    model = factory.build(params, trial, seed=spec.study.seed)
    where = {"builder": "[model].builder", "layers": "[model].layers"}.get(factory.kind, "[search]")
    try:
        model(x_sample, training=False)
    except UserInputError:
        raise
    except Exception as err:  # Keras raises many kinds for inputs a model cannot take
        if is_out_of_memory(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SpecError(spec.path, where, f"the model cannot take the data's inputs of shape "
                        f"{(None, *input_shape)}: {first[:300]}") from None
    return {"kind": factory.kind, "layers": len(model.layers), "n_params": int(model.count_params()),
            "checked_params": factory.last_params}


def _check_mlp_size(spec: StudySpec, params: dict[str, Any], n_inputs: int, n_out: int) -> None:
    """The built-in MLP's layer and weight counts against ``[model].max_layers``/``max_params``."""
    from nnstudy.errors import ModelTooLarge

    depth, units, limit = int(params["depth"]), int(params["units"]), spec.model.max_params
    n_layers = depth * 2 + 1
    if n_layers > spec.model.max_layers:
        raise ModelTooLarge(spec.path, "[search].depth", f"depth {depth} makes {n_layers:,} layers, over the limit of "
                        f"{spec.model.max_layers:,}; allowed: at most {(spec.model.max_layers - 1) // 2:,} hidden "
                        "layers (or raise [model].max_layers)")
    widths = [n_inputs] + [units] * depth + [n_out]
    weights = sum((a + 1) * b for a, b in zip(widths, widths[1:]))
    if weights > limit:
        raise ModelTooLarge(spec.path, "[search].units", f"depth {depth} x {units} units make {weights:,} weights, over "
                        f"the limit of {limit:,}; allowed: at most {limit:,} weights (fewer units or layers, or "
                        "raise [model].max_params)")


def model_summary(model: keras.Model) -> str:
    """Keras' text summary of a model (layers, output shapes, parameter counts)."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(str(line)))
    return "\n".join(lines) + "\n"


__all__ = ["OUTPUTS", "ModelFactory", "build_model", "check_model", "compile_model", "make_optimizer",
           "model_summary", "n_outputs", "output_layer"]
