"""One trial's training: input pipeline settings, divergence, the epoch hook, early stopping, test metrics."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from nnstudy.data import PreparedData, prepare
from nnstudy.model import ModelFactory
from nnstudy.spec import StudySpec
from nnstudy.training import Checkpoint, InputPipeline, TrainResult, UnusableCheckpoint, _best_epoch, train

PARAMS = {"depth": 1, "units": 8, "activation": "relu", "dropout": 0.0, "learning_rate": 0.01, "optimizer": "adam",
          "batch_size": 16}


def _model(spec: StudySpec, params: dict[str, Any], data: PreparedData, pipeline: InputPipeline) -> Any:
    return ModelFactory(spec, data.input_shape, data.task, data.n_classes, data.target_mean).build(
        params, optuna.trial.FixedTrial(params), seed=1,
        steps_per_execution=pipeline.steps_per_execution)


def _train(spec: StudySpec, params: dict[str, Any], data: PreparedData | None = None, **kwargs: Any) -> TrainResult:
    data = data or prepare(spec)
    pipeline = InputPipeline(data, spec.train)
    model = kwargs.pop("model", None) or _model(spec, params, data, pipeline)
    return train(data, params, spec.train, model=model, metric=spec.study.metric, direction=spec.direction, seed=1,
                 pipeline=pipeline, **kwargs)


def test_steps_per_execution_and_eval_batch_size_reach_the_model(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(train={"steps_per_execution": 3, "eval_batch_size": 5})
    data = prepare(spec)
    pipeline = InputPipeline(data, spec.train)
    assert pipeline.uses_tf_data
    assert pipeline.steps_per_execution == 3  # the setting, whatever the batch size (one trace for all)
    model = ModelFactory(spec, data.input_shape, data.task).build(PARAMS, optuna.trial.FixedTrial(PARAMS), seed=1,
                                                                  steps_per_execution=pipeline.steps_per_execution)
    assert model.steps_per_execution == 3
    batches = [len(x) for x, _ in pipeline.eval_set("val")]
    assert sum(batches) == len(data.x_val) and max(batches) == 5 and len(batches) == math.ceil(len(data.x_val) / 5)


def test_steps_per_execution_above_an_epochs_batches_trains_the_same(tiny_spec: Callable[..., StudySpec]) -> None:
    """72 training rows in batches of 8 are 9 batches an epoch: 4 (not a divisor), 9 and 50 mini-batches per
    compiled call train bit-identical curves, so the setting can stay one number for every batch size."""
    params = {**PARAMS, "batch_size": 8, "dropout": 0.2}
    results = [_train(tiny_spec(train={"steps_per_execution": n, "max_epochs": 3}), params) for n in (4, 9, 50)]
    assert len(results[0].history["loss"]) == 3
    assert all(r.history == results[0].history and r.test_metrics == results[0].test_metrics for r in results)


def test_exploding_factor_decides_when_a_growing_loss_diverged(tiny_spec: Callable[..., StudySpec]) -> None:
    params = {**PARAMS, "optimizer": "sgd", "learning_rate": 100.0}  # far too large: the loss grows every epoch
    results = {}
    for factor in (1e3, 1e12):
        results[factor] = _train(tiny_spec(train={"exploding_factor": factor, "max_epochs": 2}), params)
    first, second = results[1e3].history["loss"]
    assert results[1e12].history["loss"] == [first, second]  # the same seed trains the same way
    assert math.isfinite(second)  # grew, but never NaN: only the factor can call it diverged
    for factor, result in results.items():
        assert result.diverged_at == (2 if second > factor * max(first, 1.0) else None)
    assert results[1e3].diverged_at != results[1e12].diverged_at
    assert results[1e3].test_metrics == {}  # a diverged model is not evaluated


def test_the_epoch_hook_sees_every_epoch_and_can_stop(tiny_spec: Callable[..., StudySpec]) -> None:
    seen: list[tuple[int, set[str]]] = []

    def hook(epoch: int, logs: dict[str, float]) -> bool:
        seen.append((epoch, set(logs)))
        return epoch == 2

    result = _train(tiny_spec(train={"max_epochs": 5}), PARAMS, on_epoch=hook)
    assert [e for e, _ in seen] == [1, 2] and seen[0][1] >= {"loss", "val_loss", "accuracy", "val_accuracy"}
    assert (result.stopped_by_hook, result.stopped_epoch, result.diverged_at) == (2, 2, None)
    assert result.test_metrics == {}  # a pruned model is not evaluated


def test_a_finished_training_reports_best_epoch_value_and_test_metrics(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(train={"max_epochs": 3})
    result = _train(spec, PARAMS)
    val = result.history["val_loss"]
    assert result.stopped_epoch == len(val) == 3 and not result.early_stopped
    assert result.best_epoch == val.index(min(val)) + 1 and result.value("val_loss") == min(val)
    assert set(result.test_metrics) == {"test_loss", "test_accuracy"}
    assert result.duration_s > 0 and result.model.count_params() == (2 + 1) * 8 + 9


def test_a_trained_model_leaves_no_traced_gradient_behind_and_still_predicts(
        tiny_spec: Callable[..., StudySpec]) -> None:
    """Each trace of Keras' train step registered a CustomGradient-N function in TensorFlow's global gradient
    registry, whose closure kept the traced graph (and ~4-7 MiB) alive for the rest of the process."""
    from tensorflow.python.framework import ops

    spec = tiny_spec(train={"max_epochs": 2})
    data = prepare(spec)
    before = set(ops._gradient_registry._registry)
    results = [_train(spec, PARAMS, data) for _ in range(3)]
    assert set(ops._gradient_registry._registry) == before
    x = data.x_val[:5]
    assert all(r.model.predict(x, verbose=0).shape == (5, 1) for r in results)  # a trained model still predicts
    assert all(set(r.test_metrics) == {"test_loss", "test_accuracy"} for r in results)


def test_best_epoch_is_the_earliest_of_equal_bests() -> None:
    assert _best_epoch([0.5, 0.3, 0.3, 0.4], "minimize") == 2
    assert _best_epoch([0.5, 0.9, 0.9], "maximize") == 2
    assert _best_epoch([math.nan, 0.4, math.inf], "minimize") == 2
    assert _best_epoch([math.nan], "minimize") == 0


def test_value_without_a_finite_epoch_is_nan(tiny_spec: Callable[..., StudySpec]) -> None:
    result = TrainResult(history={"val_loss": [math.nan]}, best_epoch=0, stopped_epoch=1, early_stopped=False,
                         diverged_at=1, stopped_by_hook=None, model=None, duration_s=0.0)  # type: ignore[arg-type]
    assert math.isnan(result.value("val_loss"))


def test_use_threads_before_the_first_op_and_too_late_after_it() -> None:
    import subprocess
    import sys

    code = ("import os; os.environ.pop('TF_NUM_INTRAOP_THREADS', None)\n"
            "from nnstudy.runtime import training_threads\n"
            "from nnstudy.training import use_threads\n"
            "import tensorflow as tf\n"
            "assert use_threads(1) and tf.config.threading.get_intra_op_parallelism_threads() == 1\n"
            "assert training_threads() == 1\n"
            "tf.constant(1.0) + 1.0\n"
            "assert use_threads(1) and not use_threads(3)\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "KERAS_BACKEND": "tensorflow"})
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


# --------------------------------------------------------------------------- checkpoints ([train].checkpoint_every)


class _Killed(Exception):
    """Stands for the worker killed in the middle of a training (the real SIGKILL: tests/test_faults.py)."""


def _killed_at(epoch: int) -> Callable[[int, dict[str, float]], bool]:
    def hook(e: int, logs: dict[str, float]) -> bool:
        if e == epoch:
            raise _Killed
        return False

    return hook


# 4 batches per compiled call, not dividing the 15 batches of an epoch: Keras' iterators per epoch are the same
CHECKPOINTED = {"max_epochs": 12, "early_stopping_patience": 4, "checkpoint_every": 3, "steps_per_execution": 4}
DROPOUT = {**PARAMS, "dropout": 0.3, "batch_size": 8}  # dropout: the masks' generator state must be saved too


def test_a_training_resumed_from_its_checkpoint_draws_the_uninterrupted_curve(
        tiny_spec: Callable[..., StudySpec], tmp_path: Path) -> None:
    """Killed after epoch 7 with checkpoints every 3 epochs: a fresh model resumed from epoch 6 ends with
    the same curves (bit for bit), early-stopping epoch, restored best weights and test metrics."""
    spec = tiny_spec(train=CHECKPOINTED, data={"n_samples": 200})
    data = prepare(spec)
    whole = _train(spec, DROPOUT, data)
    assert whole.stopped_epoch > 7  # (the kill below comes before the end)
    checkpoint = Checkpoint(tmp_path / "trial-0000.npz", every=3, identity="trial 0")
    with pytest.raises(_Killed):
        _train(spec, DROPOUT, data, on_epoch=_killed_at(8), checkpoint=checkpoint)
    pipeline = InputPipeline(data, spec.train)
    model = _model(spec, DROPOUT, data, pipeline)  # as the retry builds it: the initial weights of epoch 1
    saved = checkpoint.load(model)
    assert saved is not None and saved.epoch == 6 and len(saved.history["loss"]) == 6
    seen: list[int] = []

    def hook(epoch: int, logs: dict[str, float]) -> bool:
        seen.append(epoch)
        return False

    resumed = train(data, DROPOUT, spec.train, model=model, metric="val_loss", direction="minimize", seed=1,
                    pipeline=pipeline, on_epoch=hook, checkpoint=checkpoint, resume=saved)
    assert resumed.resumed_from == 6 and seen == list(range(1, resumed.stopped_epoch + 1))  # each epoch once
    assert resumed.history == whole.history  # exact: no tolerance
    assert (resumed.best_epoch, resumed.stopped_epoch, resumed.early_stopped) == \
        (whole.best_epoch, whole.stopped_epoch, whole.early_stopped)
    assert resumed.test_metrics == whole.test_metrics
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
        assert np.array_equal(a, b)


def test_replayed_epochs_go_through_the_hook_which_may_stop_there(
        tiny_spec: Callable[..., StudySpec], tmp_path: Path) -> None:
    spec = tiny_spec(train=CHECKPOINTED)
    data = prepare(spec)
    checkpoint = Checkpoint(tmp_path / "t.npz", every=3, identity="x")
    with pytest.raises(_Killed):
        _train(spec, PARAMS, data, on_epoch=_killed_at(4), checkpoint=checkpoint)
    model = _model(spec, PARAMS, data, InputPipeline(data, spec.train))
    saved = checkpoint.load(model)
    assert saved is not None
    pruned = _train(spec, PARAMS, data, model=model, resume=saved, on_epoch=lambda e, logs: e == 2)
    assert (pruned.stopped_by_hook, pruned.stopped_epoch, pruned.resumed_from) == (2, 2, 3)
    assert pruned.history == {k: v[:2] for k, v in saved.history.items()}


def test_no_checkpoint_at_the_last_epoch_nor_below_checkpoint_every(
        tiny_spec: Callable[..., StudySpec], tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "t.npz", every=3, identity="x")
    _train(tiny_spec(train={"max_epochs": 3, "checkpoint_every": 3}), PARAMS, checkpoint=checkpoint)
    assert not checkpoint.path.exists()  # the training ended at epoch 3: nothing to resume
    _train(tiny_spec(train={"max_epochs": 4, "early_stopping_patience": 4}), PARAMS, checkpoint=checkpoint)
    assert checkpoint.path.exists() and list(tmp_path.iterdir()) == [checkpoint.path]  # no temporary file left
    checkpoint.remove()
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_or_corrupt_checkpoint_is_refused_saying_why(
        tiny_spec: Callable[..., StudySpec], tmp_path: Path) -> None:
    spec = tiny_spec(train=CHECKPOINTED)
    data = prepare(spec)
    pipeline = InputPipeline(data, spec.train)
    checkpoint = Checkpoint(tmp_path / "t.npz", every=3, identity="mine")
    with pytest.raises(_Killed):
        _train(spec, PARAMS, data, on_epoch=_killed_at(4), checkpoint=checkpoint)
    good = checkpoint.path.read_bytes()
    model = _model(spec, PARAMS, data, pipeline)
    assert Checkpoint(tmp_path / "missing.npz", 3, "mine").load(model) is None
    with pytest.raises(UnusableCheckpoint, match="another configuration"):
        Checkpoint(checkpoint.path, 3, "someone else's").load(model)
    bigger = _model(spec, {**PARAMS, "units": 16}, data, pipeline)
    with pytest.raises(UnusableCheckpoint, match="do not fit this model"):
        checkpoint.load(bigger)
    for garbage in (good[: len(good) // 2], b"not a checkpoint", b""):
        checkpoint.path.write_bytes(garbage)
        with pytest.raises(UnusableCheckpoint, match="unreadable"):
            checkpoint.load(model)
    np.savez(checkpoint.path, state=np.array('{"format": "something else"}'))
    with pytest.raises(UnusableCheckpoint, match="not an nnstudy checkpoint"):
        checkpoint.load(model)


def test_objective_values_and_the_prediction_latency_of_the_restored_model(
        tiny_spec: Callable[..., StudySpec]) -> None:
    from nnstudy.training import prediction_latency_ms

    spec = tiny_spec(train={"max_epochs": 2})
    data = prepare(spec)
    result = _train(spec, PARAMS, data)
    names = ["val_loss", "n_params", "latency_ms"]
    assert math.isnan(result.objective_values(names)[2])  # not measured yet
    result.latency_ms = prediction_latency_ms(result.model, data.x_val, 5, repeats=3)
    assert result.objective_values(names) == (result.value("val_loss"), 33.0, result.latency_ms)
    assert 0 < result.latency_ms < 1000  # milliseconds per row: a few batches of 5 rows each
    assert math.isnan(prediction_latency_ms(result.model, data.x_val[:0], 5))


# --------------------------------------------------------------------------- reused compiled models ([train].reuse_compiled)

#: one configuration per optimizer, dropout on and off, learning rates that differ: one trace per optimizer and
#: dropout on/off, every later configuration of the same shapes trains an earlier trial's traced model
REUSED = [{**PARAMS, "depth": 2, "batch_size": 8, "optimizer": name, "learning_rate": lr, "dropout": dropout}
          for name in ("sgd", "adam", "adagrad", "adadelta", "rmsprop")
          for lr, dropout in ((0.01, 0.2), (0.05, 0.35), (0.02, 0.0), (0.03, 0.0))]


def _trials(spec: StudySpec, trials: list[dict[str, Any]], data: PreparedData) -> list[tuple[Any, ...]]:
    """Train each configuration as a study's trial does (seed 100 + i), through one factory; returns each
    trial's curves, test metrics, restored weights and whether its model was reused."""
    pipeline = InputPipeline(data, spec.train)
    factory = ModelFactory(spec, data.input_shape, data.task, data.n_classes, data.target_mean)
    out = []
    for i, params in enumerate(trials):
        model = factory.build(params, optuna.trial.FixedTrial(params), seed=100 + i,
                              steps_per_execution=pipeline.steps_per_execution)
        result = train(data, params, spec.train, model=model, metric="val_loss", direction="minimize", seed=100 + i,
                       pipeline=pipeline)
        out.append((result.history, result.test_metrics, [w.copy() for w in result.model.get_weights()],
                    factory.last_reused))
        factory.give_back()
    return out


def test_a_trial_on_a_reused_compiled_model_draws_the_fresh_models_curve(
        tiny_spec: Callable[..., StudySpec]) -> None:
    """Five optimizers, dropout on and off, learning and dropout rates that differ from the traced model's:
    every curve, test metric and restored weight equals, bit for bit, that of the trial's own fresh model
    (``reuse_compiled = false``); each configuration after the first of its shapes was trained reused."""
    spec = tiny_spec(train={"max_epochs": 3, "early_stopping_patience": 1})
    data = prepare(spec)
    reused = _trials(spec, REUSED, data)
    fresh = _trials(tiny_spec(train={"max_epochs": 3, "early_stopping_patience": 1, "reuse_compiled": False}),
                    REUSED, data)
    assert [r[3] for r in reused] == [False, True, False, True] * 5 and not any(f[3] for f in fresh)
    for (history, test, weights, _), (history0, test0, weights0, _) in zip(reused, fresh):
        assert history == history0 and test == test0  # exact: no tolerance
        assert all(np.array_equal(a, b) for a, b in zip(weights, weights0))
    assert len({str(r[0]) for r in reused}) == len(REUSED)  # each trial drew its own curve


def test_compiled_models_are_lent_once_kept_bounded_and_dropped_after_a_failed_training(
        tiny_spec: Callable[..., StudySpec]) -> None:
    from nnstudy.compiled import CompiledModels, cache_key

    spec = tiny_spec()
    data = prepare(spec)
    factory = ModelFactory(spec, data.input_shape, data.task, data.n_classes, data.target_mean)
    assert factory.compiled is not None
    factory.compiled = cache = CompiledModels(max_models=2)

    def build(**changes: Any) -> Any:
        params = {**PARAMS, **changes}
        return factory.build(params, optuna.trial.FixedTrial(params), seed=1)

    first = build()
    second = build(learning_rate=0.5)  # the first is still lent (a seed repeat's model, say): a model of its own
    assert second is not first and not factory.last_reused and len(cache) == 0
    factory.give_back()
    assert len(cache) == 2 and build() in (first, second) and factory.last_reused
    assert float(np.asarray(build(learning_rate=0.25).optimizer.learning_rate)) == 0.25  # the trial's own rate
    factory.give_back()
    assert cache_key(build(dropout=0.1)) == cache_key(build(dropout=0.4))  # rates are variables, not in the key
    assert cache_key(build(dropout=0.1)) != cache_key(build(units=16)) != cache_key(build(optimizer="sgd"))
    factory.give_back(keep=False)  # a failed training: what it was lent is dropped, the idle ones stay
    assert len(cache) == 2
    for units in (4, 16):
        build(units=units)
        factory.give_back()
    assert len(cache) == 2  # the least recently used went: the models of 8 units
    build(units=8)
    assert not factory.last_reused
    build(units=4)
    assert factory.last_reused
    off = ModelFactory(tiny_spec(train={"reuse_compiled": False}), data.input_shape, data.task)
    assert off.compiled is None
    from nnstudy.objective import curve_settings

    assert curve_settings(off.spec) == curve_settings(spec)  # a checkpoint is resumed whichever way


def test_the_exported_model_of_a_reused_trial_is_plain_keras_with_its_own_dropout_rate(
        tiny_spec: Callable[..., StudySpec], tmp_path: Path) -> None:
    import keras

    spec = tiny_spec()
    data = prepare(spec)
    factory = ModelFactory(spec, data.input_shape, data.task, data.n_classes, data.target_mean)
    for rate in (0.2, 0.45):
        params = {**PARAMS, "dropout": rate}
        model = factory.build(params, optuna.trial.FixedTrial(params), seed=1)
        factory.give_back()
    assert factory.last_reused
    dropout = model.get_layer("dropout_1")
    assert type(dropout) is keras.layers.Dropout and dropout.rate == 0.45
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert loaded.get_layer("dropout_1").rate == 0.45


@pytest.mark.slow
def test_a_reused_trial_equals_the_same_trial_trained_alone_in_a_fresh_process(
        tiny_spec: Callable[..., StudySpec]) -> None:
    """The last of the reused trials above, trained alone in a new process (no cache, nothing traced before):
    the same curves to the last bit."""
    import json
    import subprocess
    import sys

    spec = tiny_spec(train={"max_epochs": 3, "early_stopping_patience": 1})
    data = prepare(spec)
    trials = REUSED[-4:]  # rmsprop: traced on the first, reused by the others
    reused = _trials(spec, trials, data)
    assert reused[-1][3]
    from tensorflow.python.framework.config import is_op_determinism_enabled

    code = ("import json, optuna\nfrom nnstudy.spec import parse_spec\nfrom nnstudy.data import prepare\n"
            "from nnstudy.model import ModelFactory\nfrom nnstudy.training import InputPipeline, configure_determinism, "
            "train\n"
            f"configure_determinism({is_op_determinism_enabled()})\n"
            f"spec = parse_spec({spec.model_dump(exclude={'path'})!r})\n"
            f"params = {trials[-1]!r}\n"
            "data = prepare(spec); pipeline = InputPipeline(data, spec.train)\n"
            "model = ModelFactory(spec, data.input_shape, data.task, data.n_classes, data.target_mean).build(\n"
            f"    params, optuna.trial.FixedTrial(params), seed={100 + len(trials) - 1},\n"
            "    steps_per_execution=pipeline.steps_per_execution)\n"
            f"r = train(data, params, spec.train, model=model, metric='val_loss', direction='minimize', "
            f"seed={100 + len(trials) - 1}, pipeline=pipeline)\n"
            "print(json.dumps([r.history, r.test_metrics]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0, done.stderr[-2000:]
    history, test = json.loads(done.stdout.strip().splitlines()[-1])
    assert history == reused[-1][0] and test == reused[-1][1]
