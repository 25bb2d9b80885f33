"""The record contract: every key that links an Optuna trial and its MLflow run, in one place.

A trial lives in two stores. The Optuna trial holds its parameters, value and state, plus
user attributes (``ATTR_*``) such as its MLflow run id and seed; the MLflow run holds the
curves and carries tags (``TAG_*``) naming its study and trial number. The study's Optuna
user attributes (``STUDY_*``) hold the experiment and parent run. Nothing outside this module
spells one of these keys; :class:`TrialRecord` reads a trial from either store.

Knows neither Keras nor MLflow's client; imports Optuna only for its types.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mlflow.entities import Run
    from optuna.trial import FrozenTrial

# --------------------------------------------------------------------------- Optuna trial user attributes
ATTR_RUN_ID = "mlflow_run_id"  # the trial's MLflow child run
ATTR_PENDING = "mlflow_pending"  # its whole MLflow record, kept while the tracking server was unreachable
ATTR_FAIL_REASON = "fail_reason"  # diverged, out-of-memory, worker-died, interrupted, error, ...
ATTR_SEED = "seed"
ATTR_PID = "pid"
ATTR_HOST = "host"
ATTR_RETRY_OF = "retry_of"  # number of the trial whose dead worker this one re-runs
ATTR_RESUMED_FROM = "resumed_from_epoch"  # such a re-run went on from the checkpoint of this epoch
ATTR_BEST_EPOCH = "best_epoch"
ATTR_STOPPED_EPOCH = "stopped_epoch"
ATTR_EARLY_STOPPED = "early_stopped"
ATTR_DURATION = "duration_s"
ATTR_DIAGNOSIS = "diagnosis"
ATTR_DIAGNOSIS_EPOCH = "diagnosis_epoch"
ATTR_DIAGNOSIS_DETAIL = "diagnosis_detail"
ATTR_DIVERGED_AT = "diverged_at"
ATTR_PRUNED_AT = "pruned_at"
ATTR_MODEL_LOGGED = "model_logged"
ATTR_MODEL_URI = "model_uri"  # the trial's MLflow Model (models:/<id>); older studies kept a bundle under model/
ATTR_N_PARAMS = "n_params"
ATTR_LATENCY_MS = "latency_ms"  # prediction time per row of the trial's restored model, on the validation rows
ATTR_REPEAT_VALUES = "repeat_values"  # [study].repeats > 1: each repeat's value at its best epoch (None: not finite)

# --------------------------------------------------------------------------- Optuna study user attributes
STUDY_PARENT_RUN = "mlflow_parent_run_id"
STUDY_EXPERIMENT = "mlflow_experiment_id"
STUDY_PARENT_PENDING = "mlflow_parent_pending"  # the parent run's summary still has to be written
STUDY_TRIAL_VALUE = "trial_value"  # what a trial's value is: {"repeats": K, "aggregate": how} (absent: one seed)


def study_run_id_key(trial_number: int) -> str:
    """Study attribute holding the run id that ``nnstudy sync`` wrote for a trial kept offline."""
    return f"{ATTR_RUN_ID}.{trial_number}"


# --------------------------------------------------------------------------- MLflow tags
TAG_PARENT = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"
TAG_STUDY = "nnstudy.study"
TAG_ROLE = "nnstudy.role"  # ROLE_STUDY (the parent run), ROLE_TRIAL or ROLE_REPRODUCTION
TAG_TRIAL = "nnstudy.trial_number"
TAG_BEST_RUN = "nnstudy.best_run_id"
TAG_BEST_TRIAL = "nnstudy.best_trial"
TAG_PARETO_TRIALS = "nnstudy.pareto_trials"  # several objectives: the trial numbers of the Pareto front, "3,7,12"
TAG_OBJECTIVES = "nnstudy.objectives"  # several objectives: their names, "val_loss,n_params"
BEST_PARAM_PREFIX = "best."  # best.<param> tags on the parent run
TAG_FAIL_REASON = "nnstudy.fail_reason"
TAG_ERROR = "nnstudy.error"
TAG_MODEL_ERROR = "nnstudy.model_error"
TAG_DEVICE = "nnstudy.device"
TAG_THREADS = "nnstudy.threads"  # intra-op threads of the process that trained: reproduce uses as many
TAG_DATA_DIGEST = "nnstudy.data_digest"
TAG_REUSED_COMPILED = "nnstudy.reused_compiled"  # "true": trained an earlier trial's traced model ([train].reuse_compiled)
TAG_RETRY_OF_TRIAL = "nnstudy.retry_of_trial"
TAG_RETRY_OF_RUN = "nnstudy.retry_of_run"
TAG_RETRIED_BY = "nnstudy.retried_by"
TAG_RESUMED_FROM = "nnstudy.resumed_from_epoch"  # a re-run's run: the epoch of the checkpoint it went on from
TAG_EARLY_STOPPED = "nnstudy.early_stopped"
TAG_DIAGNOSIS = "nnstudy.diagnosis"
TAG_DIAGNOSIS_DETAIL = "nnstudy.diagnosis_detail"
TAG_PRUNED = "nnstudy.pruned"
TAG_LARGER_THAN = "nnstudy.larger_than_trial"
TAG_REPRODUCTION_OF = "nnstudy.reproduction_of"
TAG_REPRODUCED_BY = "nnstudy.reproduced_by"
TAG_RESUMED_AT = "nnstudy.resumed_at"
TAG_SYNCED = "nnstudy.synced"
TAG_OPTUNA_STORAGE = "nnstudy.optuna_storage"
TAG_SPEC_FILE = "nnstudy.spec_file"

# --------------------------------------------------------------------------- MLflow experiment and registry
EXPERIMENT_KIND = "mlflow.experimentKind"  # the UI opens an experiment in the view of its kind
KIND_MODEL_TRAINING = "custom_model_development"
DATASET_CONTEXT = "mlflow.data.context"  # the tag of a run's logged data set: what it was used for
MODEL_NAME = "model"  # the name of a trial's logged MLflow Model
CHAMPION = "champion"  # the registry alias `register` points at the newest registered best model
# tags of a registered model version: where it came from
VERSION_STUDY = "study"
VERSION_TRIAL = "trial"
VERSION_METRIC = "metric"
VERSION_VALUE = "value"
VERSION_RUN = "run_id"
TAG_PYTHON = "nnstudy.python"
TAG_HOST = "nnstudy.host"
TAG_KERAS_BACKEND = "nnstudy.keras_backend"
TAG_VERSION_PREFIX = "nnstudy.version."  # nnstudy.version.<package>

Role = Literal["study", "trial", "reproduction"]
ROLE_STUDY: Role = "study"
ROLE_TRIAL: Role = "trial"
ROLE_REPRODUCTION: Role = "reproduction"

#: tags whose difference between an original run and its reproduction is worth reporting
ENVIRONMENT_TAG_PREFIXES = (TAG_VERSION_PREFIX, TAG_DEVICE, TAG_DATA_DIGEST, TAG_KERAS_BACKEND, TAG_THREADS)


def trial_run_name(trial_number: int, role: Role = ROLE_TRIAL) -> str:
    """``trial-0007`` (a trial's run) or ``trial-0007-reproduction``."""
    return f"trial-{trial_number:04d}" + ("-reproduction" if role == ROLE_REPRODUCTION else "")


def run_id_of(trial: FrozenTrial, study_attrs: dict[str, Any]) -> str | None:
    """The MLflow run of a trial: set when the trial started, or by ``nnstudy sync`` afterwards."""
    run_id = trial.user_attrs.get(ATTR_RUN_ID) or study_attrs.get(study_run_id_key(trial.number))
    return str(run_id) if run_id else None


def trial_seed(study_seed: int, trial_number: int) -> int:
    """The seed of one trial: fixed by the study seed and the trial number."""
    return (study_seed * 1_000_003 + trial_number * 7919 + 1) % (2**31 - 1)


def _finite(values: Any) -> tuple[float, ...]:
    """The finite numbers of a stored list (an attribute written by another version may be anything)."""
    if not isinstance(values, (list, tuple)):
        return ()
    return tuple(float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v))


def _int(value: Any) -> int | None:
    try:
        return int(float(value)) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class TrialRecord:
    """One trial as both stores know it; read with :meth:`from_trial` or :meth:`from_run`."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None
    params: dict[str, Any]
    seed: int | None = None
    best_epoch: int | None = None
    stopped_epoch: int | None = None
    early_stopped: bool | None = None
    duration_s: float | None = None
    run_id: str | None = None
    fail_reason: str | None = None
    diagnosis: str | None = None
    diagnosis_epoch: int | None = None
    diagnosis_detail: str = ""
    diverged_at: int | None = None
    pruned_at: int | None = None
    retry_of: int | None = None
    model_logged: bool = False
    model_uri: str | None = None  # None with model_logged: a bundle under the run's model/ artifacts
    repeat_values: tuple[float, ...] = ()  # [study].repeats > 1: the finite best-epoch values of the repeats
    extra: dict[str, Any] = field(default_factory=dict)  # every other user attribute / tag, as stored
    values: tuple[float, ...] | None = None  # every objective's value (``value`` is the first: the metric's)

    @property
    def spread(self) -> tuple[float, float] | None:
        """Mean and sample standard deviation of the repeats' values (None without seed repeats)."""
        if len(self.repeat_values) < 2:
            return None
        return statistics.fmean(self.repeat_values), statistics.stdev(self.repeat_values)

    @classmethod
    def from_trial(cls, trial: FrozenTrial, study_attrs: dict[str, Any] | None = None) -> TrialRecord:
        """The record of an Optuna trial (``study_attrs``: the study's user attributes, for synced run ids)."""
        a = trial.user_attrs
        duration = a.get(ATTR_DURATION)
        if duration is None and trial.duration is not None:
            duration = round(trial.duration.total_seconds(), 3)
        known = {ATTR_RUN_ID, ATTR_PENDING, ATTR_FAIL_REASON, ATTR_SEED, ATTR_BEST_EPOCH, ATTR_STOPPED_EPOCH,
                 ATTR_EARLY_STOPPED, ATTR_DURATION, ATTR_DIAGNOSIS, ATTR_DIAGNOSIS_EPOCH, ATTR_DIAGNOSIS_DETAIL,
                 ATTR_DIVERGED_AT, ATTR_PRUNED_AT, ATTR_RETRY_OF, ATTR_MODEL_LOGGED, ATTR_MODEL_URI,
                 ATTR_REPEAT_VALUES}
        return cls(
            number=trial.number, state=trial.state.name, value=trial.values[0] if trial.values else None,
            values=tuple(trial.values) if trial.values else None, params=dict(trial.params),
            seed=_int(a.get(ATTR_SEED)), best_epoch=_int(a.get(ATTR_BEST_EPOCH)),
            stopped_epoch=_int(a.get(ATTR_STOPPED_EPOCH)),
            early_stopped=a.get(ATTR_EARLY_STOPPED), duration_s=float(duration) if duration is not None else None,
            run_id=run_id_of(trial, study_attrs or {}), fail_reason=a.get(ATTR_FAIL_REASON),
            diagnosis=a.get(ATTR_DIAGNOSIS), diagnosis_epoch=_int(a.get(ATTR_DIAGNOSIS_EPOCH)),
            diagnosis_detail=str(a.get(ATTR_DIAGNOSIS_DETAIL, "")), diverged_at=_int(a.get(ATTR_DIVERGED_AT)),
            pruned_at=_int(a.get(ATTR_PRUNED_AT)), retry_of=_int(a.get(ATTR_RETRY_OF)),
            model_logged=bool(a.get(ATTR_MODEL_LOGGED, False)), model_uri=a.get(ATTR_MODEL_URI),
            repeat_values=_finite(a.get(ATTR_REPEAT_VALUES)),
            extra={k: v for k, v in a.items() if k not in known},
        )

    @classmethod
    def from_run(cls, run: Run, metric: str | None = None) -> TrialRecord:
        """The record of a trial's MLflow run (parameters come back as the strings MLflow keeps).

        ``metric``: the study metric, whose ``best_<metric>`` is the value. The state follows the
        run: FINISHED -> COMPLETE, KILLED with ``nnstudy.pruned`` -> PRUNED, FAILED/KILLED -> FAIL.
        """
        tags, metrics, params = run.data.tags, run.data.metrics, dict(run.data.params)
        status = run.info.status
        if status == "FINISHED":
            state = "COMPLETE"
        elif status == "KILLED" and (tags.get(TAG_PRUNED) == "true" or TAG_LARGER_THAN in tags):
            state = "PRUNED"
        elif status == "RUNNING":
            state = "RUNNING"
        else:
            state = "FAIL"
        value = metrics.get(f"best_{metric}") if metric else None
        seed = params.pop("seed", None)
        return cls(
            number=_int(tags.get(TAG_TRIAL)) or 0, state=state,
            value=value if value is None or math.isfinite(value) else None, params=params,
            seed=_int(seed), best_epoch=_int(metrics.get("best_epoch")),
            stopped_epoch=_int(metrics.get("stopped_epoch")),
            early_stopped={"true": True, "false": False}.get(tags.get(TAG_EARLY_STOPPED, "")),
            duration_s=metrics.get("duration_s"), run_id=run.info.run_id, fail_reason=tags.get(TAG_FAIL_REASON),
            diagnosis=tags.get(TAG_DIAGNOSIS), diagnosis_detail=tags.get(TAG_DIAGNOSIS_DETAIL, ""),
            diverged_at=_int(metrics.get("diverged_at")), pruned_at=_int(metrics.get("pruned_at_epoch")),
            retry_of=_int(tags.get(TAG_RETRY_OF_TRIAL)),
            repeat_values=tuple(metrics[f"best_{metric}/repeat_{k}"] for k in range(len(metrics))
                                if f"best_{metric}/repeat_{k}" in metrics) if metric else (),
            extra={k: v for k, v in tags.items() if k.startswith("nnstudy.")},
        )
