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
    ATTR_LATENCY_MS,
    ATTR_N_PARAMS,
    ATTR_PENDING,
    ATTR_PID,
    ATTR_PRUNED_AT,
    ATTR_REPEAT_VALUES,
    ATTR_RESUMED_FROM,
    ATTR_RETRY_OF,
    ATTR_RUN_ID,
    ATTR_SEED,
    ATTR_STOPPED_EPOCH,
    TAG_DATA_DIGEST,
    TAG_REUSED_COMPILED,
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
    TAG_RESUMED_FROM,
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
from nnstudy.training import (
    Checkpoint,
    InputPipeline,
    Saved,
    TrainResult,
    UnusableCheckpoint,
    checkpoint_identity,
    device_name,
    prediction_latency_ms,
    train,
)

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


def report_epoch(trial: TrialLike, value: float, step: int) -> bool:
    """Tell the pruner a trial's value at ``step`` and return whether to stop it. A study of several
    objectives has no pruner (Optuna refuses ``report`` there): nothing is reported, nothing stops."""
    if isinstance(trial, optuna.Trial) and len(trial.study.directions) > 1:
        return False
    trial.report(value, step)
    return trial.should_prune()


#: [train] settings that do not change a training's curve: a checkpoint written under others is still resumed
NOT_CURVE_SETTINGS = {"checkpoint_every", "system_metrics", "system_metrics_interval", "reuse_compiled"}


def curve_settings(spec: StudySpec) -> dict[str, Any]:
    """The ``[train]`` settings a checkpoint must match to be resumed (see :data:`NOT_CURVE_SETTINGS`)."""
    return spec.train.model_dump(exclude=NOT_CURVE_SETTINGS)


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
    checkpoints: Path | None = None  # the study's checkpoint folder ([train].checkpoint_every; see Store)
    #: the storage ids of the trials this objective started, known before any of their records is written:
    #: a trial whose first write failed (a full disk) has no pid to tell whose it is, but its process knows
    started: list[int] = field(default_factory=list)
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
                "test_fraction": self.spec.data.test_fraction, "split_seed": self.spec.study.seed,
                **({"repeats": self.spec.study.repeats, "aggregate": self.spec.study.aggregate}
                   if self.spec.study.repeats > 1 else {})}

    def seed_of(self, trial: TrialLike) -> int:
        """A re-run of a dead worker's trial (and a reproduction) repeats the original's seed."""
        recorded = trial.user_attrs.get(ATTR_SEED)
        if isinstance(trial, optuna.trial.FixedTrial) and recorded is not None:
            return int(recorded)
        return trial_seed(self.spec.study.seed, int(trial.user_attrs.get(ATTR_RETRY_OF, trial.number)))

    def __call__(self, trial: TrialLike) -> float | tuple[float, ...]:
        if isinstance(trial, optuna.Trial):
            self.started.append(trial._trial_id)
        try:
            return self._trial(trial)
        finally:  # however the trial ended (an error before its run was finished too), its system metrics stop
            if self.last_recorder is not None:
                self.last_recorder.close()
            # its trained model (result.model) may now train a later trial: kept unless the training failed
            self.models.give_back(keep=self.last_result is not None)

    def _trial(self, trial: TrialLike) -> float | tuple[float, ...]:
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
                                      steps_per_execution=self.pipeline.steps_per_execution)
            params = self.models.last_params  # a builder's hp values are known once it has run
        except BaseException as err:
            if self.models.kind == "builder":  # what it asked for before it failed, not the MLP's defaults
                params = {**{k: params[k] for k in BUILDER_SEARCH}, **trial.params}
            self._failed(trial, self._start(trial, params, seed, retry_tags), err)
        built_s = time.perf_counter() - start
        checkpoint, resume = self._checkpoint(trial, params, seed, model)
        if resume is not None:
            retry_tags = {**retry_tags, TAG_RESUMED_FROM: str(resume.epoch)}
        if self.models.compiled is not None:
            retry_tags = {**retry_tags, TAG_REUSED_COMPILED: str(self.models.last_reused).lower()}
        rec = self._start(trial, params, seed, retry_tags)
        self._log_model(trial, rec, model)

        def on_epoch(epoch: int, logs: dict[str, float]) -> bool:
            rec.log_epoch(epoch, logs)
            if self.progress is not None:
                self.progress(trial.number, epoch, logs)
            value = logs.get(metric)
            if value is None or not math.isfinite(value):
                return False
            return report_epoch(trial, value, epoch)

        try:
            if spec.study.repeats > 1:  # seed repeats (nnstudy.repeats); one repeat is the plain path below
                result = self._train_repeats(trial, rec, params, seed, model)
            else:
                result = train(self.data, params, spec.train, model=model, metric=metric, direction=spec.direction,
                               seed=seed, pipeline=self.pipeline, on_epoch=on_epoch, checkpoint=checkpoint,
                               resume=resume)
        except BaseException as err:
            self._failed(trial, rec, err)
        finally:
            if checkpoint is not None:  # the trial ended here (a killed worker never gets here): nothing to resume
                checkpoint.remove()
        result.duration_s += built_s
        self.last_result = result
        return self._record(trial, rec, params, result)

    def _train_repeats(self, trial: TrialLike, rec: RunRecorder, params: dict[str, Any], seed: int,
                       model: Any) -> TrainResult:
        """``[study].repeats`` trainings of one configuration, one after another, each with its own seed
        and early stopping; the pruner sees the running aggregate (see :mod:`nnstudy.repeats`). A repeat
        that diverges or is pruned ends the trial. Logs each repeat's curves as ``<metric>/repeat_<k>``,
        the mean curves under the plain names, and the repeats' values, mean and standard deviation."""
        from nnstudy.repeats import aggregate, best_repeat, combine, repeat_seed, spread, step_of

        spec, metric, how = self.spec, self.spec.study.metric, self.spec.study.aggregate
        assert self.pipeline is not None
        seeds = [repeat_seed(seed, k) for k in range(spec.study.repeats)]
        rec.log_params({"repeat_seeds": ",".join(map(str, seeds))})
        results: list[TrainResult] = []
        for k, repeat_seed_k in enumerate(seeds):
            done = [r.value(metric) for r in results]
            if k > 0:
                model = self.models.build(params, trial, seed=repeat_seed_k,
                                          steps_per_execution=self.pipeline.steps_per_execution)

            def on_epoch(epoch: int, logs: dict[str, float], k: int = k, done: list[float] = done) -> bool:
                rec.log_epoch(epoch, {f"{key}/repeat_{k}": v for key, v in logs.items()})
                if self.progress is not None:
                    self.progress(trial.number, epoch, logs)
                value = logs.get(metric)
                if value is None or not math.isfinite(value):
                    return False
                return report_epoch(trial, aggregate([*done, value], how, spec.direction),
                                    step_of(k, epoch, spec.train.max_epochs))

            result = train(self.data, params, spec.train, model=model, metric=metric, direction=spec.direction,
                           seed=repeat_seed_k, pipeline=self.pipeline, on_epoch=on_epoch)
            results.append(result)
            best = best_repeat([r.value(metric) for r in results], spec.direction)
            for other in results:  # only the best repeat's model is kept in memory
                other.model = results[best].model
            if result.diverged_at is not None or result.stopped_by_hook is not None:
                rec.summary_metrics["stopped_in_repeat"] = float(k)
                break
        combined = combine(results, metric=metric, how=how, direction=spec.direction)
        for i in range(max((len(c) for c in combined.history.values()), default=0)):  # the mean curves
            rec.log_epoch(i + 1, {key: c[i] for key, c in combined.history.items() if i < len(c) and math.isfinite(c[i])})
        values = combined.values(metric)
        finite = [v for v in values if math.isfinite(v)]
        trial.set_user_attr(ATTR_REPEAT_VALUES, [v if math.isfinite(v) else None for v in values])
        summary = rec.summary_metrics
        summary["kept_repeat"] = float(combined.kept)
        if finite:
            mean, sd = spread(finite)
            summary[f"best_{metric}/mean"], summary[f"best_{metric}/sd"] = mean, sd
        for k, r in enumerate(results):
            summary[f"best_epoch/repeat_{k}"] = float(r.best_epoch)
            summary.update({f"{name}/repeat_{k}": v for name, v in r.test_metrics.items()})
            if math.isfinite(values[k]):
                summary[f"best_{metric}/repeat_{k}"] = values[k]
        return combined

    def _checkpoint(self, trial: TrialLike, params: dict[str, Any], seed: int,
                    model: Any) -> tuple[Checkpoint | None, Saved | None]:
        """The checkpoint a study's trial saves every ``[train].checkpoint_every`` epochs, named after the trial
        it re-runs (if any), and the state a re-run of a dead worker's trial goes on from (None: epoch 1; a
        checkpoint of anything else is ignored with a warning). Reproductions and seed repeats keep none."""
        every = self.spec.train.checkpoint_every
        if every is None or self.checkpoints is None or not isinstance(trial, optuna.Trial) \
                or self.spec.study.repeats > 1:
            return None, None
        original = trial.user_attrs.get(ATTR_RETRY_OF)
        identity = checkpoint_identity(study=self.spec.name, params=params, seed=seed, data=self.data.digest,
                                       fixed=self.fixed_params(), model=self.spec.model.model_dump(),
                                       train=curve_settings(self.spec))
        number = trial.number if original is None else int(original)
        checkpoint = Checkpoint(self.checkpoints / f"trial-{number:05d}.npz", every, identity)
        if original is None:
            return checkpoint, None
        try:
            resume = checkpoint.load(model)
        except UnusableCheckpoint as err:
            print(f"warning: ignoring the checkpoint {checkpoint.path} ({err}); trial {trial.number} (a re-run of "
                  f"trial {original}) starts from epoch 1", file=sys.stderr)
            return checkpoint, None
        if resume is not None:
            trial.set_user_attr(ATTR_RESUMED_FROM, resume.epoch)
            print(f"trial {trial.number} (a re-run of trial {original}) resumes from its checkpoint at epoch "
                  f"{resume.epoch} of {self.spec.train.max_epochs}", file=sys.stderr)
        return checkpoint, resume

    def _start(self, trial: TrialLike, params: dict[str, Any], seed: int, retry_tags: dict[str, str]) -> RunRecorder:
        """Open the trial's run with every parameter (searched, fixed and the seed)."""
        rec = self.runs.start(trial.number, params={**params, **self.fixed_params(), "seed": seed},
                              tags={**self.run_tags, TAG_DEVICE: self.device, TAG_THREADS: str(training_threads()),
                                    TAG_DATA_DIGEST: self.data.digest,
                                    **retry_tags},
                              system_metrics_s=self._system_metrics_s())
        self.last_recorder = rec
        if rec.run_id is not None:
            trial.set_user_attr(ATTR_RUN_ID, rec.run_id)
            if TAG_RETRY_OF_RUN in retry_tags:
                self.runs.tracker.client.set_tag(retry_tags[TAG_RETRY_OF_RUN], TAG_RETRIED_BY, rec.run_id)
        return rec

    def _system_metrics_s(self) -> float | None:
        """Seconds between system-metrics samples of a trial's run, None when ``[train].system_metrics`` is off."""
        train = self.spec.train
        return train.system_metrics_interval if train.system_metrics else None

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

    def _measure_latency(self, trial: TrialLike, rec: RunRecorder, result: TrainResult) -> None:
        """The restored model's prediction time per row on the validation rows (``latency_ms``: a summary
        metric and a trial attribute), measured for every trial that completes."""
        result.latency_ms = prediction_latency_ms(result.model, self.data.x_val, self.spec.train.eval_batch_size)
        trial.set_user_attr(ATTR_LATENCY_MS, round(result.latency_ms, 6))
        rec.summary_metrics["latency_ms"] = result.latency_ms

    def _values(self, value: float, result: TrainResult) -> float | tuple[float, ...]:
        """What the study is told: the metric's value, or with several objectives the metric's value and
        the trial measures, in the order of ``[study].objectives``."""
        if not self.spec.multi_objective:
            return value
        return (value, *result.objective_values(self.spec.objectives)[1:])

    def _record(self, trial: TrialLike, rec: RunRecorder, params: dict[str, Any],
                result: TrainResult) -> float | tuple[float, ...]:
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
        self._measure_latency(trial, rec, result)
        if self.on_result is not None and rec.run_id is not None and not rec.offline:
            try:
                self.on_result(trial, rec.run_id, result)
            except Exception as err:  # the model could not be stored: the trial's result still counts
                reason = f"{type(err).__name__}: {err}"[:500]
                tags[TAG_MODEL_ERROR] = reason
                print(f"warning: the model of trial {trial.number} could not be logged ({reason}); "
                      "its result still counts", file=sys.stderr)
        self._finish(trial, rec, "FINISHED", summary, tags)
        return self._values(value, result)
