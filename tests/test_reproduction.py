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


REUSED_SPEC = """
[study]
name = "reused"
n_trials = 3
pruner = "none"
seed = 4

[data]
source = "pass_fail"
n_samples = 300

[train]
max_epochs = 4

[search]
learning_rate = { low = 1e-3, high = 5e-2, log = true }
optimizer = "adagrad"
dropout = { low = 0.1, high = 0.5 }
depth = 2
units = 8
batch_size = 16
"""


def test_a_trial_trained_on_a_reused_compiled_model_reproduces_exactly_in_a_fresh_process(tmp_path: Path) -> None:
    """Every trial after the first trains the first one's traced model (only the learning and dropout rates
    differ); ``nnstudy reproduce`` of the last, in a new process that traces anew, draws its curve exactly."""
    import subprocess
    import sys

    (tmp_path / "reused.toml").write_text(REUSED_SPEC)
    stores = ["--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    nnstudy = [str(Path(sys.executable).parent / "nnstudy")]
    done = subprocess.run([*nnstudy, "run", "reused.toml", "--no-progress", *stores], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    study = optuna.load_study(study_name="reused", storage=f"sqlite:///{tmp_path}/optuna.db")
    tags = [client.get_run(t.user_attrs["mlflow_run_id"]).data.tags for t in study.trials]
    assert [t.get("nnstudy.reused_compiled") for t in tags] == ["false", "true", "true"]
    done = subprocess.run([*nnstudy, "reproduce", "--study-name", "reused", "--trial", "2", *stores], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "max abs difference of val_loss: 0.0" in done.stdout
    new = client.get_run(client.get_run(study.trials[2].user_attrs["mlflow_run_id"]).data.tags["nnstudy.reproduced_by"])
    assert new.data.tags.get("nnstudy.reused_compiled") == "false"  # a fresh process: traced anew
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        curves = [sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
                  for run_id in (study.trials[2].user_attrs["mlflow_run_id"], new.info.run_id)]
        assert curves[0] == curves[1] and len(curves[0]) == 4
