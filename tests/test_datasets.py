"""The built-in data sets: generated ones are seeded and shaped like the course example."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nnstudy.datasets import (
    BUILTIN_TARGETS,
    builtin_frame,
    grades_frame,
    pass_fail_frame,
)
from nnstudy.spec import BUILTIN_SOURCES


def test_pass_fail_is_seeded() -> None:
    pd.testing.assert_frame_equal(pass_fail_frame(200, 3), pass_fail_frame(200, 3))
    assert not pass_fail_frame(200, 3).equals(pass_fail_frame(200, 4))


def test_pass_fail_columns_and_ranges() -> None:
    frame = pass_fail_frame(2000, 0)
    assert list(frame.columns) == ["lectures", "hours", "passed"] and len(frame) == 2000
    assert frame["lectures"].between(0, 24).all() and frame["hours"].between(0, 60).all()
    assert set(frame["passed"].unique()) == {0, 1}


def test_more_lectures_and_hours_pass_more_often_but_not_always() -> None:
    frame = pass_fail_frame(4000, 1)
    score = frame["lectures"].rank() + frame["hours"].rank()
    low, high = frame[score < score.quantile(0.25)], frame[score > score.quantile(0.75)]
    assert high["passed"].mean() > low["passed"].mean() + 0.3
    assert 0 < high["passed"].mean() < 1 and 0 < low["passed"].mean() < 1  # noisy labels: nobody is certain


def test_grades_share_the_inputs_and_stay_between_0_and_100() -> None:
    grades, passed = grades_frame(500, 2), pass_fail_frame(500, 2)
    pd.testing.assert_frame_equal(grades[["lectures", "hours"]], passed[["lectures", "hours"]])
    assert grades["grade"].between(0, 100).all()
    assert np.allclose(grades["grade"], grades["grade"].round(1))
    assert np.corrcoef(grades["hours"], grades["grade"])[0, 1] > 0


@pytest.mark.parametrize("source", sorted(BUILTIN_TARGETS))
def test_every_builtin_set_has_its_target_column(source: str) -> None:
    frame = builtin_frame(source, n_samples=60, seed=0)
    assert BUILTIN_TARGETS[source] in frame.columns and len(frame.columns) >= 3
    if source in ("pass_fail", "grades"):
        assert len(frame) == 60


def test_builtin_sources_of_the_spec_are_known_here() -> None:
    assert set(BUILTIN_TARGETS) <= set(BUILTIN_SOURCES)


def test_breast_cancer_labels_are_names() -> None:
    assert set(builtin_frame("breast_cancer")["target"]) == {"malignant", "benign"}
