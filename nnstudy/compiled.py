"""Compiled models reused between trials of the same shapes (``[train].reuse_compiled``, TensorFlow).

Tracing a model's train, test and predict functions costs more than a short trial's epochs. What a
trace bakes in is the model's configuration, its compile settings (loss, metrics, the optimizer's
class and settings, steps per execution) and the input's shape; the weights, the dropout masks'
generator states, the optimizer's state and its learning rate are variables the traced graph reads.
So a trial whose model has the configuration of an earlier trial's trains that earlier model, once
every variable of its own freshly built model (seeded as ever) has been copied into it: the same
graph runs on the same values, and the curve is the fresh model's to the last bit (checked by
tests/test_training.py against training the fresh model itself).

A ``keras.layers.Dropout`` rate is a Python number baked into the trace; the cached model's dropout
layers read theirs from variables instead (the very arithmetic of ``tf.nn.experimental.
stateless_dropout`` with a constant rate), so configurations differing only in their dropout rate
share one trace. The layers stay plain Keras ``Dropout`` layers (their ``rate`` set to the trial's):
a saved model loads without nnstudy.

A model is lent to one training at a time and given back when its trial has ended; at most
:data:`MAX_MODELS` idle models are kept, the least recently used dropped first. Other backends (and
models that cannot be described as JSON) are not reused: they are built and traced for each trial.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Callable

import keras
import numpy as np

#: idle compiled models kept per process, the least recently used dropped first. Each holds ~12 MiB (its
#: traced graphs, kernels and variables): on the shipped pass_fail study (TPE, 3 epochs, one process), 8 kept
#: models reused 67% of the trials with RSS +4% from trial 10 to 200; 32 reused 77% at +39% (benchmarks/RESULTS.md)
MAX_MODELS = 8


class CompiledModels:
    """The compiled models of earlier trials, by what their traces bake in (see the module docstring)."""

    def __init__(self, max_models: int = MAX_MODELS) -> None:
        self.max_models = max_models
        self._idle: OrderedDict[str, list[keras.Model]] = OrderedDict()
        self._lent: list[tuple[str, keras.Model, bool]] = []  # key, model, whether it joins the cache
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return sum(len(models) for models in self._idle.values())

    def lend(self, fresh: keras.Model) -> tuple[keras.Model, bool]:
        """A compiled model to train in place of ``fresh`` (just built and compiled, not trained): an idle
        one of the same key holding every variable of ``fresh``, else ``fresh`` itself, from now on kept
        (its dropout layers reading their rates from variables). Returns the model and whether it was reused."""
        key = cache_key(fresh)
        if key is None:
            return fresh, False
        _build_optimizer(fresh)
        idle = self._idle.get(key)
        if idle:
            model = idle.pop()
            if not idle:
                del self._idle[key]
            if _copy_state(fresh, model):
                self._lent.append((key, model, False))
                self.hits += 1
                return model, True
        _variable_rates(fresh)
        self._lent.append((key, fresh, True))
        self.misses += 1
        return fresh, False

    def give_back(self, keep: bool = True) -> None:
        """End the trial's loans: the models lent since the last call are idle again (``keep``), or
        forgotten (a training that failed may have left one half traced)."""
        lent, self._lent = self._lent, []
        if not keep:
            return
        for key, model, _ in lent:
            self._idle.setdefault(key, []).append(model)
            self._idle.move_to_end(key)
        evicted = False
        while len(self) > self.max_models:
            oldest = next(iter(self._idle))
            self._idle[oldest].pop(0)
            if not self._idle[oldest]:
                del self._idle[oldest]
            evicted = True
        if any(new for _, _, new in lent):
            _out_of_collections(evicted)


@contextlib.contextmanager
def kernels_kept() -> Iterator[None]:
    """Keep TensorFlow's cache of instantiated kernels while Keras' session is cleared and seeded for a
    trial (``clear_session`` and ``tf.random.set_seed`` empty it, to restart stateful random kernels, which
    nnstudy's trainings do not use: Keras 3 draws with stateless ops, ``tf.data`` shuffles with generators
    of its own). Emptied, the traced functions of a reused model are instantiated again at their next call:
    about as slow as tracing them. A no-op on other backends and where TensorFlow's internals moved."""
    holder: Any = None
    if keras.backend.backend() == "tensorflow":
        try:
            from tensorflow.python.eager import context

            holder = context.pywrap_tfe
            clear = holder.TFE_ContextClearCaches
        except (ImportError, AttributeError):
            holder = None
    if holder is None:
        yield
        return
    holder.TFE_ContextClearCaches = lambda handle: None
    try:
        yield
    finally:
        holder.TFE_ContextClearCaches = clear


def _out_of_collections(evicted: bool) -> None:
    """Where the study has frozen the collector (:meth:`nnstudy.context.StudyContext.optimize`), freeze a newly
    kept model's traced graphs too: each full collection after a trial would otherwise walk every kept model's
    objects (~10 ms per model). The models an eviction dropped are cyclic garbage among frozen objects: they are
    unfrozen and collected first (one full collection, ~0.3 s, on a trial that traced anyway)."""
    if not gc.isenabled() or gc.get_freeze_count() == 0:
        return
    if evicted:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


def cache_key(model: keras.Model) -> str | None:
    """Everything a compiled model's traces bake in, as a string: its configuration (dropout rates between
    0 and 1 left out: variables), its compile configuration without the learning rate (a variable).
    None: not reusable (another backend than TensorFlow, a learning rate that is no variable, or a
    configuration that is not plain JSON)."""
    if keras.backend.backend() != "tensorflow" or not getattr(model, "compiled", False) or model.optimizer is None:
        return None
    try:
        config = model.get_config()
        compiled = model.get_compile_config()
    except Exception:  # a custom layer or loss without get_config: traced anew each trial
        return None
    if not isinstance(getattr(model.optimizer, "_learning_rate", None), keras.Variable):
        return None  # a schedule or callable: its configuration stays in the key
    optimizer = dict(compiled.get("optimizer") or {})
    optimizer["config"] = {k: v for k, v in dict(optimizer.get("config") or {}).items() if k != "learning_rate"}
    compiled = {**compiled, "optimizer": optimizer}
    rates = {layer.name for layer in _variable_rate_layers(model)}
    try:
        text = json.dumps({"model": _without_rates(config, rates), "compile": compiled,
                           "class": f"{type(model).__module__}.{type(model).__qualname__}"}, sort_keys=True)
    except (TypeError, ValueError):
        return None
    return text


def _without_rates(config: Any, names: set[str]) -> Any:
    """``config`` with the ``rate`` of the dropout layers named in ``names`` replaced by a marker."""
    if isinstance(config, dict):
        inner = config.get("config")
        if config.get("class_name") == "Dropout" and isinstance(inner, dict) and inner.get("name") in names:
            return {**config, "config": {**inner, "rate": "variable"}}
        return {k: _without_rates(v, names) for k, v in config.items()}
    if isinstance(config, list):
        return [_without_rates(v, names) for v in config]
    return config


def _variable_rate_layers(model: keras.Model) -> list[keras.layers.Dropout]:
    """The plain ``Dropout`` layers (float32, rate strictly between 0 and 1) whose rate can be a variable."""
    if _dropout_ops() is None:
        return []
    return [layer for layer in _layers(model) if type(layer) is keras.layers.Dropout
            and 0.0 < float(layer.rate) < 1.0 and layer.compute_dtype == "float32"]


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    found: list[keras.layers.Layer] = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_layers(layer))
    return found


def _build_optimizer(model: keras.Model) -> None:
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _shapes(variables: list[Any]) -> list[tuple[tuple[int, ...], str]]:
    return [(tuple(int(d) for d in v.shape), str(v.dtype)) for v in variables]


def _copy_state(fresh: keras.Model, model: keras.Model) -> bool:
    """Give ``model`` every variable of ``fresh`` (weights, seed generators, optimizer with its learning
    rate and iteration count) and its dropout rates; False (nothing copied) when they do not line up."""
    source = [*fresh.variables, *fresh.optimizer.variables]
    target = [*model.variables, *model.optimizer.variables]
    rates = list(zip(_variable_rate_layers(fresh), _variable_rate_layers(model)))
    if _shapes(source) != _shapes(target) or any(not hasattr(b, "_nnstudy_rate") for _, b in rates):
        return False
    for a, b in zip(source, target):
        b.assign(a)
    for a, b in rates:
        b.rate = a.rate
        b._nnstudy_rate(float(a.rate))
    model.stop_training = False
    return True


def _dropout_ops() -> tuple[Callable[..., Any], ...] | None:
    """The private helpers of Keras' and TensorFlow's dropout (None where they moved): Keras' seed drawing
    and noise shape, TensorFlow's noise shape and stateless uniform draw."""
    try:
        from keras.src.backend.tensorflow.random import _cast_seed, _get_concrete_noise_shape
        from keras.src.random.seed_generator import draw_seed
        from tensorflow.python.ops.nn_ops import _get_noise_shape
        from tensorflow.python.ops.stateless_random_ops import stateless_random_uniform
    except ImportError:
        return None
    return _cast_seed, draw_seed, _get_concrete_noise_shape, _get_noise_shape, stateless_random_uniform


def _variable_rates(model: keras.Model) -> None:
    """Make the model's dropout layers read their rate from variables, with the arithmetic of
    ``tf.nn.experimental.stateless_dropout`` given a constant rate: ``x * float32(1 / (1 - rate))`` where
    a uniform draw ``>= float32(rate)``, else 0 (a tensor rate would divide ``x / (1 - rate)``: other bits)."""
    ops = _dropout_ops()
    if ops is None:
        return
    import tensorflow as tf

    cast_seed, draw_seed, keras_noise_shape, tf_noise_shape, uniform = ops
    for layer in _variable_rate_layers(model):
        scale = tf.Variable(np.float32(0.0), trainable=False)
        threshold = tf.Variable(np.float32(0.0), trainable=False)

        def set_rate(rate: float, scale: Any = scale, threshold: Any = threshold) -> None:
            scale.assign(np.float32(1 / (1 - rate)))
            threshold.assign(np.float32(rate))

        def call(inputs: Any, training: bool = False, layer: Any = layer, scale: Any = scale,
                 threshold: Any = threshold) -> Any:
            if not training:
                return inputs
            seed = cast_seed(draw_seed(layer.seed_generator))
            x = tf.convert_to_tensor(inputs)
            shape = tf_noise_shape(x, keras_noise_shape(x, layer.noise_shape))
            kept = uniform(shape=shape, seed=seed, dtype=x.dtype, alg=None) >= threshold
            out = tf.where(kept, x * scale, tf.constant(0, dtype=x.dtype))
            out.set_shape(x.shape)
            return out

        set_rate(float(layer.rate))
        layer.call = call
        layer._nnstudy_rate = set_rate


__all__ = ["MAX_MODELS", "CompiledModels", "cache_key", "kernels_kept"]
