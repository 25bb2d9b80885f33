"""Data preparation: built-in sets, CSV/Parquet files, splits, scaling, encoding and the Preprocessing record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nnstudy.data import PreparedData, prepare
from nnstudy.preprocessing import Preprocessing
from nnstudy.errors import DataError
from nnstudy.spec import StudySpec, parse_spec


def _spec(data: dict[str, Any], study: dict[str, Any] | None = None, base: Path | None = None) -> StudySpec:
    """A spec whose relative data paths resolve against ``base``."""
    return parse_spec({"data": data, "study": study or {}}, path=base / "spec.toml" if base else None)


def _write_csv(tmp_path: Path, name: str, frame: pd.DataFrame, sep: str = ",") -> Path:
    path = tmp_path / name
    frame.to_csv(path, sep=sep, index=False)
    return path


def _table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A small mixed table: two numbers, a text feature, an ID column and a yes/no target."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(1000, 1000 + n),
        "height": rng.normal(170, 10, n).round(2),
        "weight": rng.normal(70, 8, n).round(2),
        "color": rng.choice(["red", "green", "blue"], n),
        "label": np.where(np.arange(n) % 3 == 0, "yes", "no"),
    })


def _all_rows(data: PreparedData) -> np.ndarray:
    parts = [data.x_train, data.x_val] + ([data.x_test] if data.x_test is not None else [])
    return np.vstack(parts)


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    return x[np.lexsort(x.T[::-1])]


# --------------------------------------------------------------------------- built-in sets


def test_pass_fail_is_binary_with_two_features() -> None:
    data = prepare(_spec({"source": "pass_fail", "n_samples": 200}))
    assert data.task == "binary" and data.n_classes == 1 and data.n_features == 2
    assert data.preprocessing.input_columns == ["lectures", "hours"] and data.preprocessing.target == "passed"
    assert data.preprocessing.classes == [0, 1]
    assert data.y_train.dtype == np.float32 and set(np.unique(data.y_train)) == {0.0, 1.0}
    assert data.x_train.dtype == np.float32
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (120, 40, 40)  # type: ignore[arg-type]


def test_grades_is_a_regression() -> None:
    data = prepare(_spec({"source": "grades", "n_samples": 100}, {"metric": "val_mae"}))
    assert data.task == "regression" and data.n_classes == 1 and data.preprocessing.classes == []
    assert data.y_train.dtype == np.float32
    assert 0 <= data.y_train.min() and data.y_train.max() <= 100
    assert len(np.unique(data.y_train)) > 20


def test_digits_is_multiclass_with_ten_classes() -> None:
    data = prepare(_spec({"source": "digits"}))
    assert data.task == "multiclass" and data.n_classes == 10 and data.n_features == 64
    assert data.preprocessing.classes == list(range(10))
    assert data.y_train.dtype == np.int32 and set(np.unique(data.y_train)) == set(range(10))


def test_breast_cancer_keeps_its_string_labels() -> None:
    data = prepare(_spec({"source": "breast_cancer"}))
    assert data.task == "binary" and data.n_features == 30
    assert data.preprocessing.classes == ["benign", "malignant"]
    assert list(data.preprocessing.decode(np.array([1, 0]))) == ["malignant", "benign"]
    # 212 of 569 tumours are malignant (class 1)
    total = np.concatenate([data.y_train, data.y_val, data.y_test])  # type: ignore[list-item]
    assert int(total.sum()) == 212 and len(total) == 569


def test_builtin_target_can_be_another_column() -> None:
    data = prepare(_spec({"source": "pass_fail", "target": "hours", "n_samples": 100}))
    assert data.task == "regression" and data.preprocessing.input_columns == ["lectures", "passed"]


# --------------------------------------------------------------------------- determinism and splits


def test_same_spec_gives_the_same_digest_and_arrays() -> None:
    a = prepare(_spec({"source": "pass_fail", "n_samples": 200}))
    b = prepare(_spec({"source": "pass_fail", "n_samples": 200}))
    assert a.digest == b.digest and len(a.digest) == 16
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_val, b.y_val)


def test_another_split_seed_or_data_seed_changes_the_digest() -> None:
    base = prepare(_spec({"source": "pass_fail", "n_samples": 200})).digest
    assert prepare(_spec({"source": "pass_fail", "n_samples": 200}, {"seed": 1})).digest != base
    assert prepare(_spec({"source": "pass_fail", "n_samples": 200, "seed": 1})).digest != base


def test_split_is_stratified_with_exact_sizes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(100, dtype=float), "y": ["a"] * 30 + ["b"] * 70})
    _write_csv(tmp_path, "rows.csv", frame)
    data = prepare(_spec({"source": "rows.csv", "target": "y"}, base=tmp_path))
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (60, 20, 20)  # type: ignore[arg-type]
    # class "a" (id 0) keeps its 30% share in every split
    assert int((data.y_test == 0).sum()) == 6  # type: ignore[union-attr]
    assert int((data.y_val == 0).sum()) == 6
    assert int((data.y_train == 0).sum()) == 18


def test_no_test_split_when_test_fraction_is_zero() -> None:
    data = prepare(_spec({"source": "pass_fail", "n_samples": 100, "test_fraction": 0.0}))
    assert data.x_test is None and data.y_test is None
    assert (len(data.x_train), len(data.x_val)) == (80, 20)
    assert data.summary()["test_rows"] == 0


def test_splits_partition_the_rows(tmp_path: Path) -> None:
    frame = pd.DataFrame({"row": np.arange(50.0), "y": [0, 1] * 25})
    _write_csv(tmp_path, "rows.csv", frame)
    data = prepare(_spec({"source": "rows.csv", "target": "y"}, base=tmp_path))
    pre = data.preprocessing

    def ids(x: np.ndarray) -> set[int]:
        return {int(round(v)) for v in (x[:, 0] * pre.scale[0] + pre.mean[0]).tolist()}

    train, val, test = ids(data.x_train), ids(data.x_val), ids(data.x_test)  # type: ignore[arg-type]
    assert (len(train), len(val), len(test)) == (30, 10, 10)
    assert train | val | test == set(range(50))


# --------------------------------------------------------------------------- scaling


def test_scaler_is_fitted_on_the_training_rows_only() -> None:
    data = prepare(_spec({"source": "grades", "n_samples": 300}, {"metric": "val_mae"}))
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-4)
    # validation rows are scaled with the training statistics, so their mean is not exactly 0
    assert np.abs(data.x_val.mean(axis=0)).max() > 1e-3
    raw = data.preprocessing
    assert raw.mean != pytest.approx(np.vstack([data.x_train, data.x_val]).mean(axis=0).tolist())


def test_constant_feature_is_not_divided_by_zero(tmp_path: Path) -> None:
    frame = pd.DataFrame({"c": [5.0] * 20, "x": np.arange(20.0), "y": [0, 1] * 10})
    _write_csv(tmp_path, "rows.csv", frame)
    data = prepare(_spec({"source": "rows.csv", "target": "y"}, base=tmp_path))
    assert np.all(np.isfinite(data.x_train)) and np.all(data.x_train[:, 0] == 0.0)
    assert data.preprocessing.scale[0] == 1.0


# --------------------------------------------------------------------------- CSV files


@pytest.mark.parametrize("sep", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_csv_delimiter_is_sniffed(tmp_path: Path, sep: str) -> None:
    frame = _table()
    _write_csv(tmp_path, "rows.csv", frame, sep=sep)
    data = prepare(_spec({"source": "rows.csv", "target": "label", "exclude": ["id"]}, base=tmp_path))
    assert data.preprocessing.input_columns == ["height", "weight", "color"]
    _write_csv(tmp_path, "ref.csv", frame)
    ref = prepare(_spec({"source": "ref.csv", "target": "label", "exclude": ["id"]}, base=tmp_path))
    assert data.digest == ref.digest


def test_string_labels_become_sorted_classes(tmp_path: Path) -> None:
    _write_csv(tmp_path, "rows.csv", _table())
    data = prepare(_spec({"source": "rows.csv", "target": "label", "exclude": ["id"]}, base=tmp_path))
    assert data.task == "binary" and data.preprocessing.classes == ["no", "yes"]
    assert int(np.concatenate([data.y_train, data.y_val, data.y_test]).sum()) == 20  # type: ignore[list-item]


def test_three_string_labels_are_multiclass(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(30.0), "kind": ["cat", "dog", "ant"] * 10})
    _write_csv(tmp_path, "rows.csv", frame)
    data = prepare(_spec({"source": "rows.csv", "target": "kind"}, base=tmp_path))
    assert data.task == "multiclass" and data.n_classes == 3
    assert data.preprocessing.classes == ["ant", "cat", "dog"] and data.y_train.dtype == np.int32


def test_text_feature_is_one_hot_encoded(tmp_path: Path) -> None:
    _write_csv(tmp_path, "rows.csv", _table())
    data = prepare(_spec({"source": "rows.csv", "target": "label", "exclude": ["id"]}, base=tmp_path))
    pre = data.preprocessing
    assert pre.categories == {"color": ["blue", "green", "red"]}
    assert pre.feature_names == ["height", "weight", "color=blue", "color=green", "color=red"]
    raw = _all_rows(data) * np.asarray(pre.scale) + np.asarray(pre.mean)  # undo the scaling
    onehot = raw[:, 2:]
    np.testing.assert_allclose(onehot.sum(axis=1), 1.0, atol=1e-5)
    assert set(np.round(onehot, 5).ravel().tolist()) == {0.0, 1.0}


def test_exclude_drops_columns(tmp_path: Path) -> None:
    _write_csv(tmp_path, "rows.csv", _table())
    kept = prepare(_spec({"source": "rows.csv", "target": "label"}, base=tmp_path))
    dropped = prepare(_spec({"source": "rows.csv", "target": "label", "exclude": ["id", "color"]}, base=tmp_path))
    assert "id" in kept.preprocessing.input_columns
    assert dropped.preprocessing.input_columns == ["height", "weight"] and dropped.n_features == 2


# --------------------------------------------------------------------------- missing values


def _with_gaps(tmp_path: Path) -> Path:
    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) * 2, "y": [0, 1] * 20})
    frame.loc[[3, 17, 30], "b"] = np.nan
    return _write_csv(tmp_path, "gaps.csv", frame)


def test_missing_error_names_the_column(tmp_path: Path) -> None:
    _with_gaps(tmp_path)
    with pytest.raises(DataError, match=r"gaps\.csv: column 'b': 3 row\(s\) have missing values; allowed"):
        prepare(_spec({"source": "gaps.csv", "target": "y"}, base=tmp_path))


def test_missing_drop_removes_the_rows(tmp_path: Path) -> None:
    _with_gaps(tmp_path)
    data = prepare(_spec({"source": "gaps.csv", "target": "y", "missing": "drop"}, base=tmp_path))
    assert len(_all_rows(data)) == 37
    assert data.preprocessing.impute == {}


def test_missing_mean_imputes_the_training_mean(tmp_path: Path) -> None:
    path = _with_gaps(tmp_path)
    data = prepare(_spec({"source": "gaps.csv", "target": "y", "missing": "mean"}, base=tmp_path))
    pre = data.preprocessing
    assert set(pre.impute) == {"b"} and len(_all_rows(data)) == 40
    assert np.all(np.isfinite(_all_rows(data)))
    frame = pd.read_csv(path)
    train_a = np.round(data.x_train[:, 0] * pre.scale[0] + pre.mean[0]).astype(int)  # a is the row number
    assert pre.impute["b"] == pytest.approx(float(frame.loc[train_a, "b"].mean()))
    assert pre.impute["b"] != pytest.approx(float(frame["b"].mean()))  # not the mean over all rows


def test_missing_median_imputes_the_training_median(tmp_path: Path) -> None:
    path = _with_gaps(tmp_path)
    data = prepare(_spec({"source": "gaps.csv", "target": "y", "missing": "median"}, base=tmp_path))
    pre = data.preprocessing
    frame = pd.read_csv(path)
    train_a = np.round(data.x_train[:, 0] * pre.scale[0] + pre.mean[0]).astype(int)  # a is the row number
    assert pre.impute["b"] == float(frame.loc[train_a, "b"].median())


# --------------------------------------------------------------------------- Parquet


def test_parquet_reads_like_the_same_csv(tmp_path: Path) -> None:
    frame = _table()
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    _write_csv(tmp_path, "rows.csv", frame)
    from_parquet = prepare(_spec({"source": "rows.parquet", "target": "label", "exclude": ["id"]}, base=tmp_path))
    from_csv = prepare(_spec({"source": "rows.csv", "target": "label", "exclude": ["id"]}, base=tmp_path))
    assert from_parquet.digest == from_csv.digest
    assert from_parquet.preprocessing.feature_names == from_csv.preprocessing.feature_names
    assert from_parquet.source.endswith("rows.parquet")


# --------------------------------------------------------------------------- Preprocessing record


def test_transform_of_the_raw_rows_equals_the_prepared_arrays(tmp_path: Path) -> None:
    frame = _table(80)
    _write_csv(tmp_path, "rows.csv", frame)
    data = prepare(_spec({"source": "rows.csv", "target": "label", "exclude": ["id"]}, base=tmp_path))
    again = data.preprocessing.transform(pd.read_csv(tmp_path / "rows.csv"))
    assert again.dtype == np.float32 and again.shape == (80, data.n_features)
    np.testing.assert_allclose(_sorted_rows(again), _sorted_rows(_all_rows(data)), atol=1e-6)


def test_transform_of_builtin_rows_equals_the_prepared_arrays() -> None:
    from nnstudy.datasets import pass_fail_frame

    data = prepare(_spec({"source": "pass_fail", "n_samples": 120}))
    again = data.preprocessing.transform(pass_fail_frame(120, 0).drop(columns="passed"))
    np.testing.assert_allclose(_sorted_rows(again), _sorted_rows(_all_rows(data)), atol=1e-6)


def test_transform_fills_missing_values_with_the_imputed_value(tmp_path: Path) -> None:
    _with_gaps(tmp_path)
    pre = prepare(_spec({"source": "gaps.csv", "target": "y", "missing": "mean"}, base=tmp_path)).preprocessing
    x = pre.transform(pd.DataFrame({"a": [1.0, 1.0], "b": [np.nan, pre.impute["b"]]}))
    np.testing.assert_array_equal(x[0], x[1])


def test_transform_rejects_a_missing_input_column(tmp_path: Path) -> None:
    data = prepare(_spec({"source": "pass_fail", "n_samples": 60}))
    with pytest.raises(DataError, match=r"new\.csv: column 'hours': missing input column; allowed columns"):
        data.preprocessing.transform(pd.DataFrame({"lectures": [3]}), source="new.csv")


def test_transform_of_an_unseen_category_is_all_zeros(tmp_path: Path) -> None:
    _write_csv(tmp_path, "rows.csv", _table())
    pre = prepare(_spec({"source": "rows.csv", "target": "label", "exclude": ["id"]}, base=tmp_path)).preprocessing
    x = pre.transform(pd.DataFrame({"height": [170.0], "weight": [70.0], "color": ["purple"]}))
    onehot = x[0, 2:] * np.asarray(pre.scale[2:]) + np.asarray(pre.mean[2:])
    np.testing.assert_allclose(onehot, 0.0, atol=1e-6)


def test_preprocessing_json_round_trip(tmp_path: Path) -> None:
    _write_csv(tmp_path, "rows.csv", _table())
    pre = prepare(_spec({"source": "rows.csv", "target": "label", "exclude": ["id"]}, base=tmp_path)).preprocessing
    again = Preprocessing.from_json(pre.to_json())
    assert again == pre
    rows = pd.read_csv(tmp_path / "rows.csv").head(5)
    np.testing.assert_array_equal(again.transform(rows), pre.transform(rows))


def test_summary_describes_the_split() -> None:
    data = prepare(_spec({"source": "pass_fail", "n_samples": 100}))
    assert data.summary() == {"source": "pass_fail", "task": "binary", "n_features": 2, "n_classes": 1,
                              "train_rows": 60, "val_rows": 20, "test_rows": 20, "digest": data.digest}


# --------------------------------------------------------------------------- a few errors (the corpus has more)


def test_target_not_found_suggests_a_column(write_file: Callable[[str, str], Path], tmp_path: Path) -> None:
    write_file("rows.csv", "x,label\n1,a\n2,b\n")
    with pytest.raises(DataError, match=r"column 'lable': target column not found \(did you mean 'label'\?\)"):
        prepare(_spec({"source": "rows.csv", "target": "lable"}, base=tmp_path))


def test_too_few_rows_for_the_split(write_file: Callable[[str, str], Path], tmp_path: Path) -> None:
    write_file("rows.csv", "x,y\n1,0\n2,1\n3,0\n")
    with pytest.raises(DataError, match="3 rows are too few"):
        prepare(_spec({"source": "rows.csv", "target": "y"}, base=tmp_path))
