"""MLflow records: one experiment and one parent run per study, one nested child run per trial.

Talks to MLflow through ``MlflowClient`` only (no global active-run state), so it is safe to
use from any process. Knows nothing of Keras or Optuna: it takes plain dicts of params,
metrics and tags.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from nnstudy.errors import StoreError
from nnstudy.store import absolute_sqlite

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]

TAG_STUDY = "nnstudy.study"
TAG_ROLE = "nnstudy.role"  # "study" (parent) or "trial" (child)
TAG_TRIAL = "nnstudy.trial_number"
TAG_PARENT = "mlflow.parentRunId"
TAG_BEST_RUN = "nnstudy.best_run_id"
TAG_FAIL_REASON = "nnstudy.fail_reason"

#: per-epoch metrics are buffered and written at most this often (seconds), and at the end of a run
FLUSH_INTERVAL_S = 1.0
_MAX_BATCH = 900  # MLflow's log_batch takes at most 1000 metrics per call


def _param_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


class Tracker:
    """The MLflow side of a study: experiment, parent run and child runs."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.client = MlflowClient(tracking_uri=absolute_sqlite(tracking_uri))

    def experiment(self, name: str) -> str:
        """The experiment id for ``name``, created on first use (safe against a concurrent create)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        location = (self.artifact_root / name).resolve().as_uri() if self.artifact_root else None
        try:
            return str(self.client.create_experiment(name, artifact_location=location,
                                                     tags={TAG_STUDY: name}))
        except Exception:
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
            except Exception:  # deleted from MLflow: find or start another
                pass
        existing = self._parents(experiment_id, study_name)
        if existing:
            self._mark_running(existing[0])
            return existing[0]
        run = self.client.create_run(experiment_id, run_name=study_name,
                                     tags={TAG_STUDY: study_name, TAG_ROLE: "study", **tags})
        mine = str(run.info.run_id)
        winner = self._parents(experiment_id, study_name)[0]
        if winner != mine:
            self.client.delete_run(mine)
            self._mark_running(winner)
            return winner
        self.client.log_batch(mine, params=[Param(k, _param_text(v)[:6000]) for k, v in params.items()])
        return mine

    def _parents(self, experiment_id: str, study_name: str) -> list[str]:
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'study' and tags.`{TAG_STUDY}` = '{study_name}'",
            max_results=100)
        runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        return [str(r.info.run_id) for r in runs]

    def _mark_running(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")
        # log_batch (not set_tag): MLflow retries its tag upsert when workers write the same tag at once
        self.client.log_batch(run_id, tags=[RunTag("nnstudy.resumed_at", time.strftime("%Y-%m-%dT%H:%M:%S"))])

    def start_trial(self, experiment_id: str, parent_run_id: str, study_name: str, trial_number: int, *,
                    params: dict[str, Any], tags: dict[str, str]) -> TrialRun:
        """Open the child run of one trial (nested under the parent in the UI)."""
        run = self.client.create_run(
            experiment_id, run_name=f"trial-{trial_number:04d}",
            tags={TAG_PARENT: parent_run_id, TAG_STUDY: study_name, TAG_ROLE: "trial",
                  TAG_TRIAL: str(trial_number), **tags},
        )
        child = TrialRun(self.client, str(run.info.run_id))
        self.client.log_batch(child.run_id, params=[Param(k, _param_text(v)) for k, v in params.items()])
        return child

    def end_run(self, run_id: str, status: RunStatus, tags: dict[str, str] | None = None) -> None:
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status=status)

    def log_summary(self, run_id: str, metrics: dict[str, float], tags: dict[str, str] | None = None,
                    params: dict[str, Any] | None = None) -> None:
        """Final metrics (no step), tags and extra params of a run, in one call."""
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(float(v))],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
            params=[Param(k, _param_text(v)) for k, v in (params or {}).items()],
        )

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def run_status(self, run_id: str) -> str:
        return str(self.client.get_run(run_id).info.status)


@dataclass
class TrialRun:
    """A child run that buffers per-epoch metrics and writes them in few calls."""

    client: MlflowClient
    run_id: str
    flush_interval_s: float = FLUSH_INTERVAL_S
    _pending: list[Metric] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    logging_s: float = 0.0  # time spent in MLflow calls for epoch metrics

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Queue one epoch's metrics (step = epoch); written at most every ``flush_interval_s``."""
        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, epoch) for k, v in metrics.items()
                             if math.isfinite(float(v)))
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        start = time.perf_counter()
        while self._pending:
            chunk, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)
        self._last_flush = time.monotonic()
        self.logging_s += time.perf_counter() - start


def environment_tags() -> dict[str, str]:
    """Library versions and host, logged on every run so a reproduction can say what differs."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {"nnstudy.python": platform.python_version(), "nnstudy.host": platform.node(),
            "nnstudy.keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow")}
    for package in ("nnstudy", "keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "optuna", "mlflow", "numpy"):
        try:
            tags[f"nnstudy.version.{package}"] = version(package)
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


class RunRecorder:
    """One trial's MLflow record: written live while the tracking server answers, kept whole in
    memory when it stops answering, so that nothing is lost and ``pending()`` can be stored (in
    the Optuna trial) and written later by ``nnstudy sync``."""

    def __init__(self, tracker: Tracker, experiment_id: str, parent_run_id: str, study_name: str,
                 trial_number: int, *, params: dict[str, Any], tags: dict[str, str]) -> None:
        self.tracker = tracker
        self.params = {k: _param_text(v) for k, v in params.items()}
        self.tags = tags
        self.curves: dict[str, dict[int, float]] = {}
        self.error: str | None = None
        self._live: TrialRun | None = None
        try:
            self._live = tracker.start_trial(experiment_id, parent_run_id, study_name, trial_number,
                                             params=params, tags=tags)
        except Exception as err:  # the server is down: record offline, training goes on
            self._offline(err)

    @property
    def run_id(self) -> str | None:
        return self._live.run_id if self._live is not None else None

    @property
    def offline(self) -> bool:
        return self.error is not None

    @property
    def logging_s(self) -> float:
        return self._live.logging_s if self._live is not None else 0.0

    def _offline(self, err: Exception) -> None:
        if self.error is None:
            self.error = f"{type(err).__name__}: {err}"[:500]

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.curves.setdefault(key, {})[epoch] = float(value)
        if self._live is not None and not self.offline:
            try:
                self._live.log_epoch(epoch, metrics)
            except Exception as err:
                self._offline(err)

    def finish(self, status: RunStatus, metrics: dict[str, float], tags: dict[str, str]) -> dict[str, Any] | None:
        """End the run. Returns ``None`` when MLflow has the whole record, else the pending record."""
        if self._live is not None and not self.offline:
            try:
                self._live.flush()
                self.tracker.log_summary(self._live.run_id, metrics, tags)
                self.tracker.end_run(self._live.run_id, status)
                return None
            except Exception as err:
                self._offline(err)
        return {"run_id": self.run_id, "params": self.params, "tags": self.tags, "error": self.error,
                "curves": {k: {str(e): v for e, v in c.items() if math.isfinite(v)} for k, c in self.curves.items()},
                "metrics": {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))},
                "end_tags": tags, "status": status}


def write_pending(tracker: Tracker, experiment_id: str, parent_run_id: str, study_name: str, trial_number: int,
                  pending: dict[str, Any]) -> str:
    """Write a pending record (see :class:`RunRecorder`) to MLflow; returns the run id.

    Epochs the run already has are not logged twice, so a sync can be repeated safely.
    """
    client = tracker.client
    run_id = pending.get("run_id")
    if run_id:
        try:
            client.get_run(run_id)
        except Exception:
            run_id = None
    if not run_id:
        run = client.create_run(experiment_id, run_name=f"trial-{trial_number:04d}", tags={
            TAG_PARENT: parent_run_id, TAG_STUDY: study_name, TAG_ROLE: "trial", TAG_TRIAL: str(trial_number),
            **pending.get("tags", {})})
        run_id = str(run.info.run_id)
        client.log_batch(run_id, params=[Param(k, v) for k, v in pending.get("params", {}).items()])
    now = int(time.time() * 1000)
    metrics = []
    for key, by_epoch in pending.get("curves", {}).items():
        have = {m.step for m in client.get_metric_history(run_id, key)}
        metrics += [Metric(key, v, now, int(e)) for e, v in by_epoch.items() if int(e) not in have]
    for i in range(0, len(metrics), _MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + _MAX_BATCH])
    tracker.log_summary(run_id, pending.get("metrics", {}), {**pending.get("end_tags", {}), "nnstudy.synced": "true"})
    tracker.end_run(run_id, pending.get("status", "FINISHED"))
    return run_id
