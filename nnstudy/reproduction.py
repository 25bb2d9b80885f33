"""Reproducing a trial: its parameters and seed run again through the very same trial pipeline
(an ``optuna.trial.FixedTrial`` through :class:`~nnstudy.objective.Objective`), logged as a
reproduction run beside the original, and the per-epoch curves compared."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

from nnstudy.contract import (
    ATTR_SEED,
    ENVIRONMENT_TAG_PREFIXES,
    ROLE_REPRODUCTION,
    TAG_DEVICE,
    TAG_THREADS,
    TAG_REPRODUCED_BY,
    TAG_REPRODUCTION_OF,
    TAG_VERSION_PREFIX,
)
from nnstudy.errors import StoreError, TrialFailed
from nnstudy.records import StudyRecords
from nnstudy.recorder import RunTarget


@dataclass
class Reproduction:
    """The outcome of ``reproduce``: curves side by side and what differs from the original."""

    trial_number: int
    original_run_id: str
    run_id: str
    metric: str
    original: dict[int, float]  # epoch -> study metric, as logged by the original run
    reproduced: dict[int, float]
    max_abs_diff: float
    environment_diffs: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (original, now)
    note: str | None = None  # why the curves need not be equal bit for bit here (see exactness_note)
    repeat_diffs: dict[int, float] = field(default_factory=dict)  # seed repeats: repeat -> its curve's max abs diff

    def within(self, tolerance: float) -> bool:
        return math.isfinite(self.max_abs_diff) and self.max_abs_diff <= tolerance

    def rows(self) -> list[tuple[int, float | None, float | None, float | None]]:
        epochs = sorted(set(self.original) | set(self.reproduced))
        out = []
        for e in epochs:
            a, b = self.original.get(e), self.reproduced.get(e)
            out.append((e, a, b, abs(a - b) if a is not None and b is not None else None))
        return out


def _max_abs_diff(original: dict[int, float], new: dict[int, float]) -> float:
    if not original or set(original) != set(new):
        return math.inf  # a different number of epochs: not a reproduction
    return max(abs(original[e] - new[e]) for e in original)


def reproduce(records: StudyRecords, *, trial_number: int | None = None, run_id: str | None = None) -> Reproduction:
    """Re-train a trial (default: the best) and compare its curve with the original run's."""
    from nnstudy.data import prepare
    from nnstudy.objective import Objective
    from nnstudy.tracking import DatasetRecord, environment_tags
    from nnstudy.training import backend, configure_determinism, use_threads

    records.store.check_writable()  # the reproduction run is written: a read-only store is refused before training
    trial = records.trial(trial_number, run_id)
    original_id = records.run_id(trial) or ""
    spec = records.spec()
    metric = spec.study.metric
    client = records.client
    original = client.get_run(original_id)
    threads = original.data.tags.get(TAG_THREADS, "")
    # as many threads as the original had: reductions then sum in the same order (a process whose
    # runtime started already keeps its own count; the run's nnstudy.threads tag then shows the difference)
    if threads.isdigit():
        use_threads(int(threads))
    configure_determinism(spec.train.deterministic)
    data = prepare(spec)
    runs = RunTarget(records.tracker, str(original.info.experiment_id), records.parent_run_id, spec.name,
                     role=ROLE_REPRODUCTION, tags=((TAG_REPRODUCTION_OF, original_id),),
                     dataset=DatasetRecord.of_data(data))
    objective = Objective(spec, data, runs, run_tags=environment_tags())
    fixed = optuna.trial.FixedTrial(trial.params, number=trial.number)
    fixed.set_user_attr(ATTR_SEED, int(trial.user_attrs[ATTR_SEED]))
    try:
        objective(fixed)
    except TrialFailed:  # a diverged original diverges again: its curve is still compared
        pass
    rec = objective.last_recorder
    if rec is None or rec.run_id is None:
        raise StoreError(f"the reproduction run could not be written to {records.store.tracking_uri}: "
                         f"{rec.error if rec else 'no run'}")
    # as in the original run, epochs whose value was not finite are not logged
    new_curve = {e: v for e, v in sorted(rec.curves.get(metric, {}).items()) if math.isfinite(v)}
    original_curve = {m.step: m.value for m in client.get_metric_history(original_id, metric)}
    max_diff = _max_abs_diff(original_curve, new_curve)
    repeat_diffs = _repeat_diffs(client, original_id, rec.curves, metric, spec.study.repeats)
    max_diff = max([max_diff, *repeat_diffs.values()])
    records.tracker.log_summary(rec.run_id, {"max_abs_diff": max_diff if math.isfinite(max_diff) else -1.0})
    client.set_tag(original_id, TAG_REPRODUCED_BY, rec.run_id)
    new_tags = client.get_run(rec.run_id).data.tags
    return Reproduction(trial_number=trial.number, original_run_id=original_id, run_id=rec.run_id, metric=metric,
                        original=original_curve, reproduced=new_curve, max_abs_diff=max_diff, repeat_diffs=repeat_diffs,
                        environment_diffs=_environment_diffs(original.data.tags, new_tags),
                        note=exactness_note(backend(), spec.train.deterministic,
                                            original.data.tags.get(TAG_DEVICE, "CPU"), new_tags.get(TAG_DEVICE, "CPU")))


def _repeat_diffs(client: Any, original_id: str, curves: dict[str, dict[int, float]], metric: str,
                  repeats: int) -> dict[int, float]:
    """Seed repeats: the largest difference of each repeat's curve (``<metric>/repeat_<k>``), for the
    repeats that either run trained (a pruned original stopped before its last ones)."""
    diffs: dict[int, float] = {}
    for k in range(repeats if repeats > 1 else 0):
        key = f"{metric}/repeat_{k}"
        new = {e: v for e, v in sorted(curves.get(key, {}).items()) if math.isfinite(v)}
        original = {m.step: m.value for m in client.get_metric_history(original_id, key)}
        if original or new:
            diffs[k] = _max_abs_diff(original, new)
    return diffs


def exactness_note(backend: str, deterministic: bool, *devices: str) -> str | None:
    """A line saying why a reproduction need not be bit-exact, or ``None`` where it is expected to be:
    TensorFlow with op determinism (``[train].deterministic``) on any device, JAX on a CPU."""
    where = next((d for d in devices if d != "CPU"), "CPU")
    if backend == "tensorflow" and deterministic or where == "CPU" and backend == "jax":
        return None
    if backend == "tensorflow":
        why = "with [train].deterministic = false"
    elif where == "CPU":
        why = "is not checked for bit-exact reproduction"
    else:
        why = "does not fix the order of GPU reductions"
    return (f"note: {backend} on {where} {why}: the curves may differ slightly (growing with the epochs); "
            f"compare with --tolerance. Exact: TensorFlow (deterministic), and JAX on a CPU")


def _environment_diffs(then: dict[str, str], now: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Library versions, device, data digest and backend that differ between two runs."""
    diffs = {k: (then.get(k, "?"), v) for k, v in now.items()
             if k.startswith(ENVIRONMENT_TAG_PREFIXES) and then.get(k) != v}
    for key in [k for k in then if k.startswith(TAG_VERSION_PREFIX) and k not in now]:
        diffs[key] = (then[key], "not installed")
    return diffs
