"""A trial's model as an MLflow Model: pyfunc predictions equal nnstudy's, the signature is the raw
columns, nothing is pickled, the Keras file loads in safe mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from nnstudy.contract import ATTR_MODEL_LOGGED, ATTR_MODEL_URI
from nnstudy.data import PreparedData, prepare
from nnstudy.datasets import pass_fail_frame
from nnstudy.export import Bundle
from nnstudy.mlflow_model import log_model, model_keeper, requirements, trial_bundle
from nnstudy.model import build_model
from nnstudy.spec import StudySpec
from nnstudy.tracking import Tracker
from nnstudy.training import TrainResult


@pytest.fixture
def labelled(tiny_spec: Callable[..., StudySpec], tmp_path: Path) -> PreparedData:
    """The course data with text labels and a text column: what the signature and labels must keep."""
    frame = pass_fail_frame(150, 3)
    frame["passed"] = frame["passed"].map({0: "fail", 1: "pass"})
    frame["term"] = np.where(frame.index % 2 == 0, "spring", "autumn")
    frame.to_csv(tmp_path / "course.csv", index=False)
    return prepare(tiny_spec(data={"source": str(tmp_path / "course.csv"), "target": "passed"}))


@pytest.fixture(autouse=True)
def _default_store(tracker: Tracker) -> Iterator[None]:
    """MLflow's fluent calls (load_model, models:/ URIs) on the test's store, never on ./mlflow.db."""
    mlflow.set_tracking_uri(tracker.client.tracking_uri)
    yield
    mlflow.set_tracking_uri(None)


def _mlp(data: PreparedData) -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model({"depth": 1, "units": 8, "activation": "relu", "dropout": 0.0}, n_features=data.n_features,
                       task=data.task, n_classes=data.n_classes, target_mean=data.target_mean)


def _log(tracker: Tracker, data: PreparedData, model: keras.Model) -> str:
    run_id = tracker.create_child_run(tracker.experiment("m"), None, "m", 0, params={}, tags={})
    return log_model(tracker, run_id, model, data.preprocessing, {"study": "m", "trial": 0}, data.example)


def test_pyfunc_predicts_the_original_labels_like_nnstudy(labelled: PreparedData, tracker: Tracker,
                                                          tmp_path: Path) -> None:
    model = _mlp(labelled)
    uri = _log(tracker, labelled, model)
    assert uri.startswith("models:/")
    rows = pd.read_csv(tmp_path / "course.csv").drop(columns="passed").tail(20)
    served = mlflow.pyfunc.load_model(uri).predict(rows)
    info = mlflow.models.get_model_info(uri)
    expected = Bundle(model, labelled.preprocessing, {}).predict(rows)
    pd.testing.assert_frame_equal(served.reset_index(drop=True), expected.reset_index(drop=True))
    assert set(served["prediction"]) <= {"fail", "pass"} and list(served.columns) == ["prediction", "p(pass)"]
    assert info.signature.inputs.input_names() == ["lectures", "hours", "term"]
    assert [spec.to_dict()["type"] for spec in info.signature.inputs.inputs] == ["any", "any", "string"]
    assert info.signature.outputs.input_names() == ["prediction", "p(pass)"]
    # the same model as nnstudy's predict downloads it
    again = trial_bundle(tracker.client, "unused", uri, tmp_path / "down").predict(rows)
    pd.testing.assert_frame_equal(again, expected)


def test_numbers_of_any_kind_predict_as_nnstudy_predict_does(labelled: PreparedData, tracker: Tracker) -> None:
    model = _mlp(labelled)
    loaded = mlflow.pyfunc.load_model(_log(tracker, labelled, model))
    bundle = Bundle(model, labelled.preprocessing, {})
    for lectures, hours in (([20, 3], [12, 1]), ([20.5, 3.0], [12.5, 1.0]), ([20, 3], [12.5, 1.0])):
        rows = pd.DataFrame({"lectures": lectures, "hours": hours, "term": ["spring", "autumn"]})
        pd.testing.assert_frame_equal(loaded.predict(rows), bundle.predict(rows))
    with pytest.raises(MlflowException, match="lectures") as refused:  # nnstudy's check, as MLflow's bad input
        loaded.predict(pd.DataFrame({"lectures": ["many"], "hours": [2.0], "term": ["spring"]}))
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"


def test_nothing_is_pickled_and_the_keras_file_loads_in_safe_mode(labelled: PreparedData, tracker: Tracker,
                                                                  tmp_path: Path) -> None:
    uri = _log(tracker, labelled, _mlp(labelled))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "m")))
    files = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    assert "artifacts/bundle/model.keras" in files and "code/nnstudy/pyfunc_model.py" in files
    assert not [f for f in files if "__pycache__" in f]
    keras.saving.load_model(local / "artifacts/bundle/model.keras", safe_mode=True)
    mlmodel = (local / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel and "python_model.pkl" not in mlmodel
    requirements_txt = (local / "requirements.txt").read_text()
    assert f"keras=={keras.__version__}" in requirements_txt and f"mlflow=={mlflow.__version__}" in requirements_txt


def test_missing_column_is_refused_by_the_signature(labelled: PreparedData, tracker: Tracker) -> None:
    uri = _log(tracker, labelled, _mlp(labelled))
    with pytest.raises(MlflowException, match="hours"):
        mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"lectures": [3], "term": ["spring"]}))


def test_array_model_takes_raw_images(tiny_spec: Callable[..., StudySpec], tracker: Tracker) -> None:
    data = prepare(tiny_spec(data={"source": "digits_images"}))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(data.input_shape), keras.layers.Flatten(),
                              keras.layers.Dense(data.n_classes, activation="softmax")])
    uri = _log(tracker, data, model)
    assert isinstance(data.example, np.ndarray)
    raw = np.asarray(data.example)
    served = mlflow.pyfunc.load_model(uri).predict(raw)
    pd.testing.assert_frame_equal(served, Bundle(model, data.preprocessing, {}).predict(raw))


def test_requirements_pin_what_is_installed() -> None:
    pinned = requirements()
    assert f"keras=={keras.__version__}" in pinned and f"mlflow=={mlflow.__version__}" in pinned
    assert all("==" in r for r in pinned if not r.startswith("psycopg"))


@pytest.mark.parametrize(("keep", "logged"), [("best", [True, False, True]), ("all", [True, True, True]),
                                              ("none", [False, False, False])])
def test_model_keeper_logs_the_models_keep_models_asks_for(tiny_spec: Callable[..., StudySpec], tracker: Tracker,
                                                           labelled: PreparedData, keep: str,
                                                           logged: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.models.utils

    checked = []
    check = mlflow.models.utils._validate_serving_input
    monkeypatch.setattr(mlflow.models.utils, "_validate_serving_input",
                        lambda *args, **kwargs: checked.append(check(*args, **kwargs)))
    spec = tiny_spec(study={"keep_models": keep})
    study = optuna.create_study(direction=spec.direction)
    keeper = model_keeper(spec, study, tracker, labelled)
    model = _mlp(labelled)
    experiment = tracker.experiment("keep")
    got, uris = [], []
    for number, value in enumerate((0.5, 0.6, 0.4)):  # a first, a worse, a better one
        trial = optuna.trial.FixedTrial({}, number=number)
        run_id = tracker.create_child_run(experiment, None, "keep", number, params={}, tags={})
        result = TrainResult(history={"val_loss": [value]}, best_epoch=1, stopped_epoch=1, early_stopped=False,
                             diverged_at=None, stopped_by_hook=None, model=model, duration_s=0.0)
        keeper(trial, run_id, result)
        models = tracker.client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
        got.append(len(models) == 1)
        assert trial.user_attrs.get(ATTR_MODEL_LOGGED, False) == got[-1]
        assert trial.user_attrs.get(ATTR_MODEL_URI) == (f"models:/{models[0].model_id}" if got[-1] else None)
        study.add_trial(optuna.trial.create_trial(value=value))
        uris.extend([trial.user_attrs[ATTR_MODEL_URI]] if got[-1] else [])
    assert got == logged
    assert len(checked) == min(1, sum(logged))  # MLflow's serving-input check: the first model only
    # every model has its signature and predicts as
    # nnstudy does (the signature is the first model's, inferred once: the same columns in and out)
    infos = [mlflow.models.get_model_info(uri) for uri in uris]
    assert all(info.signature == infos[0].signature and info.signature is not None for info in infos)
    expected = Bundle(model, labelled.preprocessing, {}).predict(labelled.example)
    for uri in uris:
        pd.testing.assert_frame_equal(mlflow.pyfunc.load_model(uri).predict(labelled.example).reset_index(drop=True),
                                      expected.reset_index(drop=True))

