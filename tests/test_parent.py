"""The study's MLflow parent run: made once with the study files, the best trial written on it, ended last."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from nnstudy.contract import (
    ATTR_RUN_ID,
    STUDY_EXPERIMENT,
    STUDY_PARENT_RUN,
    TAG_BEST_RUN,
    TAG_BEST_TRIAL,
    TAG_OPTUNA_STORAGE,
    study_run_id_key,
)
from nnstudy.data import prepare
from nnstudy.parent import (
    study_note,
    _wait_for_parent,
    finish_parent,
    log_report,
    open_parent,
    update_parent_run,
)
from nnstudy.spec import parse_spec
from nnstudy.store import Store
from nnstudy.tracking import Tracker

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")


def _artifacts(tracker: Tracker, run_id: str, path: str) -> list[str]:
    return sorted(Path(f.path).name for f in tracker.client.list_artifacts(run_id, path))


def test_open_parent_records_the_study_files_and_attributes(recorded_study: Callable[..., Any],
                                                            tmp_path: Path) -> None:
    rs = recorded_study()
    assert rs.study.user_attrs[STUDY_PARENT_RUN] == rs.parent_id
    assert rs.study.user_attrs[STUDY_EXPERIMENT] == rs.experiment_id
    assert _artifacts(rs.tracker, rs.parent_id, "study") == ["data.json", "preprocessing.json", "spec.json"]
    spec_file = rs.tracker.client.download_artifacts(rs.parent_id, "study/spec.json", str(tmp_path))
    assert parse_spec(json.loads(Path(spec_file).read_text())).to_dict() == rs.spec.to_dict()
    data_file = rs.tracker.client.download_artifacts(rs.parent_id, "study/data.json", str(tmp_path))
    assert json.loads(Path(data_file).read_text()) == prepare(rs.spec).summary()
    run = rs.tracker.client.get_run(rs.parent_id)
    assert run.data.params["sampler"] == rs.spec.study.sampler and run.data.params["seed"] == str(rs.spec.study.seed)
    assert run.data.tags[TAG_OPTUNA_STORAGE] == rs.storage


def test_open_parent_again_keeps_the_one_parent(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    store = Store(rs.storage, rs.tracking_uri, rs.tracker.artifact_root)
    again = open_parent(rs.spec, store, rs.study, created=False, tracker=rs.tracker, experiment_id=rs.experiment_id,
                        data=prepare(rs.spec), env={})
    assert again == rs.parent_id
    parents = rs.tracker.client.search_runs([rs.experiment_id], "tags.`nnstudy.role` = 'study'")
    assert [r.info.run_id for r in parents] == [rs.parent_id]


def test_waiting_for_the_parent_of_another_process(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    assert _wait_for_parent(rs.study, timeout_s=1.0) == rs.parent_id
    empty = optuna.create_study(storage=rs.study._storage, study_name="nobody-made-a-parent")
    assert _wait_for_parent(empty, timeout_s=0.6) is None


def test_update_parent_run_writes_the_best_trial(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    first = rs.add(0.5, {"learning_rate": 0.01, "optimizer": "adam"})
    update_parent_run(rs.tracker, rs.parent_id, rs.study.best_trial, rs.study.user_attrs)
    second = rs.add(0.3, {"learning_rate": 0.002, "optimizer": "sgd"})
    update_parent_run(rs.tracker, rs.parent_id, rs.study.best_trial, rs.study.user_attrs)
    run = rs.tracker.client.get_run(rs.parent_id)
    assert run.data.tags[TAG_BEST_RUN] == second.user_attrs[ATTR_RUN_ID] != first.user_attrs[ATTR_RUN_ID]
    assert run.data.tags[TAG_BEST_TRIAL] == str(second.number)
    assert run.data.tags["best.learning_rate"] == "0.002" and run.data.tags["best.optimizer"] == "sgd"
    history = rs.tracker.client.get_metric_history(rs.parent_id, "best_value")
    assert sorted(m.value for m in history) == [0.3, 0.5]  # one point per call: the optimization history


def test_update_parent_run_links_a_synced_run(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    trial = rs.add(0.4, {"learning_rate": 0.01, "optimizer": "adam"}, run=False)
    rs.study.set_user_attr(study_run_id_key(trial.number), "synced-run")
    update_parent_run(rs.tracker, rs.parent_id, rs.study.best_trial, rs.study.user_attrs)
    assert rs.tracker.client.get_run(rs.parent_id).data.tags[TAG_BEST_RUN] == "synced-run"


def test_finish_parent_waits_for_running_trials(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    running = rs.study.ask()
    finish_parent(rs.study, rs.tracker, rs.parent_id, "val_loss")
    assert rs.tracker.run_status(rs.parent_id) == "RUNNING"  # another process still runs a trial
    assert _artifacts(rs.tracker, rs.parent_id, "report")  # the report so far is there
    rs.study.tell(running, state=optuna.trial.TrialState.FAIL)
    finish_parent(rs.study, rs.tracker, rs.parent_id, "val_loss")
    assert rs.tracker.run_status(rs.parent_id) == "FINISHED"


def test_a_report_that_cannot_be_written_is_a_warning(recorded_study: Callable[..., Any], free_port: int,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rs = recorded_study()
    rs.add(0.4, {"learning_rate": 0.01, "optimizer": "adam"})
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    log_report(rs.study, Tracker(f"http://127.0.0.1:{free_port}"), "0" * 32, "val_loss")  # a server that is down
    assert "warning: the study report could not be written" in capsys.readouterr().err


@pytest.mark.slow
def test_finish_parent_logs_the_report_and_ends_the_run(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    for i in range(3):
        rs.add(0.5 - 0.1 * i, {"learning_rate": 0.01 * (i + 1), "optimizer": ["adam", "sgd"][i % 2]})
    finish_parent(rs.study, rs.tracker, rs.parent_id, "val_loss")
    report = _artifacts(rs.tracker, rs.parent_id, "report")
    assert {"trials.csv", "best_params.json", "optimization_history.png", "learning_curves.png"} <= set(report)
    assert rs.tracker.run_status(rs.parent_id) == "FINISHED"


def test_the_parent_run_describes_the_study_in_markdown(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    assert "No trial has completed yet" in study_note(rs.study, "val_loss")
    rs.add(0.5, {"learning_rate": 0.01, "optimizer": "adam"})
    best = rs.add(0.25, {"learning_rate": 0.0321, "optimizer": "sgd"})
    rs.add(None, {"learning_rate": 0.02, "optimizer": "adam"}, state="PRUNED")
    finish_parent(rs.study, rs.tracker, rs.parent_id, "val_loss", lambda n: f"nnstudy reproduce --trial {n}")
    note = rs.tracker.client.get_run(rs.parent_id).data.tags["mlflow.note.content"]
    run_id = best.user_attrs["mlflow_run_id"]
    assert "3 trials (2 complete, 1 pruned)" in note
    assert f"[trial {best.number}](#/experiments/{rs.experiment_id}/runs/{run_id}), val_loss = 0.25 at epoch 2" in note
    assert "| learning_rate | 0.0321 |" in note and "| optimizer | sgd |" in note
    assert f"Reproduce: `nnstudy reproduce --trial {best.number}`" in note


def test_a_new_parent_run_logs_the_data_set(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    inputs = rs.tracker.client.get_run(rs.parent_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.source_type) for i in inputs] == [("pass_fail", "code")]
    assert json.loads(inputs[0].dataset.schema)["mlflow_colspec"][0]["name"] == "lectures"


# --------------------------------------------------------------------------- several objectives (Pareto)


def _add_multi(rs: Any, values: list[float], params: dict[str, Any]) -> optuna.trial.FrozenTrial:
    """A complete trial of a study of several objectives, with its (real) child run."""
    from conftest import TINY_DISTRIBUTIONS

    number = len(rs.study.get_trials(deepcopy=False))
    run_id = rs.tracker.create_child_run(rs.experiment_id, rs.parent_id, rs.spec.name, number,
                                         params={k: str(v) for k, v in params.items()}, tags={})
    rs.tracker.log_curves(run_id, {"loss": {1: 0.9, 2: 0.7}, "val_loss": {1: 0.95, 2: values[0]}})
    rs.tracker.end_run(run_id, "FINISHED")
    rs.study.add_trial(optuna.trial.create_trial(values=values, params=params, distributions=TINY_DISTRIBUTIONS,
                                                 user_attrs={ATTR_RUN_ID: run_id, "best_epoch": 2}))
    return rs.study.get_trials(deepcopy=False)[-1]


def test_the_parent_run_of_several_objectives_lists_its_pareto_front(recorded_study: Callable[..., Any]) -> None:
    from nnstudy.parent import update_parent

    rs = recorded_study(study={"objectives": ["val_loss", "n_params"]})
    update_parent(rs.tracker, rs.parent_id, rs.study)  # no complete trial: nothing to write
    assert "nnstudy.pareto_trials" not in rs.tracker.client.get_run(rs.parent_id).data.tags
    trials = [_add_multi(rs, v, {"learning_rate": lr, "optimizer": "adam"})
              for v, lr in (([0.6, 100.0], 0.01), ([0.3, 900.0], 0.02), ([0.7, 900.0], 0.03), ([0.4, 300.0], 0.04))]
    update_parent(rs.tracker, rs.parent_id, rs.study)
    run = rs.tracker.client.get_run(rs.parent_id)
    assert run.data.tags["nnstudy.pareto_trials"] == "0,1,3"  # trial 2 is beaten by trial 1
    assert TAG_BEST_RUN not in run.data.tags and run.data.params["objectives"] == "val_loss,n_params"
    assert run.data.metrics["pareto_front_size"] == 3
    assert _artifacts(rs.tracker, rs.parent_id, "pareto") == ["front.csv"]

    finish_parent(rs.study, rs.tracker, rs.parent_id, "val_loss", lambda n: f"nnstudy reproduce --trial {n}")
    note = rs.tracker.client.get_run(rs.parent_id).data.tags["mlflow.note.content"]
    assert "Pareto front: 3 trial(s)" in note and "val_loss (minimize), n_params (minimize)" in note
    rows = [line for line in note.splitlines() if line.startswith("| [")]
    assert [r.split("]")[0] for r in rows] == ["| [1", "| [3", "| [0"]  # best val_loss first
    run_id = trials[1].user_attrs[ATTR_RUN_ID]
    assert f"| [1](#/experiments/{rs.experiment_id}/runs/{run_id}) | 0.3 | 900 | 2 |" in note
    assert "nnstudy reproduce --trial 1" in note
    report = _artifacts(rs.tracker, rs.parent_id, "report")
    assert {"pareto_front.csv", "pareto_front.json", "pareto_front.html", "pareto_front.png", "pareto_front.svg",
            "optimization_history.png", "trials.csv"} <= set(report)
    assert "best_params.json" not in report
    assert rs.tracker.run_status(rs.parent_id) == "FINISHED"
