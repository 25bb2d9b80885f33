"""diagnose() on synthetic learning curves: one per label, plus the edge cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnstudy import diagnosis
from nnstudy.diagnosis import Diagnosis, diagnose


def decay(n: int, start: float = 1.0, floor: float = 0.1, rate: float = 0.15) -> list[float]:
    """A healthy curve: exponential decay from ``start`` towards ``floor``."""
    return [floor + (start - floor) * math.exp(-rate * e) for e in range(n)]


def wiggle(xs: list[float], amplitude: float = 0.002) -> list[float]:
    """Deterministic epoch-to-epoch noise."""
    return [x + amplitude * (1 if i % 2 else -1) for i, x in enumerate(xs)]


def test_healthy_curve_is_ok() -> None:
    d = diagnose(decay(30), decay(30, start=1.05, floor=0.15), best_epoch=30)
    assert d == Diagnosis("ok", None, d.detail)
    assert "best epoch 30" in d.detail


def test_nan_loss_is_diverged_at_its_epoch() -> None:
    d = diagnose([1.0, 0.8, math.nan, 0.5], [1.0, 0.9, 0.8, 0.7])
    assert (d.label, d.epoch) == ("diverged", 3)
    assert "learning rate is too high" in d.detail


def test_infinite_val_loss_is_diverged() -> None:
    d = diagnose(decay(10), [*decay(10)[:6], math.inf, 1.0, 1.0, 1.0])
    assert (d.label, d.epoch) == ("diverged", 7)


def test_nan_beats_every_other_rule_even_with_one_epoch() -> None:
    assert diagnose([math.nan], []).label == "diverged"
    flat = [0.7] * 20
    assert diagnose([*flat, math.nan], flat).label == "diverged"


def test_exploding_loss_is_diverged_where_it_passed_ten_times_the_minimum() -> None:
    loss = [1.0, 0.5, 0.3, 0.5, 2.0, 5.0, 10.0]
    d = diagnose(loss, loss)
    assert (d.label, d.epoch) == ("diverged", 6)
    assert "exploded" in d.detail


def test_loss_ending_far_above_its_start_is_diverged() -> None:
    d = diagnose([1.0, 1.2, 1.4, 1.6, 1.8], [1.0, 1.1, 1.2, 1.3, 1.4])
    assert (d.label, d.epoch) == ("diverged", 4)


def test_barely_moving_loss_is_too_slow() -> None:
    loss = [0.70 - 0.0005 * e for e in range(20)]
    d = diagnose(loss, [x + 0.01 for x in loss])
    assert (d.label, d.epoch) == ("too-slow", None)
    assert "learning rate is too low" in d.detail


def test_too_slow_needs_the_drop_under_five_percent() -> None:
    loss = [1.0 - 0.004 * e for e in range(20)]  # 7.6 % drop, still falling steadily
    assert diagnose(loss, loss).label == "ok"


def test_rising_val_loss_with_falling_train_loss_is_overfitting_from_the_epoch_after_the_minimum() -> None:
    loss = decay(25, floor=0.05)
    val = [*decay(10, floor=0.3), *(0.3 + 0.02 * k + 0.7 * math.exp(-1.5) for k in range(1, 16))]
    low_epoch = val.index(min(val)) + 1
    d = diagnose(loss, val)
    assert (d.label, d.epoch) == ("overfitting", low_epoch + 1)
    assert f"epoch {low_epoch}" in d.detail


def test_overfitting_with_early_stopping_shape() -> None:
    # val minimum at epoch 12, then patience 10: val rises 3 % an epoch for 10 epochs
    loss = decay(22, floor=0.02, rate=0.2)
    val = [*decay(12, floor=0.25, rate=0.3), *(min(decay(12, floor=0.25, rate=0.3)) * (1 + 0.03 * k) for k in range(1, 11))]
    d = diagnose(loss, val, best_epoch=12)
    assert (d.label, d.epoch) == ("overfitting", 13)


def test_small_rise_is_not_overfitting() -> None:
    val = [*decay(15, floor=0.3), *(0.3 + 0.005 * k for k in range(1, 6))]  # < 10 % above the minimum
    assert diagnose(decay(20), val).label == "ok"


def test_short_lived_rise_is_not_overfitting() -> None:
    base = decay(15, floor=0.3)
    val = [*base, base[-1] * 1.3, base[-1] * 1.3, base[-1] * 0.99, base[-1] * 0.98]
    assert diagnose(decay(19), val).label == "ok"


def test_rising_val_loss_with_rising_train_loss_is_not_overfitting() -> None:
    loss = [*decay(10), *(decay(10)[-1] * (1 + 0.05 * k) for k in range(1, 6))]
    val = [*decay(10, floor=0.3), *(0.45 * (1 + 0.05 * k) for k in range(1, 6))]
    assert diagnose(loss, val).label != "overfitting"


def test_high_plateau_is_underfitting() -> None:
    loss = wiggle(decay(40, start=0.76, floor=0.69, rate=0.5), 0.003)
    val = wiggle(decay(40, start=0.74, floor=0.69, rate=0.5), 0.001)
    d = diagnose(loss, val)
    assert (d.label, d.epoch) == ("underfitting", None)
    assert "underfits" in d.detail


def test_underfitting_without_validation_curve() -> None:
    assert diagnose(decay(30, start=1.0, floor=0.85, rate=0.6), []).label == "underfitting"


def test_plateau_in_train_but_val_still_falling_is_not_underfitting() -> None:
    loss = decay(30, start=1.0, floor=0.85, rate=0.6)
    val = [1.0 - 0.01 * e for e in range(30)]
    assert diagnose(loss, val).label == "ok"


def test_steady_slow_descent_is_not_a_plateau() -> None:
    loss = [0.74 - 0.0007 * e for e in range(60)]  # 5.7 % in 60 epochs, a straight line
    d = diagnose(loss, [x + 0.005 for x in loss])
    assert d.label == "ok"
    assert "still falling" in d.detail


def test_one_epoch_and_empty_curves_are_ok() -> None:
    assert diagnose([0.7], [0.71]) == Diagnosis("ok", None, diagnose([0.7], [0.71]).detail)
    assert diagnose([], []).label == "ok"
    assert diagnose([0.7, 0.1], []).label == "ok"


def test_empty_val_list_still_judges_the_training_curve() -> None:
    assert diagnose(decay(20), []).label == "ok"
    assert diagnose([0.7] * 10, []).label == "too-slow"


def test_zero_and_negative_losses_do_not_crash() -> None:
    assert diagnose([0.0] * 5, [0.0] * 5).label == "too-slow"
    assert diagnose([-1.0, -2.0, -3.0, -4.0], []).label in ("ok", "underfitting")


def test_thresholds_are_documented_constants() -> None:
    doc = diagnosis.__doc__ or ""
    for name in ("DIVERGE_EXPLODE_FACTOR", "DIVERGE_END_FACTOR", "TOO_SLOW_MAX_DROP", "OVERFIT_RISE",
                 "OVERFIT_MIN_EPOCHS", "UNDERFIT_MAX_DROP", "FLAT_MAX_DROP", "FLAT_MAX_SHARE", "MIN_EPOCHS"):
        assert name in doc
        assert isinstance(getattr(diagnosis, name), (int, float))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=40),
       st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=40))
def test_any_curve_gets_a_label(loss: list[float], val: list[float]) -> None:
    d = diagnose(loss, val)
    assert d.label in ("diverged", "too-slow", "overfitting", "underfitting", "ok")
    assert d.epoch is None or 1 <= d.epoch <= max(len(loss), len(val))
    assert d.detail
    if any(not math.isfinite(x) for x in [*loss, *val]):
        assert d.label == "diverged"


@pytest.mark.parametrize("n", [3, 4, 5])
def test_short_pruned_runs(n: int) -> None:
    assert diagnose([0.693] * n, [0.697] * n).label == "too-slow"
    assert diagnose(decay(n, rate=0.5), decay(n, rate=0.5)).label == "ok"
