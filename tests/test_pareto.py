"""Studies of several objectives: dominance and the Pareto front on real Optuna studies, and one real
digits study through the CLI whose front shows in the parent run, the report, `best` and `register`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from nnstudy.cli import cli
from nnstudy.pareto import (
    best_trials,
    dominates,
    first_value,
    front,
    front_rows,
    front_text,
    is_multi,
    objective_names,
    on_front,
    sort_key,
)

DIST = {"x": optuna.distributions.FloatDistribution(0.0, 10.0)}


def _study(directions: list[str], values: list[list[float] | None]) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    for i, v in enumerate(values):
        state = optuna.trial.TrialState.COMPLETE if v is not None else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(state=state, values=v, params={"x": float(i)}, distributions=DIST))
    return study


def test_dominance_follows_each_objectives_direction() -> None:
    assert dominates([1.0, 10.0], [2.0, 10.0], ["minimize", "minimize"])
    assert not dominates([1.0, 10.0], [1.0, 10.0], ["minimize", "minimize"])  # equal: neither dominates
    assert not dominates([1.0, 20.0], [2.0, 10.0], ["minimize", "minimize"])  # a trade-off
    assert dominates([0.9, 10.0], [0.8, 10.0], ["maximize", "minimize"])
    assert on_front([1.0, 5.0], [[1.0, 5.0], [2.0, 1.0]], ["minimize", "minimize"])
    assert not on_front([3.0, 5.0], [[1.0, 5.0]], ["minimize", "minimize"])
    assert not on_front([float("nan"), 5.0], [], ["minimize", "minimize"])


def test_front_is_optunas_pareto_front_best_first() -> None:
    values = [[0.5, 3000.0], [0.3, 9000.0], [0.6, 3000.0], None, [0.9, 600.0], [0.5, 3000.0], [0.95, 900.0]]
    study = _study(["minimize", "minimize"], values)
    found = front(study)
    assert {t.number for t in found} == {t.number for t in study.best_trials} == {0, 1, 4, 5}
    assert [t.number for t in found] == [1, 0, 5, 4]  # by val_loss, then trial number
    assert best_trials(study) == found and is_multi(study)
    assert front_text(found) == "0,1,4,5" and front_text(found, limit=6) == "0,..."
    assert [first_value(t) for t in sorted(study.trials, key=sort_key(study))][:2] == [0.3, 0.5]


def test_a_maximized_metric_with_a_minimized_measure() -> None:
    study = _study(["maximize", "minimize"], [[0.9, 5000.0], [0.8, 1000.0], [0.7, 2000.0]])
    assert [t.number for t in front(study)] == [0, 1]


def test_one_objective_best_trials_is_the_best_trial() -> None:
    study = optuna.create_study(direction="maximize")
    assert best_trials(study) == [] and not is_multi(study)
    for v in (0.5, 0.9, 0.7):
        study.add_trial(optuna.trial.create_trial(value=v, params={"x": v}, distributions=DIST))
    assert [t.number for t in best_trials(study)] == [1]
    assert objective_names(study, "val_accuracy") == ["val_accuracy"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_objective_names_come_from_the_study() -> None:
    study = _study(["minimize", "minimize"], [[0.4, 100.0]])
    assert objective_names(study, "val_loss") == ["val_loss", "objective_1"]  # names never set
    study.set_metric_names(["val_loss", "latency_ms"])
    assert objective_names(study, "ignored") == ["val_loss", "latency_ms"]
    rows = front_rows(study, front(study), ["val_loss", "latency_ms"])
    assert rows == [{"trial": 0, "val_loss": 0.4, "latency_ms": 100.0, "best_epoch": None, "mlflow_run_id": None,
                     "model_uri": None, "x": 0.0}]


# --------------------------------------------------------------------------- end to end (real training)

#: four configurations, enqueued: more units, lower val_loss after 3 epochs on digits -- and the last one,
#: as big as the largest with a learning rate far too small, is beaten by a smaller model
ENQUEUED = [{"units": 4, "learning_rate": 0.01}, {"units": 16, "learning_rate": 0.01},
            {"units": 64, "learning_rate": 0.01}, {"units": 64, "learning_rate": 0.0001}]


@pytest.mark.slow
def test_a_digits_study_of_val_loss_and_n_params_shows_its_front(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, e2e_spec: Callable[..., Path]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = e2e_spec("digits-pareto", study={"objectives": ["val_loss", "n_params"], "n_trials": 4,
                                            "sampler": "nsga2"},
                    data={"source": "digits"}, train={"max_epochs": 3},
                    search={"learning_rate": [0.0001, 0.01], "units": [4, 16, 64], "depth": 1,
                            "optimizer": "adam", "batch_size": 32})
    # (the shared E2E spec has no pruner; a pruner named with several objectives is refused: test_spec)
    enqueue = tmp_path / "enqueue.json"
    enqueue.write_text(json.dumps(ENQUEUED))
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(spec), "--no-progress", "--enqueue", str(enqueue)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Pareto front of val_loss, n_params: trials 2, 1, 0" in result.output

    study = optuna.load_study(study_name="digits-pareto", storage="sqlite:///mlruns/optuna.db")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_loss", "n_params"]
    trials = study.get_trials()
    assert [t.params["units"] for t in trials] == [4, 16, 64, 64]
    assert all(t.state.name == "COMPLETE" and t.user_attrs["latency_ms"] > 0 for t in trials)
    assert [t.values[1] for t in trials] == [t.user_attrs["n_params"] for t in trials]
    assert {t.number for t in study.best_trials} == {0, 1, 2}  # trial 3 is beaten by trial 1 (or 0, 2)

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags["nnstudy.pareto_trials"] == "0,1,2"
    assert parent.data.tags["nnstudy.objectives"] == "val_loss,n_params"
    assert parent.data.params["objectives"] == "val_loss,n_params" and parent.data.params["pruner"] == "none"
    assert "nnstudy.best_run_id" not in parent.data.tags
    note = parent.data.tags["mlflow.note.content"]
    for t in trials[:3]:
        assert f"[{t.number}](#/experiments/{parent.info.experiment_id}/runs/{t.user_attrs['mlflow_run_id']})" in note
    table = Path(client.download_artifacts(parent.info.run_id, "pareto/front.csv", str(tmp_path)))
    lines = table.read_text().splitlines()
    assert lines[0].startswith("trial,val_loss,n_params,best_epoch,mlflow_run_id,model_uri")
    assert [line.split(",")[0] for line in lines[1:]] == ["2", "1", "0"]
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/pareto_front.html", "report/pareto_front.png", "report/pareto_front.svg",
            "report/pareto_front.csv"} <= report
    for t in trials:  # n_params and latency_ms on every trial's run
        metrics = client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        assert metrics["n_params"] == t.values[1] and metrics["latency_ms"] > 0
    # keep_models = "best": the trials on the front when they ended keep their models; trial 3 never was
    assert [bool(t.user_attrs.get("model_uri")) for t in trials] == [True, True, True, False]

    out = runner.invoke(cli, ["best"]).output
    assert "Pareto front of 3 trial(s), val_loss (minimize), n_params (minimize)" in out
    best = json.loads(runner.invoke(cli, ["best", "--format", "json"]).output)
    assert [t["trial"] for t in best["front"]] == [2, 1, 0]
    assert best["front"][0]["values"]["n_params"] == trials[2].values[1]

    # the report on the parent run (what `nnstudy report` writes too): every point linked to its run
    svg = Path(client.download_artifacts(parent.info.run_id, "report/pareto_front.svg", str(tmp_path))).read_text()
    html = Path(client.download_artifacts(parent.info.run_id, "report/pareto_front.html", str(tmp_path))).read_text()
    for t in trials:
        link = f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs/{t.user_attrs['mlflow_run_id']}"
        assert link in svg  # every point links to its run
        assert link.replace("/", "\\u002f") in html  # a click on any point opens its run (plotly escapes '/')
    assert html.count('<a href="http://127.0.0.1:5000/#/experiments/') == 3  # the table below lists the front
    assert "plotly_click" in html

    no_trial = runner.invoke(cli, ["register", "--name", "digits-small"])
    assert no_trial.exit_code == 2 and "--trial N, a trial of its Pareto front: 2, 1, 0" in no_trial.output
    registered = runner.invoke(cli, ["register", "--name", "digits-small", "--trial", "0"])
    assert registered.exit_code == 0, registered.output
    assert "registered trial 0 of study 'digits-pareto'" in registered.output
