"""A trial run's system metrics: MLflow's monitor on a real SQLite store, started and stopped by the recorder."""

from __future__ import annotations

import threading
import time

import pytest

from nnstudy import system_metrics
from nnstudy.recorder import RunTarget
from nnstudy.system_metrics import RunSystemMetrics
from nnstudy.tracking import Tracker

CPU, MEMORY = "system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch, free_port: int) -> Tracker:
    """A tracker whose HTTP tracking server does not answer (a closed port), failing at once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    return Tracker(f"http://127.0.0.1:{free_port}")


def _monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]


def _run(tracker: Tracker) -> str:
    return str(tracker.client.create_run(tracker.experiment("sys")).info.run_id)


def test_a_run_shorter_than_the_interval_gets_one_sample_at_its_end(tracker: Tracker) -> None:
    run_id = _run(tracker)
    monitor = RunSystemMetrics(run_id, tracker.client_uri, interval_s=60)
    monitor.start()
    time.sleep(0.2)
    monitor.stop()
    monitor.stop()  # a second stop does nothing
    assert monitor.error is None and monitor.samples == 1 and not _monitor_threads()
    metrics = tracker.client.get_run(run_id).data.metrics
    assert {CPU, MEMORY, "system/system_memory_usage_percentage"} <= set(metrics)
    assert 0 <= metrics[CPU] <= 100 and metrics[MEMORY] > 0
    assert [m.step for m in tracker.client.get_metric_history(run_id, CPU)] == [0]  # step: seconds into the run


def test_samples_every_interval_with_steps_in_seconds_written_while_the_run_goes_on(
        tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_metrics, "WRITE_EVERY_S", 0.0)  # write every sample (default: every 10 s)
    run_id = _run(tracker)
    monitor = RunSystemMetrics(run_id, tracker.client_uri, interval_s=1)
    monitor.start()
    deadline = time.monotonic() + 60
    while len(tracker.client.get_metric_history(run_id, MEMORY)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(tracker.client.get_metric_history(run_id, MEMORY)) >= 2  # written before the run ends
    monitor.stop()
    steps = [m.step for m in tracker.client.get_metric_history(run_id, MEMORY)]
    assert steps[:2] == [1, 2] and steps == sorted(set(steps))


def test_the_spec_interval_wins_over_mlflow_environment(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "30")
    monitor = RunSystemMetrics(_run(tracker), tracker.client_uri, interval_s=2)
    assert monitor.sampling_interval == 2


def test_a_run_that_mlflow_refuses_ends_the_thread_quietly(tracker: Tracker,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    run_id = _run(tracker)
    monitor = RunSystemMetrics(run_id, tracker.client_uri, interval_s=60)
    monitor.start()
    tracker.client.delete_run(run_id)
    tracker.client.get_run(run_id)  # still readable, but MLflow refuses metrics of a deleted run
    monitor.stop()
    assert monitor.error is not None and "deleted" in monitor.error and not _monitor_threads()
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("interval", [1.0, None])
def test_the_recorder_samples_its_run_until_it_ends(tracker: Tracker, interval: float | None) -> None:
    rec = RunTarget(tracker, tracker.experiment("sys"), None, "sys").start(0, params={}, tags={},
                                                                              system_metrics_s=interval)
    assert rec.run_id is not None
    rec.log_epoch(1, {"loss": 1.0})
    assert rec.finish("FINISHED", {"best_loss": 1.0}, {}) is None
    assert not _monitor_threads()  # no thread is left logging into the finished run
    metrics = tracker.client.get_run(rec.run_id).data.metrics
    system = {k for k in metrics if k.startswith("system/")}
    assert ({CPU, MEMORY} <= system) if interval else not system
    rec.close()  # after finish: nothing to stop


def test_closing_a_recorder_stops_its_samples_without_a_last_one(tracker: Tracker) -> None:
    rec = RunTarget(tracker, tracker.experiment("sys"), None, "sys").start(0, params={}, tags={},
                                                                              system_metrics_s=60)
    assert rec.system_metrics is not None
    rec.close()  # what the trial pipeline does when a trial ends without finishing its run
    assert not _monitor_threads() and rec.system_metrics.samples == 0


def test_an_offline_recorder_starts_no_monitor(unreachable: Tracker) -> None:
    rec = RunTarget(unreachable, "1", None, "sys").start(0, params={}, tags={}, system_metrics_s=1)
    assert rec.offline and rec.system_metrics is None and not _monitor_threads()
    assert rec.finish("FINISHED", {}, {}) is not None  # the pending record, as without system metrics


def test_a_last_sample_left_unwritten_is_taken_by_the_caller(tracker: Tracker) -> None:
    run_id = _run(tracker)
    monitor = RunSystemMetrics(run_id, tracker.client_uri, interval_s=60)
    monitor.start()
    monitor.stop(write=False)
    assert monitor.samples == 1 and not _monitor_threads()
    assert tracker.client.get_run(run_id).data.metrics == {}  # the thread wrote nothing
    taken = monitor.take()
    assert {CPU, MEMORY} <= {m.key for m in taken} and all(m.step == 0 for m in taken)
    assert monitor.take() == []
