"""A trial run's system metrics: MLflow's own ``SystemMetricsMonitor`` (``system/cpu_utilization_percentage``,
``system/system_memory_usage_megabytes``, disk, network, and ``system/gpu_*`` where NVML finds a GPU), for a
run made with ``MlflowClient`` rather than the fluent ``mlflow.start_run``.

MLflow's monitors take the samples; what differs from MLflow's own loop, for short trials and for runs that
nnstudy ends itself:

* a sample at every whole multiple of ``interval_s`` seconds since the run began, and one more when the run
  ends (unless the last is less than half an interval old), so a trial shorter than the interval still has one;
* every sample is kept (MLflow would average ``samples_before_logging`` of them), and they are written together
  every :data:`WRITE_EVERY_S` seconds and at the end: one ``log_batch`` per sample costs five times the CPU;
* the step of a sample is the whole seconds since the run began (the UI's "Step" axis reads as seconds);
* no run-status query per sample: :meth:`RunSystemMetrics.stop` ends the thread, and whatever the thread
  meets (a server that went away, a run deleted) ends it quietly, with the reason in ``error``;
* the spec's interval wins over ``MLFLOW_SYSTEM_METRICS_*`` environment variables.

Knows nothing of Keras or Optuna.
"""

from __future__ import annotations

import logging
import math
import time

from mlflow.entities import Metric
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

#: MLflow's monitor logs an INFO line at every start and stop ("Skip logging GPU metrics" on a CPU host)
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)

#: samples taken so far are written at most this often (seconds), and when the run ends
WRITE_EVERY_S = 10.0
#: the most seconds :meth:`RunSystemMetrics.stop` waits for the thread (it may be inside a slow MLflow call)
JOIN_S = 5.0
MAX_BATCH = 900  # MLflow's log_batch takes at most 1000 metrics per call


class RunSystemMetrics(SystemMetricsMonitor):
    """Samples the host every ``interval_s`` seconds into the MLflow run ``run_id`` from a daemon thread."""

    def __init__(self, run_id: str, tracking_uri: str, interval_s: float) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            run_id, sampling_interval=interval_s, samples_before_logging=1, tracking_uri=tracking_uri)
        self.sampling_interval = interval_s  # not MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL: the spec decides
        self.error: str | None = None  # why the thread stopped early (the run still ends as it would)
        self.samples = 0  # samples taken
        self._pending: list[Metric] = []  # taken, not yet written
        self._closed = False
        self._log_last = True
        self._write_last = True
        self._began = self._last_sample = self._last_write = time.monotonic()
        self._last_step = -1

    def start(self) -> None:
        """Start sampling."""
        self._began = self._last_sample = self._last_write = time.monotonic()
        super().start()  # type: ignore[no-untyped-call]

    def monitor(self) -> None:
        """The thread: a sample every interval until :meth:`stop`, then the last one (or until MLflow
        refuses a write)."""
        import psutil

        try:
            psutil.cpu_percent()  # the CPU utilisation is per calling thread, since its previous call
            due = 1  # samples are due at whole multiples of the interval since the run began (no drift)
            while not self._shutdown_event.wait(max(0.0, self._began + due * self.sampling_interval
                                                    - time.monotonic())):
                self._sample()
                due = max(due + 1, math.floor((time.monotonic() - self._began) / self.sampling_interval) + 1)
                if time.monotonic() - self._last_write >= WRITE_EVERY_S:
                    self._write()
            if self._log_last:
                if self.samples == 0 or time.monotonic() - self._last_sample >= self.sampling_interval / 2:
                    self._sample()
                if self._write_last:
                    self._write()
        except Exception as err:  # the server went away, the run was deleted...: stop quietly
            self.error = f"{type(err).__name__}: {err}"[:500]

    def _sample(self) -> None:
        self.collect_metrics()  # type: ignore[no-untyped-call]
        self._last_sample = time.monotonic()
        self._last_step = max(self._last_step + 1, round(self._last_sample - self._began))
        prefix = self._metrics_prefix + (f"{self.node_id}/" if self.node_id else "")
        stamp = int(time.time() * 1000)
        self._pending += [Metric(prefix + k, float(v), stamp, self._last_step)
                          for k, v in self.aggregate_metrics().items()]  # type: ignore[no-untyped-call]
        for monitor in self.monitors:
            monitor.clear_metrics()  # type: ignore[no-untyped-call]
        self.samples += 1

    def _write(self) -> None:
        self._last_write = time.monotonic()
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), MAX_BATCH):
            if self._closed:  # stop() gave up waiting for this thread: the run may be finished
                return
            self.mlflow_logger.client.log_batch(self._run_id, metrics=pending[i:i + MAX_BATCH])

    def stop(self, *, log: bool = True, write: bool = True) -> None:
        """End the thread; with ``log``, it takes a last sample (see the module docstring) and, with ``write``,
        writes what it has not written yet (else :meth:`take` hands that to the caller, to write with the run's
        summary). Never raises; safe to call more than once. A thread stuck in an MLflow call for
        :data:`JOIN_S` is left behind, and writes nothing more."""
        thread, self._process = self._process, None
        if thread is None:
            return
        self._log_last, self._write_last = log, write
        self._shutdown_event.set()
        thread.join(JOIN_S)
        self._closed = True
        if thread.is_alive() or not log:
            self._pending = []  # the thread may still be adding to it; without ``log`` nothing more is written

    def take(self) -> list[Metric]:
        """The samples taken and not written (after ``stop(write=False)``), no longer kept."""
        pending, self._pending = self._pending, []
        return pending

    def finish(self) -> None:
        """MLflow's name for :meth:`stop`."""
        self.stop()
