"""Learning-curve diagnosis in the terms of an intro deep-learning course.

``diagnose(loss, val_loss)`` reads the per-epoch training and validation loss of one trial
(index 0 = epoch 1) and names the first problem it sees, checked in this order:

============  ===========================================================  ==========================
label         rule (constants below)                                       what it usually means
============  ===========================================================  ==========================
diverged      a loss is NaN/infinite, or the training loss ends more than  learning rate too high
              ``DIVERGE_EXPLODE_FACTOR`` x its minimum, or more than
              ``DIVERGE_END_FACTOR`` x its first epoch
too-slow      the training loss fell less than ``TOO_SLOW_MAX_DROP`` of    learning rate too low, or
              its first-epoch value over the whole run                     too few epochs
overfitting   after its minimum, the validation loss is more than          model memorizes the
              ``OVERFIT_RISE`` above it for at least                       training set: dropout,
              ``OVERFIT_MIN_EPOCHS`` epochs (the last one included), while  smaller model, early stop
              the training loss kept falling; ``epoch`` = val minimum + 1
underfitting  the training loss fell less than ``UNDERFIT_MAX_DROP`` of    model too small or too
              its start and is flat over the last third of the run: its    regularized
              least-squares drop there is under ``FLAT_MAX_DROP`` of the
              start and under ``FLAT_MAX_SHARE`` of the whole drop (a
              steady slow descent is no plateau); the validation loss
              (when given) likewise
ok            none of the above
============  ===========================================================  ==========================

Without knowing the task a loss cannot be called "high" in absolute terms, so every rule
compares the curve with its own first epoch. The "end" of a curve is the median of its last
``END_WINDOW`` epochs (fewer for short runs) so that one noisy epoch decides nothing. Shape
rules (all but the non-finite check) need at least ``MIN_EPOCHS`` epochs.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Literal

Label = Literal["diverged", "too-slow", "overfitting", "underfitting", "ok"]

#: fewer epochs than this: only the NaN/inf check applies
MIN_EPOCHS = 3
#: the end of a curve is the median of its last this-many epochs (at most a fifth of the run)
END_WINDOW = 3
#: training loss ending above this many times its minimum has exploded
DIVERGE_EXPLODE_FACTOR = 10.0
#: training loss ending above this many times its first epoch went the wrong way
DIVERGE_END_FACTOR = 1.5
#: a training loss that fell less than this fraction of its start barely moved
TOO_SLOW_MAX_DROP = 0.05
#: validation loss this fraction above its minimum counts as risen
OVERFIT_RISE = 0.10
#: ... for at least this many epochs after the minimum
OVERFIT_MIN_EPOCHS = 3
#: a training loss that fell less than this fraction of its start stayed high
UNDERFIT_MAX_DROP = 0.25
#: a curve is flat when its least-squares drop over the last third is under this fraction of its start
FLAT_MAX_DROP = 0.02
#: ... and under this share of its whole drop (a steady slow descent is no plateau)
FLAT_MAX_SHARE = 0.1

_EPS = 1e-12


@dataclass(frozen=True)
class Diagnosis:
    """The verdict on one learning curve; ``epoch`` is 1-based (None when no epoch applies)."""

    label: Label
    epoch: int | None
    detail: str


def _scale(x: float) -> float:
    return max(abs(x), _EPS)


def _end(xs: list[float]) -> float:
    window = max(1, min(END_WINDOW, len(xs) // 5))
    return float(statistics.median(xs[-window:]))


def _drop(xs: list[float]) -> float:
    """How much the curve fell from its first epoch to its end, as a fraction of the first epoch."""
    return (xs[0] - _end(xs)) / _scale(xs[0])


def _tail_drop(xs: list[float]) -> float:
    """The least-squares drop over the last third of the curve, as a fraction of the first epoch."""
    tail = xs[-max(2, len(xs) // 3):]
    n = len(tail)
    mean_x, mean_y = (n - 1) / 2, sum(tail) / n
    slope = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(tail)) / sum((i - mean_x) ** 2 for i in range(n))
    return -slope * (n - 1) / _scale(xs[0])


def _flat(xs: list[float]) -> bool:
    """Whether the last third of the curve is a plateau (see ``FLAT_MAX_DROP`` and ``FLAT_MAX_SHARE``)."""
    return _tail_drop(xs) < min(FLAT_MAX_DROP, FLAT_MAX_SHARE * max(_drop(xs), TOO_SLOW_MAX_DROP))


def _first_above(xs: list[float], threshold: float, start: int = 0) -> int:
    """1-based epoch of the first value above ``threshold`` at or after index ``start``."""
    return next((i + 1 for i in range(start, len(xs)) if xs[i] > threshold), len(xs))


def _diverged(loss: list[float], val_loss: list[float]) -> Diagnosis | None:
    for name, xs in (("loss", loss), ("validation loss", val_loss)):
        bad = next((i for i, x in enumerate(xs) if not math.isfinite(x)), None)
        if bad is not None:
            return Diagnosis("diverged", bad + 1, f"{name} became NaN/infinite at epoch {bad + 1}: "
                             "the learning rate is too high")
    if len(loss) < MIN_EPOCHS:
        return None
    low, end, start = min(loss), _end(loss), loss[0]
    if low > 0 and end > DIVERGE_EXPLODE_FACTOR * low:
        at = _first_above(loss, DIVERGE_EXPLODE_FACTOR * low, loss.index(low))
        return Diagnosis("diverged", at, f"training loss exploded to {end:.3g}, {end / low:.0f}x its minimum "
                         f"{low:.3g}, from epoch {at}: the learning rate is too high")
    if start > 0 and end > DIVERGE_END_FACTOR * start:
        at = _first_above(loss, DIVERGE_END_FACTOR * start)
        return Diagnosis("diverged", at, f"training loss ended at {end:.3g}, far above its start {start:.3g} "
                         "(the loss went up, not down): the learning rate is too high")
    return None


def _overfitting(loss: list[float], val_loss: list[float]) -> Diagnosis | None:
    if len(val_loss) < MIN_EPOCHS:
        return None
    low = min(val_loss)
    at = val_loss.index(low)
    threshold = low + OVERFIT_RISE * _scale(low)
    risen = [v for v in val_loss[at + 1:] if v > threshold]
    if len(risen) < OVERFIT_MIN_EPOCHS or val_loss[-1] <= threshold or at >= len(loss) - 1:
        return None
    if not _end(loss) < loss[at]:
        return None
    rise = (max(risen) - low) / _scale(low)
    return Diagnosis("overfitting", at + 2, f"validation loss was lowest at epoch {at + 1} ({low:.3g}) and then "
                     f"rose up to {rise:.0%} above it while training loss kept falling: the model overfits "
                     "(try dropout, a smaller model or early stopping)")


def _underfitting(loss: list[float], val_loss: list[float]) -> Diagnosis | None:
    curves = [loss] + ([val_loss] if len(val_loss) >= MIN_EPOCHS else [])
    if any(_drop(xs) >= UNDERFIT_MAX_DROP or not _flat(xs) for xs in curves):
        return None
    return Diagnosis("underfitting", None, f"training loss fell only {_drop(loss):.0%} ({loss[0]:.3g} -> "
                     f"{_end(loss):.3g}) and levelled off high, validation loss too: the model underfits "
                     "(try more units or layers, less dropout, or another optimizer)")


def diagnose(loss: list[float], val_loss: list[float], *, best_epoch: int | None = None) -> Diagnosis:
    """Name what went wrong in one trial's learning curves (see the module docstring).

    ``loss`` and ``val_loss`` are per-epoch values, index 0 = epoch 1; ``val_loss`` may be
    empty (no validation split) or shorter. ``best_epoch`` (the epoch early stopping kept)
    only enriches the ``ok`` sentence.
    """
    loss = [float(x) for x in loss]
    val_loss = [float(x) for x in val_loss]
    found = _diverged(loss, val_loss)
    if found is not None:
        return found
    if not loss:
        return Diagnosis("ok", None, "no training loss was recorded: nothing to diagnose")
    if len(loss) < MIN_EPOCHS:
        return Diagnosis("ok", None, f"only {len(loss)} epoch(s) ran: too few to judge the learning curve")
    drop = _drop(loss)
    if drop < TOO_SLOW_MAX_DROP:
        return Diagnosis("too-slow", None, f"training loss fell only {drop:.1%} in {len(loss)} epochs "
                         f"({loss[0]:.3g} -> {_end(loss):.3g}): the learning rate is too low or there were "
                         "too few epochs")
    found = _overfitting(loss, val_loss) or _underfitting(loss, val_loss)
    if found is not None:
        return found
    kept = f", best epoch {best_epoch}" if best_epoch else ""
    if not _flat(loss) and drop < UNDERFIT_MAX_DROP:
        return Diagnosis("ok", None, f"training loss fell {drop:.0%} ({loss[0]:.3g} -> {_end(loss):.3g}{kept}) "
                         "and was still falling at the end: more epochs or a higher learning rate may help")
    return Diagnosis("ok", None, f"training loss fell {drop:.0%} ({loss[0]:.3g} -> {_end(loss):.3g}{kept}) "
                     "with no sign of divergence, overfitting or underfitting")
