"""The training loop of one trial: input pipeline, early stopping, divergence, per-epoch hook.

Knows Keras and the prepared data; knows nothing of Optuna or MLflow. The caller passes an
``on_epoch(epoch, logs)`` hook (1-based epoch) that may return ``True`` to stop training
(the objective uses it for pruning, tracking and progress).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import keras
import numpy as np

from nnstudy.data import PreparedData
from nnstudy.spec import TrainSection

EpochHook = Callable[[int, dict[str, float]], bool]



@dataclass
class TrainResult:
    """What one training produced. Epochs are 1-based."""

    history: dict[str, list[float]]
    best_epoch: int  # epoch of the best monitored value (0 when none was finite)
    stopped_epoch: int  # last epoch that ran
    early_stopped: bool
    diverged_at: int | None  # epoch where the loss became NaN/inf or exploded
    stopped_by_hook: int | None  # epoch where on_epoch asked to stop (pruning)
    model: keras.Model
    duration_s: float
    test_metrics: dict[str, float] = field(default_factory=dict)

    def value(self, metric: str) -> float:
        if self.best_epoch == 0:
            return math.nan
        return float(self.history[metric][self.best_epoch - 1])


def backend() -> str:
    return str(keras.backend.backend())


def configure_determinism(enabled: bool) -> None:
    """Make TensorFlow ops deterministic (same seed -> same curve); a no-op on other backends."""
    if enabled and backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def use_threads(threads: int) -> bool:
    """Train with ``threads`` intra-op threads from now on, as a worker given that many does (a reduction
    can sum in another order with another thread count). Must come before the backend's first op;
    returns False, changing nothing, when it came too late (TensorFlow's runtime already started)."""
    import os

    from nnstudy.runtime import thread_env

    if backend() == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            return bool(tf.config.threading.get_intra_op_parallelism_threads() == threads)
    os.environ.update(thread_env(threads))  # XLA (JAX) and BLAS read these when they start
    return True


def device_name() -> str:
    """The accelerator training runs on, in words (``CPU`` when there is none)."""
    if backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return str(details.get("device_name", "GPU"))
    elif backend() == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return str(getattr(dev, "device_kind", dev.platform))
    elif backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    return "CPU"


class InputPipeline:
    """Input path per backend, built from the prepared arrays once per process.

    TensorFlow gets ``tf.data`` (tensors made once; a seeded shuffle per trial so each trial
    sees its own reproducible batch order) with many steps per execution. JAX gets the numpy
    arrays through :class:`ShuffledBatches` (its batch order drawn from the trial's seed and the
    epoch, not from NumPy's global random state), PyTorch the numpy arrays as they are: tf.data
    with ``steps_per_execution`` was measured pathologically slow under JAX.
    """

    def __init__(self, data: PreparedData, settings: TrainSection | None = None) -> None:
        self.data = data
        self.settings = settings or TrainSection()
        self._tensors: dict[str, Any] = {}
        if backend() == "tensorflow":
            import tensorflow as tf

            for split in ("train", "val", "test"):
                x = getattr(data, f"x_{split}")
                if x is not None:
                    y = getattr(data, f"y_{split}")
                    self._tensors[split] = tf.data.Dataset.from_tensor_slices((x, y)).cache()

    @property
    def uses_tf_data(self) -> bool:
        return bool(self._tensors)

    def steps_per_execution(self, batch_size: int) -> int:
        if not self.uses_tf_data:
            return 1
        steps = math.ceil(len(self.data.x_train) / batch_size)
        return max(1, min(self.settings.steps_per_execution, steps))

    def fit_args(self, batch_size: int, seed: int) -> dict[str, Any]:
        if not self.uses_tf_data:
            if backend() == "jax":
                batches = ShuffledBatches(self.data.x_train, self.data.y_train, batch_size, seed)
                return {"x": batches, "shuffle": False, "callbacks": [batches.epoch_setter()],
                        "validation_data": (self.data.x_val, self.data.y_val)}
            return {"x": self.data.x_train, "y": self.data.y_train, "batch_size": batch_size, "shuffle": True,
                    "validation_data": (self.data.x_val, self.data.y_val)}
        import tensorflow as tf

        n = len(self.data.x_train)
        train = (self._tensors["train"].shuffle(n, seed=seed, reshuffle_each_iteration=True)
                 .batch(batch_size).prefetch(tf.data.AUTOTUNE))
        return {"x": train, "shuffle": False, "validation_data": self.eval_set("val")}

    def eval_set(self, split: Literal["val", "test"]) -> Any:
        if not self.uses_tf_data:
            return getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
        return self._tensors[split].batch(self.settings.eval_batch_size)


class ShuffledBatches(keras.utils.PyDataset):  # type: ignore[misc]
    """The training arrays in mini-batches, shuffled each epoch by the trial's own generator.

    Keras shuffles numpy arrays with NumPy's *global* random state, which anything in the process
    (a library, a callback, the epoch hook) may draw from between the seeding of a trial and its
    epochs, so the batch order, and with it the curve, was not reproducible under JAX. Here the
    order of epoch ``e`` is a permutation drawn from ``numpy.random.default_rng((seed, e))``: the
    same for a trial and its reproduction whatever else the process does (and however often Keras
    calls the epoch hooks of a ``PyDataset``). :meth:`epoch_setter` is the callback that tells it
    which epoch is starting.
    """

    def __init__(self, x: Any, y: Any, batch_size: int, seed: int) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> Any:
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.x))

    def set_epoch(self, epoch: int) -> None:
        self._order = self._permutation(epoch)

    def epoch_setter(self) -> keras.callbacks.Callback:
        return _BatchOrderCallback(self)

    @property
    def num_batches(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]


class _BatchOrderCallback(keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self, batches: ShuffledBatches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.batches.set_epoch(epoch)  # before Keras draws the epoch's first batch


class _EpochCallback(keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self, hook: EpochHook | None, exploding_factor: float) -> None:
        super().__init__()
        self.hook = hook
        self.exploding_factor = exploding_factor
        self.first_loss: float | None = None
        self.diverged_at: int | None = None
        self.stopped_by_hook: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        loss = logs.get("loss", math.nan)
        if self.first_loss is None and math.isfinite(loss):
            self.first_loss = abs(loss) or 1e-12
        exploding = self.first_loss is not None and abs(loss) > self.exploding_factor * max(self.first_loss, 1.0)
        if not math.isfinite(loss) or exploding:
            self.diverged_at = epoch + 1
            self.model.stop_training = True
        if self.hook is not None and self.hook(epoch + 1, logs):
            self.stopped_by_hook = epoch + 1
            self.model.stop_training = True


@contextlib.contextmanager
def forgetting_traced_gradients() -> Iterator[None]:
    """Forget the gradient functions that tracing a model's train step registered, once it has trained.

    Each trace of Keras' train step registers a ``CustomGradient-N`` function (``tf.distribute``'s
    ``all_reduce`` is a ``@tf.custom_gradient``) in TensorFlow's global gradient registry and never removes
    it; its closure keeps the whole traced graph alive: a process grew ~7 MiB per trial (benchmarks/
    RESULTS.md, "Memory"). Removing the entries added while training frees them; a no-op on other backends
    and where TensorFlow's private registry is not where it was."""
    registry: Any = None
    if backend() == "tensorflow":
        try:
            from tensorflow.python.framework import ops

            registry = ops._gradient_registry._registry
        except (ImportError, AttributeError):
            registry = None
    before = set(registry) if isinstance(registry, dict) else set()
    try:
        yield
    finally:
        if isinstance(registry, dict):
            for key in [k for k in registry if k not in before and str(k).startswith("CustomGradient-")]:
                registry.pop(key, None)


def train(data: PreparedData, params: dict[str, Any], settings: TrainSection, *, model: keras.Model, metric: str,
          direction: Literal["minimize", "maximize"], seed: int, pipeline: InputPipeline | None = None,
          on_epoch: EpochHook | None = None) -> TrainResult:
    """Train one compiled model (made by :class:`~nnstudy.model.ModelFactory` after seeding Keras)
    and return its curves, best epoch and restored weights. ``seed`` orders the mini-batches. The model
    is trained once: afterwards it predicts, evaluates and is saved, but TensorFlow no longer knows the
    gradients of its traced train step (:func:`forgetting_traced_gradients`)."""
    start = time.perf_counter()
    pipeline = pipeline or InputPipeline(data, settings)
    batch_size = int(params["batch_size"])
    stopper = keras.callbacks.EarlyStopping(
        monitor=metric, mode="min" if direction == "minimize" else "max",
        patience=settings.early_stopping_patience, min_delta=settings.min_delta,
        restore_best_weights=settings.restore_best_weights,
    )
    epoch_cb = _EpochCallback(on_epoch, settings.exploding_factor)
    fit_args = pipeline.fit_args(batch_size, seed)
    callbacks = [*fit_args.pop("callbacks", []), epoch_cb, stopper]
    with forgetting_traced_gradients():
        history = model.fit(**fit_args, epochs=settings.max_epochs, callbacks=callbacks, verbose=0)
    curves = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    n_epochs = len(curves.get("loss", []))
    best = _best_epoch(curves.get(metric, []), direction)
    result = TrainResult(
        history=curves, best_epoch=best, stopped_epoch=n_epochs,
        early_stopped=stopper.stopped_epoch > 0, diverged_at=epoch_cb.diverged_at,
        stopped_by_hook=epoch_cb.stopped_by_hook, model=model, duration_s=0.0,
    )
    if data.x_test is not None and epoch_cb.diverged_at is None and epoch_cb.stopped_by_hook is None:
        x_test = pipeline.eval_set("test")
        scores = model.evaluate(*x_test, verbose=0, return_dict=True) if isinstance(x_test, tuple) \
            else model.evaluate(x_test, verbose=0, return_dict=True)
        result.test_metrics = {f"test_{k}": float(v) for k, v in scores.items()}
    result.duration_s = time.perf_counter() - start
    return result


def _best_epoch(values: list[float], direction: str) -> int:
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return 0
    sign = 1.0 if direction == "minimize" else -1.0
    _, index = min(finite, key=lambda vi: (sign * vi[0], vi[1]))  # the earliest of equal bests
    return index + 1
