"""The Preprocessing record and its pieces: categories, imputation, encoding, scaling, class labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nnstudy.errors import DataError
from nnstudy.preprocessing import (
    MAX_CATEGORIES,
    Preprocessing,
    categories_of,
    check_missing,
    encode,
)


def test_categories_are_text_and_bool_columns_but_not_numbers_stored_as_text() -> None:
    frame = pd.DataFrame({"n": [1.0, 2.0, 3.0], "as_text": ["1", "2.5", None], "color": ["red", "blue", "red"],
                          "flag": [True, False, True]})
    assert categories_of(frame, "rows.csv") == {"color": ["blue", "red"], "flag": ["False", "True"]}


def test_too_many_categories_name_the_column() -> None:
    frame = pd.DataFrame({"id": [f"s{i}" for i in range(MAX_CATEGORIES + 1)]})
    with pytest.raises(DataError, match=rf"column 'id': text column with {MAX_CATEGORIES + 1} distinct values"):
        categories_of(frame, "rows.csv")
    assert categories_of(frame.head(MAX_CATEGORIES), "rows.csv")["id"][0] == "s0"


def test_encode_one_hot_encodes_imputes_and_checks_numbers() -> None:
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0], "color": ["red", "blue", "green"]})
    encoded = encode(frame, {"color": ["blue", "red"]}, {"x": 9.0}, "rows.csv")
    assert list(encoded.columns) == ["x", "color=blue", "color=red"]
    assert encoded.to_numpy().tolist() == [[1.0, 0.0, 1.0], [9.0, 1.0, 0.0], [3.0, 0.0, 0.0]]  # green: unseen
    with pytest.raises(DataError, match=r"rows\.csv: column 'x': 1 row\(s\) not numeric or missing"):
        encode(pd.DataFrame({"x": [1.0, None]}), {}, {}, "rows.csv")
    assert frame["x"].isna().sum() == 1  # the caller's frame is left alone


@pytest.mark.parametrize(("policy", "frame", "words"), [
    ("error", pd.DataFrame({"a": [1.0, None]}), "column 'a': 1 row(s) have missing values"),
    ("mean", pd.DataFrame({"t": ["x", None]}), "missing value(s) in a text column cannot be imputed with 'mean'"),
    ("median", pd.DataFrame({"t": ["x", None]}), "cannot be imputed with 'median'"),
])
def test_check_missing_refuses_what_the_policy_cannot_handle(policy: str, frame: pd.DataFrame, words: str) -> None:
    with pytest.raises(DataError) as err:
        check_missing(frame, policy, "rows.csv")
    assert words in str(err.value)


@pytest.mark.parametrize("policy", ["drop", "mean", "median"])
def test_check_missing_accepts_numeric_gaps_under_the_other_policies(policy: str) -> None:
    check_missing(pd.DataFrame({"a": [1.0, None], "t": ["x", "y"]}), policy, "rows.csv")


def _record() -> Preprocessing:
    return Preprocessing(task="multiclass", target="kind", input_columns=["x", "color"],
                         categories={"color": ["blue", "red"]}, impute={"x": 2.0},
                         feature_names=["x", "color=blue", "color=red"], mean=[2.0, 0.5, 0.5], scale=[2.0, 0.5, 0.5],
                         classes=["ant", "bee", "cat"])


def test_transform_scales_with_the_recorded_statistics() -> None:
    x = _record().transform(pd.DataFrame({"color": ["red", "blue"], "x": [4.0, None], "ignored": [1, 2]}))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[1.0, -1.0, 1.0], [0.0, 1.0, -1.0]])


def test_decode_gives_the_original_labels() -> None:
    assert list(_record().decode(np.array([2, 0, 1]))) == ["cat", "ant", "bee"]


def test_json_round_trip_is_equal() -> None:
    record = _record()
    assert Preprocessing.from_json(record.to_json()) == record
