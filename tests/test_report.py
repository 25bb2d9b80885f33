"""write_report / trials_frame on a small real Optuna + MLflow study built without Keras."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import matplotlib
import optuna
import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from nnstudy import report as report_module
from nnstudy.report import (LEAD_COLUMNS, TAIL_COLUMNS, _importance_once, _Uncopied, read_curves, trials_frame,
                            write_report)

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "slice", "learning_curves")
EPOCHS = 20


def decay(n: int, start: float, floor: float, rate: float = 0.25) -> list[float]:
    return [floor + (start - floor) * math.exp(-rate * e) for e in range(n)]


def curves_for(number: int) -> tuple[list[float], list[float], str]:
    """Synthetic (loss, val_loss, expected diagnosis) per trial number."""
    if number == 1:  # val minimum at epoch 8, then 4 % a step up for 10 epochs (patience 10)
        val = decay(8, 1.0, 0.4)
        val += [val[-1] * (1 + 0.04 * k) for k in range(1, 11)]
        return decay(18, 1.0, 0.05), val, "overfitting"
    if number == 2:
        return [0.70 - 0.0004 * e for e in range(EPOCHS)], [0.71 - 0.0003 * e for e in range(EPOCHS)], "too-slow"
    if number == 3:
        return decay(EPOCHS, 0.8, 0.69, 0.8), decay(EPOCHS, 0.78, 0.69, 0.8), "underfitting"
    if number == 5:  # pruned after 5 epochs
        return decay(5, 1.0, 0.3), decay(5, 1.05, 0.35), "ok"
    shift = 0.02 * number
    return decay(EPOCHS, 1.0, 0.2 + shift), decay(EPOCHS, 1.05, 0.3 + shift), "ok"


EXPECTED = {n: curves_for(n)[2] for n in (0, 1, 2, 3, 5, 6)} | {4: "diverged"}


def make_study(tmp: Path, client: MlflowClient, n_trials: int = 7, params: tuple[str, ...] = ("learning_rate",
               "optimizer", "units")) -> optuna.Study:
    exp = client.create_experiment(f"exp-{tmp.name}-{len(params)}-{n_trials}",
                                   artifact_location=(tmp / "artifacts").as_uri())
    study = optuna.create_study(study_name="report-test", storage=f"sqlite:///{tmp}/optuna-{len(params)}-{n_trials}.db",
                                direction="minimize", sampler=optuna.samplers.RandomSampler(seed=1))

    def objective(trial: optuna.Trial) -> float:
        suggest: dict[str, Any] = {
            "learning_rate": lambda: trial.suggest_float("learning_rate", 1e-4, 1.0, log=True),
            "optimizer": lambda: trial.suggest_categorical("optimizer", ["adam", "sgd", "rmsprop"]),
            "units": lambda: trial.suggest_categorical("units", [8, 16, 32]),
        }
        for name in params:
            suggest[name]()
        run_id = client.create_run(exp, run_name=f"trial-{trial.number:04d}").info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr("seed", 1000 + trial.number)
        now = int(time.time() * 1000)
        if trial.number == 4:  # diverged: NaN at epoch 3 is never logged (the tracker drops it)
            client.log_batch(run_id, metrics=[Metric(k, v, now, e) for e, v in ((1, 1.0), (2, 5.0))
                                              for k in ("loss", "val_loss")])
            trial.set_user_attr("fail_reason", "diverged")
            trial.set_user_attr("diverged_at", 3)
            client.set_terminated(run_id, "FAILED")
            raise RuntimeError("diverged")
        loss, val, _ = curves_for(trial.number)
        client.log_batch(run_id, metrics=[Metric("loss", v, now, e) for e, v in enumerate(loss, 1)]
                         + [Metric("val_loss", v, now, e) for e, v in enumerate(val, 1)])
        best = val.index(min(val)) + 1
        trial.set_user_attr("best_epoch", best)
        trial.set_user_attr("stopped_epoch", len(loss))
        trial.set_user_attr("early_stopped", len(loss) < EPOCHS and trial.number != 5)
        trial.set_user_attr("duration_s", 0.5 + trial.number)
        if trial.number == 5:
            trial.report(val[-1], len(val))
            trial.set_user_attr("pruned_at", len(val))
            client.set_terminated(run_id, "KILLED")
            raise optuna.TrialPruned()
        client.set_terminated(run_id, "FINISHED")
        return min(val)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(objective, n_trials=n_trials, catch=(RuntimeError,))
    return study


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MlflowClient, optuna.Study]:
    tmp = tmp_path_factory.mktemp("report")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    study = make_study(tmp, client)
    study.enqueue_trial({"learning_rate": 0.01, "optimizer": "adam", "units": 8})  # stays WAITING
    return tmp, client, study


@pytest.fixture(scope="module")
def report(setup: tuple[Path, MlflowClient, optuna.Study]) -> tuple[Path, list[Path]]:
    tmp, client, study = setup
    out = tmp / "report"
    return out, write_report(study, out, client=client, metric="val_loss", top=5)


def test_all_files_are_written_and_non_empty(report: tuple[Path, list[Path]]) -> None:
    out, paths = report
    expected = {"trials.csv", "best_params.json", "plotly.min.js", *(f"{p}.{ext}" for p in PLOTS for ext in ("html", "png"))}
    assert {p.name for p in paths} == expected
    assert {p.name for p in out.iterdir()} == expected
    for path in paths:
        assert path.stat().st_size > 0, path
    for name in PLOTS:
        assert (out / f"{name}.png").read_bytes().startswith(PNG)
        html = (out / f"{name}.html").read_text(encoding="utf-8")
        assert '<script charset="utf-8" src="plotly.min.js">' in html  # works offline
        assert "cdn.plot.ly" not in html


def test_learning_curves_show_the_diagnosis_of_the_top_trials(report: tuple[Path, list[Path]]) -> None:
    out, _ = report
    html = (out / "learning_curves.html").read_text(encoding="utf-8")
    for number in (0, 1, 2, 3, 6):  # the 5 complete trials
        assert f"trial {number}: val_loss=" in html
    for label in ("overfitting", "too-slow", "underfitting", "best epoch 8", "early stop at epoch 18"):
        assert label in html
    assert "trial 5:" not in html  # pruned: not among the complete trials


def test_trials_csv_has_one_row_per_trial(report: tuple[Path, list[Path]], setup: tuple[Path, MlflowClient,
                                                                                         optuna.Study]) -> None:
    out, _ = report
    study = setup[2]
    frame = pd.read_csv(out / "trials.csv")
    assert list(frame.columns) == [*LEAD_COLUMNS, "learning_rate", "optimizer", "units", *TAIL_COLUMNS]
    assert list(frame["number"]) == [t.number for t in study.trials]
    states = dict(zip(frame["number"], frame["state"]))
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "COMPLETE", 4: "FAIL", 5: "PRUNED",
                      6: "COMPLETE", 7: "WAITING"}
    labels = {n: d for n, d in zip(frame["number"], frame["diagnosis"]) if isinstance(d, str)}
    assert labels == EXPECTED
    row = frame.set_index("number").loc[1]
    assert (row["best_epoch"], row["stopped_epoch"], row["duration_s"]) == (8, 18, 1.5)
    assert row["mlflow_run_id"] == study.trials[1].user_attrs["mlflow_run_id"]
    assert frame.set_index("number").loc[4, "fail_reason"] == "diverged"


def test_best_params_json_matches_the_best_trial(report: tuple[Path, list[Path]],
                                                setup: tuple[Path, MlflowClient, optuna.Study]) -> None:
    out, _ = report
    best = setup[2].best_trial
    info = json.loads((out / "best_params.json").read_text(encoding="utf-8"))
    assert info["trial"] == best.number
    assert info["value"] == pytest.approx(best.value)
    assert info["params"] == best.params
    assert info["mlflow_run_id"] == best.user_attrs["mlflow_run_id"]
    assert info["direction"] == "minimize"


def test_trials_frame_without_client_only_knows_divergence(setup: tuple[Path, MlflowClient, optuna.Study]) -> None:
    frame = trials_frame(setup[2])
    assert len(frame) == len(setup[2].trials)
    assert {n: d for n, d in zip(frame["number"], frame["diagnosis"]) if isinstance(d, str)} == {4: "diverged"}


def test_trials_frame_with_client_matches_the_csv(setup: tuple[Path, MlflowClient, optuna.Study]) -> None:
    frame = trials_frame(setup[2], setup[1])
    assert {n: d for n, d in zip(frame["number"], frame["diagnosis"]) if not pd.isna(d)} == EXPECTED
    assert frame.loc[frame["number"] == 7, "diagnosis"].isna().all()  # WAITING: not diagnosed


def test_trials_frame_opens_mlflow_only_when_a_trial_needs_its_curves(
        setup: tuple[Path, MlflowClient, optuna.Study]) -> None:
    opened: list[int] = []

    def connect() -> MlflowClient:
        opened.append(1)
        return setup[1]

    frame = trials_frame(setup[2], connect=connect)  # no trial recorded its diagnosis: read once, one client
    assert {n: d for n, d in zip(frame["number"], frame["diagnosis"]) if not pd.isna(d)} == EXPECTED
    assert opened == [1]
    recorded = optuna.create_study()
    recorded.add_trial(optuna.trial.create_trial(value=0.3, user_attrs={"diagnosis": "ok", "mlflow_run_id": "r"}))
    assert trials_frame(recorded, connect=connect)["diagnosis"].tolist() == ["ok"]
    assert opened == [1]  # every trial recorded its diagnosis: MLflow is never opened


def test_the_report_reads_the_trials_without_copying_them(setup: tuple[Path, MlflowClient, optuna.Study]) -> None:
    study = setup[2]
    view = _Uncopied(study)
    assert [t.number for t in view.trials] == [t.number for t in study.trials]
    assert view.trials[0] is view.trials[0] is view.get_trials(deepcopy=True)[0]  # Optuna's plots ask again and again
    assert view.best_trial.number == study.best_trial.number and view.user_attrs == study.user_attrs


def test_importances_rank_the_parameter_that_decides_the_value_first() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1.0, log=True) + 0.01 * t.suggest_float("dropout", 0, 0.5)
                   + 0.001 * t.suggest_int("depth", 0, 3), n_trials=80)
    importances = _importance_once().evaluate(study)
    assert max(importances, key=importances.__getitem__) == "lr" and importances["lr"] > 0.9


def test_read_curves_marks_unlogged_epochs_as_nan(setup: tuple[Path, MlflowClient, optuna.Study]) -> None:
    _, client, study = setup
    run_id = client.create_run(client.get_run(study.trials[0].user_attrs["mlflow_run_id"]).info.experiment_id).info.run_id
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric("loss", v, now, e) for e, v in ((1, 1.0), (2, 0.5), (4, 0.2))])
    loss, val = read_curves(client, run_id)
    assert loss[:2] == [1.0, 0.5] and math.isnan(loss[2]) and loss[3] == 0.2
    assert val == []


def test_matplotlib_style_is_left_alone(setup: tuple[Path, MlflowClient, optuna.Study], tmp_path: Path) -> None:
    _, client, _ = setup
    before = dict(matplotlib.rcParams)
    tiny = make_study(tmp_path, client, n_trials=2)
    write_report(tiny, tmp_path / "r", client=client, metric="val_loss")
    assert matplotlib.get_backend().lower() == "agg"
    assert matplotlib.rcParams["axes.facecolor"] == before["axes.facecolor"]


def test_one_searched_parameter_skips_importances(tmp_path: Path,
                                                  setup: tuple[Path, MlflowClient, optuna.Study]) -> None:
    client = setup[1]
    study = make_study(tmp_path, client, n_trials=3, params=("learning_rate",))
    paths = write_report(study, tmp_path / "r", client=client, metric="val_loss", top=2)
    names = {p.name for p in paths}
    assert "param_importances.skipped.txt" in names
    assert "param_importances.png" not in names
    assert {"slice.png", "learning_curves.png", "trials.csv", "best_params.json"} <= names
    assert "2 parameters" in (tmp_path / "r" / "param_importances.skipped.txt").read_text()


def test_empty_study_writes_notes_not_plots(tmp_path: Path, setup: tuple[Path, MlflowClient, optuna.Study]) -> None:
    study = optuna.create_study(direction="maximize")
    paths = write_report(study, tmp_path / "r", client=setup[1], metric="val_accuracy")
    assert {p.name for p in paths} == {"trials.csv", "best_params.skipped.txt",
                                      *(f"{p}.skipped.txt" for p in PLOTS)}
    assert list(pd.read_csv(tmp_path / "r" / "trials.csv").columns) == [*LEAD_COLUMNS, *TAIL_COLUMNS]


def test_parallel_coordinates_of_a_long_study_draw_its_best_trials_and_say_so(
        setup: tuple[Path, MlflowClient, optuna.Study], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, client, study = setup
    complete = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    monkeypatch.setattr(report_module, "PARALLEL_MAX_TRIALS", 3)
    view, title = report_module._parallel_view(_Uncopied(study), complete)
    assert title == f"Parallel Coordinate Plot (the best 3 of {len(complete)} complete trials)"
    assert [t.number for t in view.get_trials(states=(optuna.trial.TrialState.COMPLETE,))] == \
        sorted(t.number for t in complete[:3])
    assert view.best_trial.number == study.best_trial.number
    write_report(study, tmp_path / "r", client=client, metric="val_loss")
    assert title in (tmp_path / "r" / "parallel_coordinate.html").read_text(encoding="utf-8")
    assert (tmp_path / "r" / "parallel_coordinate.png").read_bytes().startswith(PNG)
    assert len(pd.read_csv(tmp_path / "r" / "trials.csv")) == len(study.trials)  # the table keeps every trial
    monkeypatch.setattr(report_module, "PARALLEL_MAX_TRIALS", len(complete))
    assert report_module._parallel_view(study, complete) == (study, None)  # few trials: all drawn, Optuna's title
