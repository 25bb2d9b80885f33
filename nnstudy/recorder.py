"""The MLflow record of one trial run, written live while the tracking server answers and kept
whole in memory when it stops answering, so nothing is lost: the kept record is stored in the
Optuna trial and written later by :func:`write_pending` (``nnstudy sync``).

Knows nothing of Keras or Optuna.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nnstudy.contract import ROLE_TRIAL, TAG_SYNCED, Role
from nnstudy.tracking import DatasetRecord, RunStatus, Tracker, TrialRun, is_missing_run, param_text

if TYPE_CHECKING:
    from nnstudy.system_metrics import RunSystemMetrics


@dataclass(frozen=True)
class RunTarget:
    """Where the runs of a study's trials go: the experiment, the parent run and the study name."""

    tracker: Tracker
    experiment_id: str
    parent_run_id: str | None
    study_name: str
    role: Role = ROLE_TRIAL
    tags: tuple[tuple[str, str], ...] = ()  # tags every run of this target carries
    dataset: DatasetRecord | None = None  # the data set every run of this target trains on

    def start(self, trial_number: int, *, params: dict[str, Any], tags: dict[str, str],
              system_metrics_s: float | None = None) -> RunRecorder:
        """Open the run of one trial (offline when MLflow does not answer); with ``system_metrics_s``, the
        run gets MLflow's system metrics sampled every that many seconds until it ends."""
        return RunRecorder(self, trial_number, params=params, tags={**dict(self.tags), **tags},
                           system_metrics_s=system_metrics_s)


def refused(err: Exception) -> bool:
    """MLflow answered and refused what was sent (a bad name or value): not an outage, a bug to report."""
    from mlflow.exceptions import MlflowException

    return isinstance(err, MlflowException) and err.error_code == "INVALID_PARAMETER_VALUE"


class RunRecorder:
    """One trial's MLflow record (see the module docstring)."""

    def __init__(self, target: RunTarget, trial_number: int, *, params: dict[str, Any], tags: dict[str, str],
                 system_metrics_s: float | None = None) -> None:
        self.target = target
        self.tracker = target.tracker
        self.params = {k: param_text(v) for k, v in params.items()}
        self.tags = tags
        self.curves: dict[str, dict[int, float]] = {}
        self.summary_metrics: dict[str, float] = {}  # logged with the final metrics of ``finish``
        self.error: str | None = None
        self._live: TrialRun | None = None
        self.system_metrics: RunSystemMetrics | None = None
        try:
            run_id = self.tracker.create_child_run(target.experiment_id, target.parent_run_id, target.study_name,
                                                   trial_number, role=target.role, params=self.params, tags=tags)
            self._live = TrialRun(self.tracker.client, run_id)
            if target.dataset is not None:
                self.tracker.log_dataset(run_id, target.dataset)
        except Exception as err:  # the server is down (any transport error): record offline, training goes on
            if refused(err):
                raise
            self.go_offline(err)
        if system_metrics_s is not None and self._live is not None and not self.offline:
            try:
                from nnstudy.system_metrics import RunSystemMetrics  # needs psutil

                self.system_metrics = RunSystemMetrics(self._live.run_id, self.tracker.client_uri, system_metrics_s)
                self.system_metrics.start()
            except Exception as err:  # psutil missing, ...: the trial runs without them
                self.system_metrics = None
                print(f"warning: no system metrics for trial {trial_number} ({type(err).__name__}: {err})",
                      file=sys.stderr)

    @property
    def run_id(self) -> str | None:
        return self._live.run_id if self._live is not None else None

    @property
    def offline(self) -> bool:
        return self.error is not None

    @property
    def logging_s(self) -> float:
        return self._live.logging_s if self._live is not None else 0.0

    def go_offline(self, err: Exception) -> None:
        """Keep everything from now on in memory; ``err`` is why MLflow could not be written."""
        if self.error is None:
            self.error = f"{type(err).__name__}: {err}"[:500]
        self.close()  # system metrics are written live only

    def close(self) -> None:
        """Stop the run's system metrics without a last sample (``finish`` takes one); safe to repeat."""
        if self.system_metrics is not None:
            self.system_metrics.stop(log=False)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.curves.setdefault(key, {})[epoch] = float(value)
        if self._live is not None and not self.offline:
            try:
                self._live.log_epoch(epoch, metrics)
            except Exception as err:
                self.go_offline(err)

    def log_params(self, params: dict[str, Any]) -> None:
        """Parameters known only once the model is built (those a builder asked the trial for)."""
        texts = {k: param_text(v) for k, v in params.items()}
        self.params.update(texts)
        if self._live is not None and not self.offline:
            try:
                self.tracker.log_summary(self._live.run_id, {}, params=texts)
            except Exception as err:
                self.go_offline(err)

    def log_artifacts(self, write: Any) -> None:
        """Call ``write(tracker, run_id)`` to log files to the live run (skipped when offline)."""
        if self._live is not None and not self.offline:
            try:
                write(self.tracker, self._live.run_id)
            except Exception as err:
                self.go_offline(err)

    def finish(self, status: RunStatus, metrics: dict[str, float], tags: dict[str, str]) -> dict[str, Any] | None:
        """End the run. Returns ``None`` when MLflow has the whole record, else the pending record."""
        metrics = {**self.summary_metrics, **metrics}
        if self.system_metrics is not None:  # the last sample, written below while the run is still RUNNING
            self.system_metrics.stop(log=not self.offline, write=False)
        if self._live is not None and not self.offline:
            try:  # the last epochs, the last system metrics and the summary in one call
                steps = [*self._live.take(), *(self.system_metrics.take() if self.system_metrics else [])]
                self.tracker.log_summary(self._live.run_id, metrics, tags, steps=steps)
                self.tracker.end_run(self._live.run_id, status)
                return None
            except Exception as err:
                self.go_offline(err)
        return {"run_id": self.run_id, "params": self.params, "tags": self.tags, "error": self.error,
                "curves": {k: {str(e): v for e, v in c.items() if math.isfinite(v)} for k, c in self.curves.items()},
                "metrics": {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))},
                "end_tags": tags, "status": status}


def write_pending(target: RunTarget, trial_number: int, pending: dict[str, Any]) -> str:
    """Write a pending record (see :class:`RunRecorder`) to MLflow; returns the run id.

    A run that exists gets only the epochs it lacks, so a sync can be repeated safely; a run
    deleted from MLflow is made again. Any other MLflow error propagates (nothing is duplicated).
    """
    tracker = target.tracker
    run_id = pending.get("run_id")
    if run_id:
        try:
            if tracker.client.get_run(run_id).info.lifecycle_stage != "active":
                run_id = None  # deleted in the UI: MLflow refuses to log to it
        except Exception as err:
            if not is_missing_run(err):
                raise
            run_id = None
    if not run_id:  # a sync that stopped after making the run but before storing its id made it already
        run_id = tracker.find_child_run(target.experiment_id, target.study_name, trial_number, target.role)
    if not run_id:
        run_id = tracker.create_child_run(target.experiment_id, target.parent_run_id, target.study_name,
                                          trial_number, role=target.role, params=pending.get("params", {}),
                                          tags=pending.get("tags", {}))
    curves = {key: {int(e): float(v) for e, v in by_epoch.items()}
              for key, by_epoch in pending.get("curves", {}).items()}
    tracker.log_curves(run_id, curves)
    tracker.log_summary(run_id, pending.get("metrics", {}), {**pending.get("end_tags", {}), TAG_SYNCED: "true"})
    tracker.end_run(run_id, pending.get("status", "FINISHED"))
    return str(run_id)
