"""The Optuna objective: one trial = sample a configuration, train it, record it in MLflow.

The data and the input pipeline are made once per process and closed over; a trial never
reloads them. The trial's value is the study metric at its best epoch.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna

from nnstudy.data import PreparedData
from nnstudy.diagnosis import Diagnosis, diagnose
from nnstudy.errors import TrialFailed
from nnstudy.spec import StudySpec
from nnstudy.tracking import TAG_FAIL_REASON, RunRecorder, RunStatus, Tracker
from nnstudy.training import InputPipeline, TrainResult, configure_determinism, device_name, train

#: called as progress(trial_number, epoch, logs) after every epoch
EpochProgress = Callable[[int, int, dict[str, float]], None]
#: called with the finished training result (e.g. to keep the best model)
ResultHook = Callable[[optuna.Trial, str, TrainResult], None]

# user attributes written on every Optuna trial
ATTR_RUN_ID = "mlflow_run_id"
ATTR_FAIL_REASON = "fail_reason"
ATTR_PENDING = "mlflow_pending"  # the MLflow record of a trial that ran while the tracking server was down


def run_id_of(trial: optuna.trial.FrozenTrial, study_attrs: dict[str, Any]) -> str | None:
    """The MLflow run of a trial: set when the trial started, or by ``nnstudy sync`` afterwards."""
    run_id = trial.user_attrs.get(ATTR_RUN_ID) or study_attrs.get(f"{ATTR_RUN_ID}.{trial.number}")
    return str(run_id) if run_id else None


def trial_seed(study_seed: int, trial_number: int) -> int:
    """The seed of one trial: fixed by the study seed and the trial number."""
    return (study_seed * 1_000_003 + trial_number * 7919 + 1) % (2**31 - 1)


def is_out_of_memory(err: BaseException) -> bool:
    """MemoryError, TensorFlow's ResourceExhaustedError, or a backend's 'out of memory' error."""
    if isinstance(err, MemoryError):
        return True
    name = type(err).__name__
    text = str(err).lower()
    return name == "ResourceExhaustedError" or "resource_exhausted" in text or "out of memory" in text


#: parameters that make a model bigger; a configuration at least as big as one that ran out of memory is skipped
SIZE_PARAMS = ("units", "depth", "batch_size")


def _ran_out_of_memory_before(trial: optuna.Trial, params: dict[str, Any]) -> int | None:
    """The number of an earlier trial that ran out of memory with a configuration no bigger than ``params``."""
    for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if t.user_attrs.get(ATTR_FAIL_REASON) != "out-of-memory":
            continue
        earlier = {**params, **t.params}
        if all(params[k] >= earlier[k] for k in SIZE_PARAMS):
            return t.number
    return None


@dataclass
class Objective:
    """Callable passed to ``study.optimize``."""

    spec: StudySpec
    data: PreparedData
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    progress: EpochProgress | None = None
    on_result: ResultHook | None = None
    run_tags: dict[str, str] = field(default_factory=dict)
    pipeline: InputPipeline | None = None

    def __post_init__(self) -> None:
        configure_determinism(self.spec.train.deterministic)
        if self.pipeline is None:
            self.pipeline = InputPipeline(self.data)
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

    def __call__(self, trial: optuna.Trial) -> float:
        spec, metric = self.spec, self.spec.study.metric
        params = spec.space.suggest(trial)
        retry_tags = self._retry_links(trial)
        # a re-run of a dead worker's trial repeats its seed as well as its parameters
        seed = trial_seed(spec.study.seed, int(trial.user_attrs.get("retry_of", trial.number)))
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", platform.node())
        rec = RunRecorder(
            self.tracker, self.experiment_id, self.parent_run_id, spec.name, trial.number,
            params={**params, **self.fixed_params(), "seed": seed},
            tags={**self.run_tags, "nnstudy.device": self.device, "nnstudy.data_digest": self.data.digest,
                  **retry_tags},
        )
        if rec.run_id is not None:
            trial.set_user_attr(ATTR_RUN_ID, rec.run_id)
            if "nnstudy.retry_of_run" in retry_tags:
                self.tracker.client.set_tag(retry_tags["nnstudy.retry_of_run"], "nnstudy.retried_by", rec.run_id)
        too_big = _ran_out_of_memory_before(trial, params)
        if too_big is not None:
            # tell the sampler without training: a pruned trial with no epochs ranks below every other
            trial.set_user_attr(ATTR_FAIL_REASON, "out-of-memory-predicted")
            self._finish(trial, rec, "KILLED", {}, {TAG_FAIL_REASON: "out-of-memory-predicted",
                                                   "nnstudy.larger_than_trial": str(too_big)})
            raise optuna.TrialPruned(f"at least as large as trial {too_big}, which ran out of memory")

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
            result = train(self.data, params, spec.train, metric=metric, direction=spec.direction, seed=seed,
                           pipeline=self.pipeline, on_epoch=on_epoch)
        except BaseException as err:
            interrupted = isinstance(err, (KeyboardInterrupt, SystemExit))
            reason = "interrupted" if interrupted else ("out-of-memory" if is_out_of_memory(err) else "error")
            trial.set_user_attr(ATTR_FAIL_REASON, reason)
            self._finish(trial, rec, "KILLED" if interrupted else "FAILED", {},
                         {TAG_FAIL_REASON: reason, "nnstudy.error": f"{type(err).__name__}: {err}"[:4000]})
            if reason == "out-of-memory":
                raise TrialFailed(reason, f"{type(err).__name__}: {err}"[:500]) from err
            raise
        return self._record(trial, rec, params, result)

    def _finish(self, trial: optuna.Trial, rec: RunRecorder, status: RunStatus, metrics: dict[str, float],
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
        trial.set_user_attr("retry_of", original)
        tags = {"nnstudy.retry_of_trial": str(original)}
        for t in trial.study.get_trials(deepcopy=False):
            if t.number == original and t.user_attrs.get(ATTR_RUN_ID):
                tags["nnstudy.retry_of_run"] = str(t.user_attrs[ATTR_RUN_ID])
        return tags

    def _record(self, trial: optuna.Trial, rec: RunRecorder, params: dict[str, Any], result: TrainResult) -> float:
        metric = self.spec.study.metric
        value = result.value(metric)
        summary = {"best_epoch": result.best_epoch, "stopped_epoch": result.stopped_epoch,
                   "duration_s": result.duration_s, "mlflow_logging_s": rec.logging_s,
                   f"best_{metric}": value, **result.test_metrics}
        for key in ("best_epoch", "stopped_epoch"):
            trial.set_user_attr(key, summary[key])
        trial.set_user_attr("early_stopped", result.early_stopped)
        trial.set_user_attr("duration_s", round(result.duration_s, 3))
        found = diagnose(result.history.get("loss", []), result.history.get("val_loss", []),
                         best_epoch=result.best_epoch or None)
        if result.diverged_at is not None:
            found = Diagnosis("diverged", result.diverged_at, f"loss became NaN/infinite or exploded at epoch "
                              f"{result.diverged_at}: the learning rate is too high")
        trial.set_user_attr("diagnosis", found.label)
        trial.set_user_attr("diagnosis_epoch", found.epoch)
        trial.set_user_attr("diagnosis_detail", found.detail)
        tags = {"nnstudy.early_stopped": str(result.early_stopped).lower(), "nnstudy.diagnosis": found.label,
                "nnstudy.diagnosis_detail": found.detail}
        if result.diverged_at is not None:
            detail = (f"loss became NaN/infinite or exploded at epoch {result.diverged_at} "
                      f"(learning_rate={params['learning_rate']:g}, optimizer={params['optimizer']})")
            trial.set_user_attr(ATTR_FAIL_REASON, "diverged")
            trial.set_user_attr("diverged_at", result.diverged_at)
            self._finish(trial, rec, "FAILED", {**summary, "diverged_at": result.diverged_at},
                         {**tags, TAG_FAIL_REASON: "diverged"})
            raise TrialFailed("diverged", detail)
        if result.stopped_by_hook is not None:
            trial.set_user_attr("pruned_at", result.stopped_by_hook)
            self._finish(trial, rec, "KILLED", {**summary, "pruned_at_epoch": result.stopped_by_hook},
                         {**tags, "nnstudy.pruned": "true"})
            raise optuna.TrialPruned(f"pruned at epoch {result.stopped_by_hook}")
        if not math.isfinite(value):
            trial.set_user_attr(ATTR_FAIL_REASON, "no-metric")
            self._finish(trial, rec, "FAILED", summary, {**tags, TAG_FAIL_REASON: "no-metric"})
            raise TrialFailed("no-metric", f"{metric} was never finite")
        if self.on_result is not None and rec.run_id is not None and not rec.offline:
            try:
                self.on_result(trial, rec.run_id, result)
            except Exception as err:  # the model could not be stored: the trial's result still counts
                rec._offline(err)
        self._finish(trial, rec, "FINISHED", summary, tags)
        return value
