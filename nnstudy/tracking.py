"""MLflow records: one experiment and one parent run per study, one nested child run per trial.

Talks to MLflow through ``MlflowClient`` only (no global active-run state), so it is safe to
use from any process. Knows nothing of Keras or Optuna: it takes plain dicts of params,
metrics and tags. :meth:`Tracker.create_child_run` is the one place that creates trial runs.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnstudy.contract import (
    DATASET_CONTEXT,
    EXPERIMENT_KIND,
    KIND_MODEL_TRAINING,
    ROLE_STUDY,
    ROLE_TRIAL,
    TAG_HOST,
    TAG_KERAS_BACKEND,
    TAG_PARENT,
    TAG_PYTHON,
    TAG_RESUMED_AT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL,
    TAG_VERSION_PREFIX,
    Role,
    trial_run_name,
)
from nnstudy.errors import StoreError
from nnstudy.store import absolute_sqlite, commit_without_fsync

if TYPE_CHECKING:
    from nnstudy.prepared import PreparedData

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]

#: per-epoch metrics are buffered and written at most this often (seconds), and at the end of a run
FLUSH_INTERVAL_S = 1.0
MAX_BATCH = 900  # MLflow's log_batch takes at most 1000 metrics per call


def param_text(value: Any) -> str:
    """A parameter as MLflow keeps it (floats by ``repr``, so they read back exactly)."""
    return repr(value) if isinstance(value, float) else str(value)


def is_missing_run(err: Exception) -> bool:
    """True for MLflow's 'no such run' (a run deleted from MLflow), not for an unreachable server."""
    return isinstance(err, MlflowException) and err.error_code == "RESOURCE_DOES_NOT_EXIST"


class Tracker:
    """The MLflow side of a study: experiment, parent run and child runs."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.client_uri = absolute_sqlite(tracking_uri)  # what the client (and a run's system metrics) writes to
        commit_without_fsync(self.client_uri)
        self.client = MlflowClient(tracking_uri=self.client_uri)

    def experiment(self, name: str) -> str:
        """The experiment id for ``name``, created on first use (safe against a concurrent create)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            if found.tags.get(EXPERIMENT_KIND) != KIND_MODEL_TRAINING:  # made by an older nnstudy
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, KIND_MODEL_TRAINING)
            return str(found.experiment_id)
        location = (self.artifact_root / name).resolve().as_uri() if self.artifact_root else None
        try:
            # the kind makes the MLflow UI open the experiment in its model-training view
            return str(self.client.create_experiment(name, artifact_location=location,
                                                     tags={TAG_STUDY: name, EXPERIMENT_KIND: KIND_MODEL_TRAINING}))
        except MlflowException:  # another process created it first
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    def parent_run(self, experiment_id: str, study_name: str, run_id: str | None, *,
                   params: dict[str, Any], tags: dict[str, str]) -> str:
        """The study's one parent run, marked RUNNING: ``run_id`` if it still exists, else the
        earliest parent run of the study in the experiment, else a new one.

        Workers that start together may each create one; they then all keep the earliest
        (by start time, then id) and delete their own, so exactly one remains.
        """
        if run_id:
            try:
                if self.client.get_run(run_id).info.lifecycle_stage == "active":
                    self._mark_running(run_id)
                    return run_id
            except MlflowException as err:
                if not is_missing_run(err):
                    raise
        existing = self._parents(experiment_id, study_name)
        if existing:
            self._mark_running(existing[0])
            return existing[0]
        run = self.client.create_run(experiment_id, run_name=study_name,
                                     tags={TAG_STUDY: study_name, TAG_ROLE: ROLE_STUDY, **tags})
        mine = str(run.info.run_id)
        winner = self._parents(experiment_id, study_name)[0]
        if winner != mine:
            self.client.delete_run(mine)
            self._mark_running(winner)
            return winner
        self.client.log_batch(mine, params=[Param(k, param_text(v)[:6000]) for k, v in params.items()])
        return mine

    def _parents(self, experiment_id: str, study_name: str) -> list[str]:
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}' and tags.`{TAG_STUDY}` = '{study_name}'",
            max_results=100)
        return [str(r.info.run_id) for r in sorted(found, key=lambda r: (r.info.start_time, r.info.run_id))]

    def _mark_running(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")
        # log_batch (not set_tag): MLflow retries its tag upsert when workers write the same tag at once
        self.client.log_batch(run_id, tags=[RunTag(TAG_RESUMED_AT, time.strftime("%Y-%m-%dT%H:%M:%S"))])

    def create_child_run(self, experiment_id: str, parent_run_id: str | None, study_name: str, trial_number: int,
                         *, role: Role = ROLE_TRIAL, params: dict[str, str], tags: dict[str, str]) -> str:
        """Open the run of one trial (or of its reproduction), nested under the parent in the UI."""
        run = self.client.create_run(
            experiment_id, run_name=trial_run_name(trial_number, role),
            tags={**({TAG_PARENT: parent_run_id} if parent_run_id else {}), TAG_STUDY: study_name, TAG_ROLE: role,
                  TAG_TRIAL: str(trial_number), **tags},
        )
        run_id = str(run.info.run_id)
        self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        return run_id

    def find_child_run(self, experiment_id: str, study_name: str, trial_number: int,
                       role: Role = ROLE_TRIAL) -> str | None:
        """The active run of a trial (or of its reproduction), if one exists."""
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_STUDY}` = '{study_name}' and tags.`{TAG_ROLE}` = '{role}' "
                                           f"and tags.`{TAG_TRIAL}` = '{trial_number}'", max_results=1)
        return str(found[0].info.run_id) if found else None

    def running_trial_runs(self, experiment_id: str, study_name: str) -> dict[int, list[str]]:
        """The trial runs of a study still RUNNING in MLflow, by trial number."""
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_STUDY}` = '{study_name}' and tags.`{TAG_ROLE}` = "
                                           f"'{ROLE_TRIAL}' and attributes.status = 'RUNNING'", max_results=10_000)
        runs: dict[int, list[str]] = {}
        for run in found:
            number = str(run.data.tags.get(TAG_TRIAL, ""))
            if number.isdigit():
                runs.setdefault(int(number), []).append(str(run.info.run_id))
        return runs

    def end_run(self, run_id: str, status: RunStatus, tags: dict[str, str] | None = None) -> None:
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status=status)

    def log_summary(self, run_id: str, metrics: dict[str, float], tags: dict[str, str] | None = None,
                    params: dict[str, Any] | None = None, *, steps: Sequence[Metric] = ()) -> None:
        """Final metrics (no step), tags and extra params of a run, in one call, with ``steps``: metrics of
        their own steps not written yet (the last epochs, the last system metrics), so that a run's end
        costs one transaction (more only past :data:`MAX_BATCH` values)."""
        now = int(time.time() * 1000)
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        param_list = [Param(k, param_text(v)) for k, v in (params or {}).items()]
        batch = [*steps, *(Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(float(v)))]
        room = max(0, MAX_BATCH - len(tag_list) - len(param_list))
        while len(batch) > room:
            self.client.log_batch(run_id, metrics=batch[:MAX_BATCH])
            batch = batch[MAX_BATCH:]
        self.client.log_batch(run_id, metrics=batch, tags=tag_list, params=param_list)

    def log_curves(self, run_id: str, curves: dict[str, dict[int, float]]) -> None:
        """Per-epoch values (step = epoch) that the run does not have yet; safe to repeat."""
        now = int(time.time() * 1000)
        metrics = []
        for key, by_epoch in curves.items():
            have = {m.step for m in self.client.get_metric_history(run_id, key)}
            metrics += [Metric(key, v, now, e) for e, v in by_epoch.items() if e not in have and math.isfinite(v)]
        for i in range(0, len(metrics), MAX_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + MAX_BATCH])

    def log_dataset(self, run_id: str, dataset: DatasetRecord) -> None:
        """Log the data set a run trained on (the UI's Datasets column and section)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(name=dataset.name, digest=dataset.digest, source_type=dataset.source_type,
                         source=dataset.source, schema=dataset.schema, profile=dataset.profile)
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag(DATASET_CONTEXT, "training")])])

    def log_model_output(self, run_id: str, model_id: str, step: int = 0) -> None:
        """List a logged model among a run's outputs (the run page's "Logged models")."""
        from mlflow.entities import LoggedModelOutput

        self.client.log_outputs(run_id, models=[LoggedModelOutput(model_id, step)])

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def run_status(self, run_id: str) -> str:
        return str(self.client.get_run(run_id).info.status)


@dataclass(frozen=True)
class DatasetRecord:
    """A study's data set as MLflow records it on runs: name, digest, where it came from, its schema
    (the raw input columns, or the input array's shape) and its size."""

    name: str
    digest: str
    source: str  # JSON: {"uri": ...}
    source_type: str  # "local" (a file) or "code" (a built-in set)
    schema: str  # JSON: {"mlflow_colspec": ...} for tables, {"mlflow_tensorspec": ...} for arrays
    profile: str  # JSON: {"num_rows": ..., ...}

    @classmethod
    def of_data(cls, data: PreparedData) -> DatasetRecord:
        """The record of prepared data: its source, digest, raw example rows and split sizes."""
        return cls.of(data.source, data.digest, data.example, data.rows())

    @classmethod
    def of(cls, source: str, digest: str, example: Any, rows: dict[str, int]) -> DatasetRecord:
        """The record of the data from ``source`` (a path, or a built-in set's name), whose raw inputs
        look like ``example`` (a DataFrame or an array), with row counts by split."""
        import json
        import warnings

        import pandas as pd
        from mlflow.types.utils import _infer_schema

        path = Path(source)
        is_file = path.suffix != "" or path.is_absolute()
        with warnings.catch_warnings():  # MLflow's hint on integer columns is for model signatures
            warnings.simplefilter("ignore", UserWarning)
            schema = _infer_schema(example) if example is not None else None
        if schema is None:
            schema_json = ""
        elif isinstance(example, pd.DataFrame):
            schema_json = json.dumps({"mlflow_colspec": schema.to_dict()})
        else:
            schema_json = json.dumps({"mlflow_tensorspec": {"features": schema.to_json(), "targets": None}})
        return cls(name=path.stem if is_file else source, digest=digest,
                   source=json.dumps({"uri": str(path) if is_file else f"nnstudy built-in data set {source}"}),
                   source_type="local" if is_file else "code", schema=schema_json,
                   profile=json.dumps({"num_rows": sum(rows.values()), **rows}))


@dataclass
class TrialRun:
    """A child run that buffers per-epoch metrics and writes them in few calls."""

    client: MlflowClient
    run_id: str
    flush_interval_s: float = FLUSH_INTERVAL_S
    _pending: list[Metric] = field(default_factory=list)
    _last_flush: float = -math.inf  # the first epoch is written at once, then at most every flush_interval_s
    logging_s: float = 0.0  # time spent in MLflow calls for epoch metrics

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Queue one epoch's metrics (step = epoch); written at most every ``flush_interval_s``."""
        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, epoch) for k, v in metrics.items()
                             if math.isfinite(float(v)))
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def take(self) -> list[Metric]:
        """The queued metrics, no longer queued: the caller writes them (with the run's summary)."""
        pending, self._pending = self._pending, []
        return pending

    def flush(self) -> None:
        start = time.perf_counter()
        while self._pending:
            chunk, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)
        self._last_flush = time.monotonic()
        self.logging_s += time.perf_counter() - start


def environment_tags() -> dict[str, str]:
    """Library versions and host, logged on every run so a reproduction can say what differs."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {TAG_PYTHON: platform.python_version(), TAG_HOST: platform.node(),
            TAG_KERAS_BACKEND: os.environ.get("KERAS_BACKEND", "tensorflow")}
    for package in ("nnstudy", "keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "optuna", "mlflow", "numpy"):
        try:
            tags[f"{TAG_VERSION_PREFIX}{package}"] = version(package)
        except PackageNotFoundError:
            continue
    return tags


def check_reachable(tracking_uri: str) -> None:
    """Fail fast (exit 2) when an HTTP tracking server does not answer."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (scheme checked above)
            if response.status >= 500:
                raise StoreError(f"MLflow tracking server {tracking_uri} answered {response.status} on /health")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise StoreError(f"MLflow tracking server {tracking_uri} is unreachable ({reason}); "
                         "start it or pass another --tracking-uri") from None
