"""The built-in data sets: the course example "will I pass this class?" (generated, seeded), its
grade as a regression target, and the sets scikit-learn ships (digits, breast cancer).
No downloads: every set is generated or read from an installed package."""

from __future__ import annotations

import numpy as np
import pandas as pd

def pass_fail_frame(n_samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The course's running example: lectures attended and project hours -> passed (0/1).

    The boundary is curved (attending lectures makes project hours count for more) and
    10% of labels are noisy, so no model reaches 100% and overfitting is visible.
    """
    frame = _course_inputs(n_samples, seed)
    rng = np.random.default_rng(seed + 1)
    lectures, hours = frame["lectures"].to_numpy(), frame["hours"].to_numpy()
    logit = 0.28 * (lectures - 10) + 0.20 * (hours - 12) + 0.012 * (lectures - 10) * (hours - 12)
    passed = rng.random(n_samples) < 1.0 / (1.0 + np.exp(-logit))
    flip = rng.random(n_samples) < 0.10
    frame["passed"] = np.where(flip, ~passed, passed).astype(int)
    return frame


def grades_frame(n_samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Same inputs as :func:`pass_fail_frame`, target is the final grade 0..100 (regression)."""
    frame = _course_inputs(n_samples, seed)
    rng = np.random.default_rng(seed + 2)
    lectures, hours = frame["lectures"].to_numpy(), frame["hours"].to_numpy()
    grade = 20 + 1.6 * lectures + 2.2 * hours - 0.035 * hours**2 + 0.02 * lectures * hours
    frame["grade"] = np.clip(grade + rng.normal(0, 7, n_samples), 0, 100).round(1)
    return frame


def _course_inputs(n_samples: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lectures = rng.integers(0, 25, n_samples)  # of 24 lectures
    hours = np.clip(rng.gamma(2.0, 6.0, n_samples), 0, 60).round(1)
    return pd.DataFrame({"lectures": lectures, "hours": hours})


def _sklearn_frame(name: str) -> pd.DataFrame:
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}[name]
    bunch = loader(as_frame=True)
    frame: pd.DataFrame = bunch.frame
    if name == "breast_cancer":  # name the classes, so predictions read "malignant"/"benign"
        frame["target"] = np.asarray(bunch.target_names)[frame["target"].to_numpy()]
    return frame


#: the target column of each built-in set
BUILTIN_TARGETS = {"pass_fail": "passed", "grades": "grade", "digits": "target", "breast_cancer": "target"}


def builtin_frame(source: str, n_samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The raw table of a built-in set (``n_samples`` and ``seed`` apply to the generated ones)."""
    if source == "pass_fail":
        return pass_fail_frame(n_samples, seed)
    if source == "grades":
        return grades_frame(n_samples, seed)
    return _sklearn_frame(source)
