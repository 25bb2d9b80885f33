"""Seed repeats (``[study].repeats = K``): one configuration trained K times, each repeat with its own
seed derived from the trial's, and the trial's value aggregated from the K best-epoch values.

Repeat 0 uses the trial's own seed, so ``repeats = 1`` is exactly a plain trial. Repeats train one
after another; each has its own early stopping. The pruner sees one value per step: repeat ``k`` at
epoch ``e`` reports at step ``k * max_epochs + e`` the *running* aggregate -- the best-epoch values of
the repeats already trained and the current repeat's value at this epoch (for repeat 0: its plain
value at step ``e``, as without repeats). Every trial of a study reports the same quantity at the
same step, so the median/percentile pruners and successive halving compare like with like.

:func:`combine` folds the repeats' :class:`~nnstudy.training.TrainResult` into one whose ``value``
is the aggregate, whose curves are the mean curves across repeats, and whose model is the best
repeat's (the one with the best validation value: the weights one would deploy).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from nnstudy.training import TrainResult, _best_epoch

AGGREGATES = ("mean", "median", "worst")


def repeat_seed(trial_seed: int, repeat: int) -> int:
    """The seed of one repeat: the trial's seed for repeat 0, derived from it for the others."""
    if repeat == 0:
        return trial_seed
    return (trial_seed * 1_000_003 + repeat * 104_729 + 7) % (2**31 - 1)


def aggregate(values: Sequence[float], how: str, direction: str) -> float:
    """The trial's value from its repeats' values: their mean, median or worst (the largest loss, the
    smallest accuracy). NaN when a value is not finite (a repeat that never had a finite metric)."""
    if not values or not all(math.isfinite(v) for v in values):
        return math.nan
    if how == "mean":
        return float(statistics.fmean(values))
    if how == "median":
        return float(statistics.median(values))
    if how == "worst":
        return float(max(values) if direction == "minimize" else min(values))
    raise ValueError(f"unknown aggregate {how!r}; allowed: {', '.join(AGGREGATES)}")


def spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = float(statistics.fmean(values))
    return mean, float(statistics.stdev(values)) if len(values) > 1 else 0.0


def step_of(repeat: int, epoch: int, max_epochs: int) -> int:
    """The pruner's step for ``epoch`` (1-based) of ``repeat``: repeat 0 reports at its epochs."""
    return repeat * max_epochs + epoch


def mean_curves(histories: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per metric, the mean over the repeats that ran each epoch (finite values only; NaN where none)."""
    out: dict[str, list[float]] = {}
    for key in dict.fromkeys(k for h in histories for k in h):
        length = max(len(h.get(key, [])) for h in histories)
        curve = []
        for i in range(length):
            seen = [h[key][i] for h in histories if i < len(h.get(key, [])) and math.isfinite(h[key][i])]
            curve.append(float(statistics.fmean(seen)) if seen else math.nan)
        out[key] = curve
    return out


@dataclass
class RepeatedResult(TrainResult):
    """The K trainings of one configuration as one result (see :func:`combine`)."""

    repeats: list[TrainResult] = field(default_factory=list)
    how: str = "mean"
    direction: str = "minimize"
    kept: int = 0  # the repeat whose model this result carries

    def values(self, metric: str) -> list[float]:
        """Each repeat's ``metric`` at its own best epoch."""
        return [r.value(metric) for r in self.repeats]

    def value(self, metric: str) -> float:
        return aggregate(self.values(metric), self.how, self.direction)


def best_repeat(values: Sequence[float], direction: str) -> int:
    """The repeat with the best value (the first of equals; 0 when none is finite)."""
    finite = [(v if direction == "minimize" else -v, i) for i, v in enumerate(values) if math.isfinite(v)]
    return min(finite)[1] if finite else 0


def combine(results: Sequence[TrainResult], *, metric: str, how: str, direction: str) -> RepeatedResult:
    """One result for the repeats trained so far: the mean curves (``best_epoch``: where the mean
    curve of ``metric`` is best; ``stopped_epoch``: the longest repeat), the best repeat's model, the
    mean ``test_*`` metrics, and the divergence or pruning of the last repeat (which ended the trial)."""
    last = results[-1]
    history = mean_curves([r.history for r in results])
    kept = best_repeat([r.value(metric) for r in results], direction)
    tested = [r.test_metrics for r in results if r.test_metrics]
    test_metrics = {k: float(statistics.fmean(t[k] for t in tested)) for k in tested[0]} if tested else {}
    return RepeatedResult(
        history=history, best_epoch=_best_epoch(history.get(metric, []), direction),
        stopped_epoch=max(r.stopped_epoch for r in results), early_stopped=all(r.early_stopped for r in results),
        diverged_at=last.diverged_at, stopped_by_hook=last.stopped_by_hook, model=results[kept].model,
        duration_s=sum(r.duration_s for r in results), test_metrics=test_metrics,
        repeats=list(results), how=how, direction=direction, kept=kept,
    )
