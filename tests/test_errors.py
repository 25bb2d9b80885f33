"""The error hierarchy: one-line messages naming where the problem is, and the exit code of each kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnstudy.errors import (
    DataError,
    NnstudyError,
    SpecError,
    StoreError,
    StudyInterrupted,
    StudyNotFoundError,
    TrialFailed,
    UserInputError,
)


def test_spec_error_names_file_field_and_problem() -> None:
    err = SpecError(Path("studies/x.toml"), "[study].metric", "'val_f1' is not a metric; allowed: val_loss")
    assert str(err) == "studies/x.toml: [study].metric: 'val_f1' is not a metric; allowed: val_loss"
    assert (err.file, err.field, err.problem) == ("studies/x.toml", "[study].metric",
                                                  "'val_f1' is not a metric; allowed: val_loss")


def test_spec_error_without_file_or_field() -> None:
    assert str(SpecError(None, "[data].source", "bad")) == "<spec>: [data].source: bad"
    assert str(SpecError("s.toml", "", "not valid TOML")) == "s.toml: not valid TOML"


def test_data_error_names_the_column_when_there_is_one() -> None:
    err = DataError(Path("rows.csv"), "3 row(s) have missing values", column="age")
    assert str(err) == "rows.csv: column 'age': 3 row(s) have missing values"
    assert (err.source, err.column) == ("rows.csv", "age")
    assert str(DataError("pass_fail", "too few rows")) == "pass_fail: too few rows"


@pytest.mark.parametrize(("error", "code"), [
    (SpecError("s.toml", "f", "p"), 2), (DataError("d", "p"), 2), (StoreError("s"), 2),
    (StudyNotFoundError("s"), 2), (UserInputError("u"), 2), (TrialFailed("diverged"), 1),
    (NnstudyError("n"), 1), (StudyInterrupted("i"), 130),
])
def test_exit_codes(error: NnstudyError, code: int) -> None:
    assert error.exit_code == code
    assert isinstance(error, NnstudyError)
    assert isinstance(error, UserInputError) is (code == 2)


def test_trial_failed_keeps_reason_and_detail() -> None:
    err = TrialFailed("out-of-memory", "ResourceExhaustedError: OOM")
    assert (err.reason, err.detail, str(err)) == ("out-of-memory", "ResourceExhaustedError: OOM",
                                                  "out-of-memory: ResourceExhaustedError: OOM")
    assert str(TrialFailed("diverged")) == "diverged"


def test_every_error_of_the_package_is_exported() -> None:
    import nnstudy

    for name in ("DataError", "NnstudyError", "SpecError", "StoreError", "StudyInterrupted", "TrialFailed",
                 "UserInputError"):
        assert getattr(nnstudy, name).__module__ == "nnstudy.errors"
