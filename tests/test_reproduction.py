"""End-to-end on one tiny study: best, reproduce (exact on CPU), predict with the saved best model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from nnstudy.cli import cli

pytestmark = pytest.mark.slow

SPEC = """
[study]
name = "survey"
metric = "val_loss"
n_trials = 3
pruner = "none"
seed = 11

[data]
source = "{csv}"
target = "result"
exclude = ["student_id"]

[train]
max_epochs = 8
early_stopping_patience = 3

[search]
learning_rate = {{ low = 1e-3, high = 5e-2, log = true }}
optimizer = ["adam", "rmsprop"]
dropout = [0.0, 0.2]
depth = 1
units = [8, 16]
"""


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("survey")
    csv = Path(__file__).parents[1] / "studies" / "data" / "course_survey.csv"
    (root / "survey.toml").write_text(SPEC.format(csv=csv.as_posix()))
    old = os.getcwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(cli, ["run", "survey.toml", "--no-progress"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    finally:
        os.chdir(old)
    return root


def _invoke(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_best_prints_the_best_trial_and_how_to_reproduce(study_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _invoke(study_dir, monkeypatch, "best")
    assert code == 0, out
    study = optuna.load_study(study_name="survey", storage="sqlite:///mlruns/optuna.db")
    body, _, command = out.rpartition("reproduce: ")
    info = json.loads(body)
    assert info["trial"] == study.best_trial.number and info["value"] == study.best_value
    assert info["mlflow_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    assert command.strip() == f"nnstudy reproduce --study-name survey --trial {study.best_trial.number}"


def test_reproduce_gives_the_same_curve_and_links_runs(study_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _invoke(study_dir, monkeypatch, "reproduce", "--trial", "2")
    assert code == 0, out
    assert "max abs difference of val_loss: 0.0" in out
    client = MlflowClient(f"sqlite:///{Path.cwd()}/mlruns/mlflow.db")
    study = optuna.load_study(study_name="survey", storage="sqlite:///mlruns/optuna.db")
    original_id = study.trials[2].user_attrs["mlflow_run_id"]
    original = client.get_run(original_id)
    new_id = original.data.tags["nnstudy.reproduced_by"]
    new = client.get_run(new_id)
    assert new.data.tags["nnstudy.reproduction_of"] == original_id
    assert new.info.status == "FINISHED"
    assert [m.value for m in sorted(client.get_metric_history(new_id, "val_loss"), key=lambda m: m.step)] == \
        [m.value for m in sorted(client.get_metric_history(original_id, "val_loss"), key=lambda m: m.step)]


def test_tolerance_check_and_default_trial_is_the_best(study_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnstudy.records import load_records
    from nnstudy.reproduction import Reproduction

    monkeypatch.chdir(study_dir)
    records = load_records("survey")
    rep = Reproduction(0, "a", "b", "val_loss", {1: 0.5, 2: 0.4}, {1: 0.5, 2: 0.41}, max_abs_diff=0.01)
    assert not rep.within(0.0) and rep.within(0.02)
    assert records.trial().number == records.study.best_trial.number


def test_predict_gives_original_labels_from_raw_csv(study_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = pd.read_csv(Path(__file__).parents[1] / "studies" / "data" / "course_survey.csv").head(25)
    raw.drop(columns=["result"]).to_csv(study_dir / "new_students.csv", index=False)
    code, out = _invoke(study_dir, monkeypatch, "predict", "--input", "new_students.csv", "--output", "pred.csv")
    assert code == 0, out
    predictions = pd.read_csv(study_dir / "pred.csv")
    assert len(predictions) == 25
    assert set(predictions["prediction"]) <= {"pass", "fail"}
    assert predictions["p(pass)"].between(0, 1).all()


def test_predict_rejects_missing_columns(study_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pd.DataFrame({"lectures_attended": [3]}).to_csv(study_dir / "bad.csv", index=False)
    code, out = _invoke(study_dir, monkeypatch, "predict", "--input", "bad.csv")
    assert code == 2
    assert "project_hours" in out and "Traceback" not in out
