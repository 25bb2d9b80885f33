"""The trial pipeline: one trial = sample a configuration, train it, record it.

:class:`Objective` is the one code path every training goes through: a study's trials
(an ``optuna.Trial``, recorded as child runs of the study) and reproductions (an
``optuna.trial.FixedTrial`` with the original parameters, recorded as a reproduction run), so
both runs carry the same params, tags and summary. The data and the input pipeline are made
once per process and closed over; a trial never reloads them. The value is the study metric
at the best epoch.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Union

import optuna

from nnstudy.contract import (
    ATTR_BEST_EPOCH,
    ATTR_DIAGNOSIS,
    ATTR_DIAGNOSIS_DETAIL,
    ATTR_DIAGNOSIS_EPOCH,
    ATTR_DIVERGED_AT,
    ATTR_DURATION,
    ATTR_EARLY_STOPPED,
    ATTR_FAIL_REASON,
    ATTR_HOST,
    ATTR_N_PARAMS,
    ATTR_PENDING,
    ATTR_PID,
    ATTR_PRUNED_AT,
    ATTR_RETRY_OF,
    ATTR_RUN_ID,
    ATTR_SEED,
    ATTR_STOPPED_EPOCH,
    TAG_DATA_DIGEST,
    TAG_DEVICE,
    TAG_THREADS,
    TAG_DIAGNOSIS,
    TAG_DIAGNOSIS_DETAIL,
    TAG_EARLY_STOPPED,
    TAG_ERROR,
    TAG_FAIL_REASON,
    TAG_LARGER_THAN,
    TAG_MODEL_ERROR,
    TAG_PRUNED,
    TAG_RETRIED_BY,
    TAG_RETRY_OF_RUN,
    TAG_RETRY_OF_TRIAL,
    trial_seed,
)
from nnstudy.data import PreparedData
from nnstudy.diagnosis import Diagnosis, diagnose
from nnstudy.errors import TrialFailed, UserInputError, is_out_of_memory
from nnstudy.interrupts import GATE
from nnstudy.model import ModelFactory, model_summary
from nnstudy.recorder import RunRecorder, RunTarget
from nnstudy.spec import BUILDER_SEARCH, StudySpec
from nnstudy.tracking import RunStatus
from nnstudy.runtime import training_threads
from nnstudy.training import InputPipeline, TrainResult, device_name, train

TrialLike = Union[optuna.Trial, optuna.trial.FixedTrial]
#: called as progress(trial_number, epoch, logs) after every epoch
EpochProgress = Callable[[int, int, dict[str, float]], None]
#: called with the finished training result (e.g. to keep the best model): hook(trial, run_id, result)
ResultHook = Callable[[TrialLike, str, TrainResult], None]

#: parameters that make a model bigger; a configuration at least as big as one that ran out of memory is skipped
SIZE_PARAMS = ("units", "depth", "batch_size")


def _ran_out_of_memory_before(trial: optuna.Trial, params: dict[str, Any]) -> int | None:
    """The number of an earlier trial that ran out of memory with a configuration no bigger than ``params``."""
    sizes = [k for k in SIZE_PARAMS if isinstance(params.get(k), (int, float))]
    for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if t.user_attrs.get(ATTR_FAIL_REASON) != "out-of-memory":
            continue
        earlier = {**params, **t.params}
        if all(params[k] >= earlier[k] for k in sizes):
            return t.number
    return None


@dataclass
class Objective:
    """The callable passed to ``study.optimize`` (and called with a ``FixedTrial`` to reproduce)."""

    spec: StudySpec
    data: PreparedData
    runs: RunTarget
    pipeline: InputPipeline | None = None
    progress: EpochProgress | None = None
    on_result: ResultHook | None = None
    run_tags: dict[str, str] = field(default_factory=dict)
    last_recorder: RunRecorder | None = field(default=None, init=False)
    last_result: TrainResult | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.pipeline is None:
            self.pipeline = InputPipeline(self.data, self.spec.train)
        self.models = ModelFactory(self.spec, self.data.input_shape, self.data.task, self.data.n_classes,
                                   self.data.target_mean)
        self.device = device_name()

    def fixed_params(self) -> dict[str, Any]:
        """Everything besides the searched parameters that decides a trial's outcome."""
        t = self.spec.train
        return {"metric": self.spec.study.metric, "max_epochs": t.max_epochs,
                "early_stopping_patience": t.early_stopping_patience,
                "restore_best_weights": t.restore_best_weights, "min_delta": t.min_delta,
                "data_source": self.spec.data.source, "task": self.data.task,
                "validation_fraction": self.spec.data.validation_fraction,
                "test_fraction": self.spec.data.test_fraction, "split_seed": self.spec.study.seed}

    def seed_of(self, trial: TrialLike) -> int:
        """A re-run of a dead worker's trial (and a reproduction) repeats the original's seed."""
        recorded = trial.user_attrs.get(ATTR_SEED)
        if isinstance(trial, optuna.trial.FixedTrial) and recorded is not None:
            return int(recorded)
        return trial_seed(self.spec.study.seed, int(trial.user_attrs.get(ATTR_RETRY_OF, trial.number)))

    def __call__(self, trial: TrialLike) -> float:
        spec, metric = self.spec, self.spec.study.metric
        params = spec.space.suggest(trial)
        retry_tags = self._retry_links(trial) if isinstance(trial, optuna.Trial) else {}
        seed = self.seed_of(trial)
        trial.set_user_attr(ATTR_SEED, seed)
        trial.set_user_attr(ATTR_PID, os.getpid())
        trial.set_user_attr(ATTR_HOST, platform.node())
        self.last_recorder, self.last_result = None, None
        too_big = None
        if isinstance(trial, optuna.Trial) and self.models.kind == "mlp":  # sizes of other models: see n_params
            too_big = _ran_out_of_memory_before(trial, params)
        if too_big is not None:
            # tell the sampler without training: a pruned trial with no epochs ranks below every other
            rec = self._start(trial, params, seed, retry_tags)
            trial.set_user_attr(ATTR_FAIL_REASON, "out-of-memory-predicted")
            self._finish(trial, rec, "KILLED", {}, {TAG_FAIL_REASON: "out-of-memory-predicted",
                                                   TAG_LARGER_THAN: str(too_big)})
            raise optuna.TrialPruned(f"at least as large as trial {too_big}, which ran out of memory")
        assert self.pipeline is not None
        start = time.perf_counter()
        try:
            model = self.models.build(params, trial, seed=seed,
                                      steps_per_execution=self.pipeline.steps_per_execution(int(params["batch_size"])))
            params = self.models.last_params  # a builder's hp values are known once it has run
        except BaseException as err:
            if self.models.kind == "builder":  # what it asked for before it failed, not the MLP's defaults
                params = {**{k: params[k] for k in BUILDER_SEARCH}, **trial.params}
            self._failed(trial, self._start(trial, params, seed, retry_tags), err)
        built_s = time.perf_counter() - start
        rec = self._start(trial, params, seed, retry_tags)
        self._log_model(trial, rec, model)

        def on_epoch(epoch: int, logs: dict[str, float]) -> bool:
            rec.log_epoch(epoch, logs)
            if self.progress is not None:
                self.progress(trial.number, epoch, logs)
            value = logs.get(metric)
            if value is None or not math.isfinite(value):
                return False
            trial.report(value, epoch)
            return trial.should_prune()

        try:
            result = train(self.data, params, spec.train, model=model, metric=metric, direction=spec.direction,
                           seed=seed, pipeline=self.pipeline, on_epoch=on_epoch)
        except BaseException as err:
            self._failed(trial, rec, err)
        result.duration_s += built_s
        self.last_result = result
        return self._record(trial, rec, params, result)

    def _start(self, trial: TrialLike, params: dict[str, Any], seed: int, retry_tags: dict[str, str]) -> RunRecorder:
        """Open the trial's run with every parameter (searched, fixed and the seed)."""
        rec = self.runs.start(trial.number, params={**params, **self.fixed_params(), "seed": seed},
                              tags={**self.run_tags, TAG_DEVICE: self.device, TAG_THREADS: str(training_threads()),
                                    TAG_DATA_DIGEST: self.data.digest,
                                    **retry_tags})
        self.last_recorder = rec
        if rec.run_id is not None:
            trial.set_user_attr(ATTR_RUN_ID, rec.run_id)
            if TAG_RETRY_OF_RUN in retry_tags:
                self.runs.tracker.client.set_tag(retry_tags[TAG_RETRY_OF_RUN], TAG_RETRIED_BY, rec.run_id)
        return rec

    def _failed(self, trial: TrialLike, rec: RunRecorder, err: BaseException) -> NoReturn:
        """Record why building or training stopped, and raise what the study should see: a model that
        cannot be built or that ran out of memory fails this trial only (the study goes on)."""
        # a signal that landed inside the framework can surface as another error (TensorFlow's "None values not
        # supported" when its op was cut short): with an interrupt under way, it is that interrupt
        interrupted = isinstance(err, (KeyboardInterrupt, SystemExit)) or GATE.signum is not None
        if isinstance(err, UserInputError):  # this configuration cannot be built (a shape that does not fit, ...)
            reason, detail = "model-error", str(err)
        else:
            reason = "interrupted" if interrupted else ("out-of-memory" if is_out_of_memory(err) else "error")
            detail = f"{type(err).__name__}: {err}"
        trial.set_user_attr(ATTR_FAIL_REASON, reason)
        self._finish(trial, rec, "KILLED" if interrupted else "FAILED", {},
                     {TAG_FAIL_REASON: reason, TAG_ERROR: detail[:4000]})
        if reason in ("model-error", "out-of-memory"):
            raise TrialFailed(reason, detail[:500]) from err
        if interrupted and not isinstance(err, (KeyboardInterrupt, SystemExit)):
            GATE.check()  # raises the interrupt itself (exit 130), not the error it caused
        raise err

    def _log_model(self, trial: TrialLike, rec: RunRecorder, model: Any) -> None:
        """The model's size (metric and attribute ``n_params``) and its summary (``model/summary.txt``)."""
        n_params = int(model.count_params())
        trial.set_user_attr(ATTR_N_PARAMS, n_params)
        rec.summary_metrics["n_params"] = float(n_params)

        def write(tracker: Any, run_id: str) -> None:
            with tempfile.TemporaryDirectory() as tmp:
                Path(tmp, "summary.txt").write_text(model_summary(model), encoding="utf-8")
                tracker.log_artifacts(run_id, Path(tmp), "model")

        rec.log_artifacts(write)

    def _finish(self, trial: TrialLike, rec: RunRecorder, status: RunStatus, metrics: dict[str, float],
                tags: dict[str, str]) -> None:
        """End the MLflow run; when the server is unreachable, keep the whole record in the Optuna trial."""
        pending = rec.finish(status, metrics, tags)
        if pending is not None:
            trial.set_user_attr(ATTR_PENDING, pending)
            print(f"warning: MLflow unreachable during trial {trial.number} ({rec.error}); its record is kept in "
                  "the Optuna storage and written by `nnstudy sync` (or the next `nnstudy run`)", file=sys.stderr)

    def _retry_links(self, trial: optuna.Trial) -> dict[str, str]:
        """Tags linking a re-run of a dead worker's trial to the original (and the Optuna attribute)."""
        frozen = trial.study._storage.get_trial(trial._trial_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            original = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        if original is None:
            return {}
        trial.set_user_attr(ATTR_RETRY_OF, original)
        tags = {TAG_RETRY_OF_TRIAL: str(original)}
        for t in trial.study.get_trials(deepcopy=False):
            if t.number == original and t.user_attrs.get(ATTR_RUN_ID):
                tags[TAG_RETRY_OF_RUN] = str(t.user_attrs[ATTR_RUN_ID])
        return tags

    def _diagnosis(self, result: TrainResult) -> Diagnosis:
        if result.diverged_at is not None:
            return Diagnosis("diverged", result.diverged_at, f"loss became NaN/infinite or exploded at epoch "
                             f"{result.diverged_at}: the learning rate is too high")
        return diagnose(result.history.get("loss", []), result.history.get("val_loss", []),
                        best_epoch=result.best_epoch or None)

    def _record(self, trial: TrialLike, rec: RunRecorder, params: dict[str, Any], result: TrainResult) -> float:
        metric = self.spec.study.metric
        value = result.value(metric)
        summary = {"best_epoch": result.best_epoch, "stopped_epoch": result.stopped_epoch,
                   "duration_s": result.duration_s, "mlflow_logging_s": rec.logging_s,
                   f"best_{metric}": value, **result.test_metrics}
        trial.set_user_attr(ATTR_BEST_EPOCH, result.best_epoch)
        trial.set_user_attr(ATTR_STOPPED_EPOCH, result.stopped_epoch)
        trial.set_user_attr(ATTR_EARLY_STOPPED, result.early_stopped)
        trial.set_user_attr(ATTR_DURATION, round(result.duration_s, 3))
        found = self._diagnosis(result)
        trial.set_user_attr(ATTR_DIAGNOSIS, found.label)
        trial.set_user_attr(ATTR_DIAGNOSIS_EPOCH, found.epoch)
        trial.set_user_attr(ATTR_DIAGNOSIS_DETAIL, found.detail)
        tags = {TAG_EARLY_STOPPED: str(result.early_stopped).lower(), TAG_DIAGNOSIS: found.label,
                TAG_DIAGNOSIS_DETAIL: found.detail}
        if result.diverged_at is not None:
            detail = (f"loss became NaN/infinite or exploded at epoch {result.diverged_at} "
                      f"(learning_rate={params['learning_rate']:g}, optimizer={params['optimizer']})")
            trial.set_user_attr(ATTR_FAIL_REASON, "diverged")
            trial.set_user_attr(ATTR_DIVERGED_AT, result.diverged_at)
            self._finish(trial, rec, "FAILED", {**summary, "diverged_at": result.diverged_at},
                         {**tags, TAG_FAIL_REASON: "diverged"})
            raise TrialFailed("diverged", detail)
        if result.stopped_by_hook is not None:
            trial.set_user_attr(ATTR_PRUNED_AT, result.stopped_by_hook)
            self._finish(trial, rec, "KILLED", {**summary, "pruned_at_epoch": result.stopped_by_hook},
                         {**tags, TAG_PRUNED: "true"})
            raise optuna.TrialPruned(f"pruned at epoch {result.stopped_by_hook}")
        if not math.isfinite(value):
            trial.set_user_attr(ATTR_FAIL_REASON, "no-metric")
            self._finish(trial, rec, "FAILED", summary, {**tags, TAG_FAIL_REASON: "no-metric"})
            raise TrialFailed("no-metric", f"{metric} was never finite")
        if self.on_result is not None and rec.run_id is not None and not rec.offline:
            try:
                self.on_result(trial, rec.run_id, result)
            except Exception as err:  # the model could not be stored: the trial's result still counts
                reason = f"{type(err).__name__}: {err}"[:500]
                tags[TAG_MODEL_ERROR] = reason
                print(f"warning: the model of trial {trial.number} could not be logged ({reason}); "
                      "its result still counts", file=sys.stderr)
        self._finish(trial, rec, "FINISHED", summary, tags)
        return value
