"""Model bundles: a .keras model plus its preprocessing, saved, logged to a run and loaded back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from nnstudy.data import PreparedData, prepare
from nnstudy.datasets import pass_fail_frame
from nnstudy.errors import DataError
from nnstudy.export import (
    Bundle,
    download_bundle,
    log_bundle,
    save_bundle,
)
from nnstudy.model import build_model
from nnstudy.spec import StudySpec
from nnstudy.tracking import Tracker

PARAMS = {"depth": 1, "units": 8, "activation": "relu", "dropout": 0.0}


def _model(data: PreparedData) -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(PARAMS, n_features=data.n_features, task=data.task, n_classes=data.n_classes,
                       target_mean=data.target_mean)


@pytest.fixture
def binary(tiny_spec: Callable[..., StudySpec]) -> PreparedData:
    return prepare(tiny_spec())


def test_bundle_round_trip_predicts_like_the_model(binary: PreparedData, tmp_path: Path) -> None:
    model = _model(binary)
    save_bundle(model, binary.preprocessing, tmp_path / "b", {"trial": 3})
    bundle = Bundle.load(tmp_path / "b")
    assert bundle.info == {"trial": 3} and bundle.preprocessing == binary.preprocessing
    rows = pass_fail_frame(10, 7).drop(columns="passed")
    out = bundle.predict(rows)
    expected = model.predict(binary.preprocessing.transform(rows), verbose=0)[:, 0]
    np.testing.assert_allclose(out["p(1)"].to_numpy(), expected, rtol=1e-6)
    assert list(out["prediction"]) == [int(p >= 0.5) for p in expected]
    assert list(out.index) == list(rows.index)


def test_multiclass_and_regression_predictions(tiny_spec: Callable[..., StudySpec], tmp_path: Path) -> None:
    digits = prepare(tiny_spec(data={"source": "digits"}))
    save_bundle(_model(digits), digits.preprocessing, tmp_path / "d", {})
    from nnstudy.datasets import builtin_frame

    frame = builtin_frame("digits").drop(columns="target").head(4)
    out = Bundle.load(tmp_path / "d").predict(frame)
    assert list(out.columns) == ["prediction", *(f"p({c})" for c in range(10))]
    np.testing.assert_allclose(out.iloc[:, 1:].sum(axis=1), 1.0, rtol=1e-5)
    assert list(out["prediction"]) == list(out.iloc[:, 1:].to_numpy().argmax(axis=1))

    grades = prepare(tiny_spec(data={"source": "grades"}, study={"metric": "val_mae"}))
    save_bundle(_model(grades), grades.preprocessing, tmp_path / "g", {})
    out = Bundle.load(tmp_path / "g").predict(pass_fail_frame(3, 1).drop(columns="passed"))
    assert list(out.columns) == ["prediction"] and out["prediction"].dtype.kind == "f"


def test_bundle_refuses_no_rows_and_missing_columns(binary: PreparedData, tmp_path: Path) -> None:
    save_bundle(_model(binary), binary.preprocessing, tmp_path / "b", {})
    bundle = Bundle.load(tmp_path / "b")
    with pytest.raises(DataError, match="new.csv: has no rows to predict"):
        bundle.predict(pd.DataFrame({"lectures": [], "hours": []}), "new.csv")
    with pytest.raises(DataError, match="column 'hours': missing input column"):
        bundle.predict(pd.DataFrame({"lectures": [3]}), "new.csv")
    with pytest.raises(DataError, match="holds arrays; allowed: a .csv or .parquet file"):
        bundle.predict(np.zeros((2, 2)), "x.npz")


def test_logged_bundle_downloads_and_predicts_the_same(binary: PreparedData, tracker: Tracker,
                                                       tmp_path: Path) -> None:
    model = _model(binary)
    run_id = tracker.create_child_run(tracker.experiment("e"), None, "e", 0, params={}, tags={})
    log_bundle(tracker, run_id, model, binary.preprocessing, {"trial": 0})
    names = sorted(Path(f.path).name for f in tracker.client.list_artifacts(run_id, "model"))
    assert names == ["info.json", "model.keras", "preprocessing.json"]
    bundle = download_bundle(tracker.client, run_id, tmp_path / "down")
    rows = pass_fail_frame(5, 2).drop(columns="passed")
    pd.testing.assert_frame_equal(bundle.predict(rows), Bundle(model, binary.preprocessing, {}).predict(rows))
