"""The training loop of one trial: input pipeline, early stopping, divergence, per-epoch hook.

Knows Keras and the prepared data; knows nothing of Optuna or MLflow. The caller passes an
``on_epoch(epoch, logs)`` hook (1-based epoch) that may return ``True`` to stop training
(the objective uses it for pruning, tracking and progress).

With a :class:`Checkpoint` (``[train].checkpoint_every``) the whole training state is saved every N
epochs, and a training given the :class:`Saved` state resumes after its epoch with the very curve an
uninterrupted training would have drawn.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
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
    resumed_from: int = 0  # epochs restored from a checkpoint (0: trained from epoch 1)

    latency_ms: float | None = None  # prediction time per row of the restored model (see prediction_latency_ms)

    def value(self, metric: str) -> float:
        if self.best_epoch == 0:
            return math.nan
        return float(self.history[metric][self.best_epoch - 1])

    def objective_values(self, objectives: list[str]) -> tuple[float, ...]:
        """The value of each objective: a per-epoch metric at the best epoch, ``n_params`` (the model's
        weights) or ``latency_ms`` (NaN until measured)."""
        measures = {"n_params": float(self.model.count_params()),
                    "latency_ms": math.nan if self.latency_ms is None else self.latency_ms}
        return tuple(measures[name] if name in measures else self.value(name) for name in objectives)


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


#: iterators Keras makes of a tf.data training set per epoch (checked by tests/test_training.py's resume test)
ITERATORS_PER_EPOCH = 2


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

    @property
    def steps_per_execution(self) -> int:
        """Mini-batches per compiled call: the setting, whatever the batch size. Keras' multi-step loop
        stops where the epoch's batches end, so a setting above an epoch's batches trains the same
        (bit-identical curves, checked by tests/test_training.py); and as the number is baked into the
        traced train function, one number for every batch size lets trials differing only in their batch
        size share one trace (:mod:`nnstudy.compiled`)."""
        return self.settings.steps_per_execution if self.uses_tf_data else 1

    def fit_args(self, batch_size: int, seed: int, first_epoch: int = 0) -> dict[str, Any]:
        """``model.fit`` arguments; ``first_epoch``: epochs already trained (a resumed training), whose
        batch orders are skipped so that each later epoch sees the order it has in an uninterrupted run."""
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
        # every new iterator of the set draws the next order from the shuffle's seeded generator, and Keras 3
        # makes two per epoch (one at its start, one more at its end: EpochIterator, for a set of known
        # length): making and dropping as many skips the orders of the epochs already trained
        for _ in range(ITERATORS_PER_EPOCH * first_epoch):
            iter(train)
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
    """Divergence, the caller's hook, and the curves (``history``: those of restored epochs first)."""

    def __init__(self, hook: EpochHook | None, exploding_factor: float,
                 history: dict[str, list[float]] | None = None) -> None:
        super().__init__()
        self.hook = hook
        self.exploding_factor = exploding_factor
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.first_loss = next((abs(v) or 1e-12 for v in self.history.get("loss", []) if math.isfinite(v)), None)
        self.diverged_at: int | None = None
        self.stopped_by_hook: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
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


class _EarlyStopping(keras.callbacks.EarlyStopping):  # type: ignore[misc]
    """Keras' early stopping, whose state a checkpoint keeps and a resumed training starts from."""

    def __init__(self, resume: Saved | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resume = resume

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)  # resets the state
        if self.resume is not None:
            state = self.resume.early_stopping
            self.wait, self.best, self.best_epoch = int(state["wait"]), state["best"], int(state["best_epoch"])
            self.best_weights = self.resume.best_weights

    def state(self) -> dict[str, Any]:
        best = self.best if self.best is None else float(self.best)
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}


class _Checkpointer(keras.callbacks.Callback):  # type: ignore[misc]
    """Saves the training state every ``checkpoint.every`` epochs (after early stopping has seen the epoch);
    never at an epoch where training stops (nothing would be left to resume)."""

    def __init__(self, checkpoint: Checkpoint, max_epochs: int, epochs: _EpochCallback, stopper: _EarlyStopping) -> None:
        super().__init__()
        self.checkpoint, self.max_epochs, self.epochs, self.stopper = checkpoint, max_epochs, epochs, stopper

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        done = epoch + 1
        if self.model.stop_training or done % self.checkpoint.every or done >= self.max_epochs:
            return
        best = self.stopper.best_weights
        saved = Saved(epoch=done, history=self.epochs.history, early_stopping=self.stopper.state(),
                      variables=[np.asarray(v) for v in self.model.variables],
                      optimizer=[np.asarray(v) for v in self.model.optimizer.variables],
                      best_weights=None if best is None else [np.asarray(w) for w in best])
        try:
            self.checkpoint.save(saved)
        except OSError as err:  # a checkpoint only saves time: training goes on without it
            print(f"warning: the checkpoint {self.checkpoint.path} could not be written ({err}); training goes on",
                  file=sys.stderr)


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
          on_epoch: EpochHook | None = None, checkpoint: Checkpoint | None = None,
          resume: Saved | None = None) -> TrainResult:
    """Train one compiled model (made by :class:`~nnstudy.model.ModelFactory` after seeding Keras)
    and return its curves, best epoch and restored weights. ``seed`` orders the mini-batches. The model
    is trained once: afterwards it predicts, evaluates and is saved, but TensorFlow no longer knows the
    gradients of its traced train step (:func:`forgetting_traced_gradients`).

    ``checkpoint``: save the training state there every ``checkpoint.every`` epochs. ``resume``: a state
    loaded by :meth:`Checkpoint.load` for this very model: its epochs are passed to ``on_epoch`` again
    (which may stop there), then training goes on from the epoch after it."""
    start = time.perf_counter()
    pipeline = pipeline or InputPipeline(data, settings)
    batch_size = int(params["batch_size"])
    first = resume.epoch if resume is not None else 0
    if resume is not None:
        for epoch in range(1, first + 1):
            if on_epoch is not None and on_epoch(epoch, {k: v[epoch - 1] for k, v in resume.history.items()}):
                curves = {k: v[:epoch] for k, v in resume.history.items()}
                return TrainResult(history=curves, best_epoch=_best_epoch(curves.get(metric, []), direction),
                                   stopped_epoch=epoch, early_stopped=False, diverged_at=None, stopped_by_hook=epoch,
                                   model=model, duration_s=time.perf_counter() - start, resumed_from=first)
        resume.restore(model)
    stopper = _EarlyStopping(
        resume, monitor=metric, mode="min" if direction == "minimize" else "max",
        patience=settings.early_stopping_patience, min_delta=settings.min_delta,
        restore_best_weights=settings.restore_best_weights,
    )
    epoch_cb = _EpochCallback(on_epoch, settings.exploding_factor, resume.history if resume is not None else None)
    fit_args = pipeline.fit_args(batch_size, seed, first)
    callbacks = [*fit_args.pop("callbacks", []), epoch_cb, stopper]
    if checkpoint is not None:
        callbacks.append(_Checkpointer(checkpoint, settings.max_epochs, epoch_cb, stopper))
    with forgetting_traced_gradients():
        model.fit(**fit_args, epochs=settings.max_epochs, initial_epoch=first, callbacks=callbacks, verbose=0)
    curves = epoch_cb.history
    n_epochs = len(curves.get("loss", []))
    best = _best_epoch(curves.get(metric, []), direction)
    result = TrainResult(
        history=curves, best_epoch=best, stopped_epoch=n_epochs,
        early_stopped=stopper.stopped_epoch > 0, diverged_at=epoch_cb.diverged_at,
        stopped_by_hook=epoch_cb.stopped_by_hook, model=model, duration_s=0.0, resumed_from=first,
    )
    if data.x_test is not None and epoch_cb.diverged_at is None and epoch_cb.stopped_by_hook is None:
        x_test = pipeline.eval_set("test")
        scores = model.evaluate(*x_test, verbose=0, return_dict=True) if isinstance(x_test, tuple) \
            else model.evaluate(x_test, verbose=0, return_dict=True)
        result.test_metrics = {f"test_{k}": float(v) for k, v in scores.items()}
    result.duration_s = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = "nnstudy-checkpoint/1"


def checkpoint_identity(**parts: Any) -> str:
    """A digest of everything that decides a training's curve (``parts``: parameters, seed, data digest,
    settings), with the Keras backend and version: what a checkpoint must match to be resumed."""
    import hashlib
    from importlib.metadata import version

    named = {**parts, "keras_backend": backend(), "keras": version("keras")}
    return hashlib.sha256(json.dumps(named, sort_keys=True, default=str).encode()).hexdigest()


class UnusableCheckpoint(Exception):
    """A checkpoint that cannot be resumed (unreadable, of another trial or model): train from epoch 1."""


@dataclass
class Saved:
    """The whole state of a training after ``epoch`` epochs, as a checkpoint keeps it."""

    epoch: int
    history: dict[str, list[float]]  # the curves of epochs 1..epoch
    early_stopping: dict[str, Any]  # wait, best, best_epoch (0-based, as Keras counts)
    variables: list[Any]  # model.variables: the weights and the seed generators' states (dropout)
    optimizer: list[Any]  # the optimizer's variables, its iteration count included
    best_weights: list[Any] | None  # early stopping's best weights so far (restore_best_weights)

    def restore(self, model: keras.Model) -> None:
        """Put this state into ``model`` (checked by :meth:`Checkpoint.load` to fit it)."""
        _build_optimizer(model)
        for variable, value in zip([*model.variables, *model.optimizer.variables], [*self.variables, *self.optimizer]):
            variable.assign(value)


def _build_optimizer(model: keras.Model) -> None:
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _shapes(values: list[Any]) -> list[tuple[tuple[int, ...], str]]:
    return [(tuple(int(d) for d in v.shape), keras.backend.standardize_dtype(v.dtype)) for v in values]


@dataclass(frozen=True)
class Checkpoint:
    """Where one training keeps its state every ``every`` epochs: one ``.npz`` file (arrays and a JSON
    state, no pickle), replaced atomically. ``identity`` names everything that decides the curve
    (parameters, seed, data, settings): a checkpoint of anything else is refused."""

    path: Path
    every: int
    identity: str

    def save(self, saved: Saved) -> None:
        state = {"format": CHECKPOINT_FORMAT, "identity": self.identity, "epoch": saved.epoch,
                 "history": saved.history, "early_stopping": saved.early_stopping,
                 "best_weights": saved.best_weights is not None}
        arrays = {"state": np.array(json.dumps(state))}
        for prefix, values in (("v", saved.variables), ("o", saved.optimizer), ("b", saved.best_weights or [])):
            arrays.update({f"{prefix}{i:05d}": np.asarray(v) for i, v in enumerate(values)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(temp, "wb") as file:
                np.savez(file, **arrays)  # type: ignore[arg-type]  # (numpy's stub: a key could be allow_pickle)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path)  # a reader sees the old checkpoint or the new one, never half of one
        finally:
            temp.unlink(missing_ok=True)

    def load(self, model: keras.Model) -> Saved | None:
        """The saved state, checked to belong to this training and to fit ``model``; None when there is no
        checkpoint. Raises :class:`UnusableCheckpoint` (saying why) for any other file."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                state = json.loads(str(npz["state"]))
                if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
                    raise UnusableCheckpoint("not an nnstudy checkpoint")
                if state.get("identity") != self.identity:
                    raise UnusableCheckpoint("it was written by another configuration, seed or data set")
                arrays = {p: [npz[k] for k in sorted(npz.files) if k.startswith(p) and k != "state"] for p in "vob"}
            stopping = state["early_stopping"]
            saved = Saved(epoch=int(state["epoch"]), history={str(k): [float(x) for x in v]
                                                             for k, v in state["history"].items()},
                          early_stopping={"wait": int(stopping["wait"]), "best_epoch": int(stopping["best_epoch"]),
                                          "best": None if stopping["best"] is None else float(stopping["best"])},
                          variables=arrays["v"], optimizer=arrays["o"],
                          best_weights=arrays["b"] if state["best_weights"] else None)
        except UnusableCheckpoint:
            raise
        except Exception as err:  # a truncated or garbled file: numpy, zipfile and json raise many kinds
            raise UnusableCheckpoint(f"unreadable: {type(err).__name__}: {err}"[:300]) from None
        if saved.epoch < 1 or any(len(v) != saved.epoch for v in saved.history.values()) or not saved.history:
            raise UnusableCheckpoint(f"its curves do not cover its {saved.epoch} epochs")
        _build_optimizer(model)
        if _shapes(saved.variables) != _shapes(model.variables) or \
                _shapes(saved.optimizer) != _shapes(model.optimizer.variables) or \
                (saved.best_weights is not None and _shapes(saved.best_weights) != _shapes(model.weights)):
            raise UnusableCheckpoint("its weights do not fit this model")
        return saved

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


#: rows of the validation split whose prediction is timed (per-row latency hardly changes beyond them)
LATENCY_MAX_ROWS = 8192
LATENCY_REPEATS = 5


def prediction_latency_ms(model: keras.Model, x: Any, batch_size: int, *, max_rows: int = LATENCY_MAX_ROWS,
                          repeats: int = LATENCY_REPEATS) -> float:
    """Milliseconds per row that ``model`` takes to predict ``x`` (at most ``max_rows`` rows) in batches of
    ``batch_size`` on this machine: one untimed pass first (compiling the predict function for each batch
    shape), then the median of ``repeats`` timed passes, divided by the rows."""
    rows = x[:max_rows]
    n = len(rows)
    if n == 0:
        return math.nan
    batches = [rows[i:i + batch_size] for i in range(0, n, batch_size)]

    def one_pass() -> float:
        start = time.perf_counter()
        for batch in batches:
            model.predict_on_batch(batch)
        return time.perf_counter() - start

    one_pass()  # warm-up
    timings = sorted(one_pass() for _ in range(repeats))
    return 1000.0 * timings[len(timings) // 2] / n


def _best_epoch(values: list[float], direction: str) -> int:
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return 0
    sign = 1.0 if direction == "minimize" else -1.0
    _, index = min(finite, key=lambda vi: (sign * vi[0], vi[1]))  # the earliest of equal bests
    return index + 1
