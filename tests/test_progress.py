"""The live display and the leaderboard printed at the end of a run."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import optuna
import pandas as pd
import pytest
from rich.console import Console
from rich.table import Table

from nnstudy.contract import ATTR_RUN_ID, study_run_id_key
from nnstudy.progress import StudyProgress, frame_table, leaderboard


def _text(table: Table) -> str:
    console = Console(width=250, record=True)
    console.print(table)
    return console.export_text()


def _rows(table: Table) -> list[list[str]]:
    return [list(row) for row in zip(*(col._cells for col in table.columns))]


def _study(direction: str = "minimize") -> optuna.Study:
    study = optuna.create_study(study_name="lb", direction=direction)
    dist = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    for value, lr in ((0.5, 0.01), (0.2, 0.1), (0.9, 0.001)):
        study.add_trial(optuna.trial.create_trial(value=value, params={"learning_rate": lr}, distributions=dist,
                                                  user_attrs={"best_epoch": 3, "stopped_epoch": 7,
                                                              ATTR_RUN_ID: f"run-{lr}"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    return study


def test_leaderboard_ranks_complete_trials_best_first() -> None:
    table = leaderboard(_study(), top=2)
    rows = _rows(table)
    assert [r[:3] for r in rows] == [["1", "1", "0.2000"], ["2", "0", "0.5000"]]
    assert rows[0][-1] == "run-0.1" and rows[0][3:5] == ["3", "7"]
    assert table.title == "study 'lb': top 2 of 3 complete trials"
    assert table.caption == "3 complete, 1 fail"
    assert [c.header for c in table.columns] == ["#", "trial", "value", "best ep", "stop ep", "lr", "mlflow run"]


def test_leaderboard_of_a_maximized_metric_puts_the_largest_first() -> None:
    assert [r[2] for r in _rows(leaderboard(_study("maximize")))] == ["0.9000", "0.5000", "0.2000"]


def test_leaderboard_shows_run_ids_written_by_sync(recorded_study: Callable[..., Any]) -> None:
    rs = recorded_study()
    trial = rs.add(0.3, {"learning_rate": 0.01, "optimizer": "adam"}, run=False)  # its run was kept offline
    assert ATTR_RUN_ID not in trial.user_attrs
    rs.study.set_user_attr(study_run_id_key(trial.number), "synced-run-id")  # as sync_records writes it
    assert _rows(leaderboard(rs.study))[0][-1] == "synced-run-id"
    assert "synced-run-id" in _text(leaderboard(rs.study))


def test_progress_follows_the_best_value() -> None:
    study = _study()
    progress = StudyProgress(4, 10, "val_loss", enabled=False)
    with progress:
        progress.on_epoch(5, 3, {"val_loss": 0.25})
        assert progress._best_text() == "best -"
        progress.on_trial_end(study, study.trials[0])
        assert progress.best == study.best_value and progress._best_text() == "best val_loss=0.2"
        task = progress._progress.tasks[0]
        assert task.completed == 1 and "trial 0 complete" in task.fields["status"]
        progress.show(optuna.create_study(), 3, running=2)  # several workers: counts read from the storage
        assert progress.best is None
    assert task.completed == 3 and task.fields["status"] == "best - | 2 worker(s) running"


def test_frame_table_blanks_missing_values_and_rounds_floats() -> None:
    frame = pd.DataFrame({"number": [0, 1], "value": [0.123456, float("nan")], "state": ["COMPLETE", None]})
    table = frame_table(frame, title="t")
    assert table.rows == [["0", "0.1235", "COMPLETE"], ["1", "", ""]]


def _drawn(renderable: Any, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("width", [200, 60])
def test_frame_table_draws_what_a_rich_table_draws(width: int) -> None:
    frame = pd.DataFrame({"number": [0, 1], "state": ["COMPLETE", "FAIL"], "value": [0.5, float("nan")],
                          "mlflow_run_id": ["db8452449a4f46ac9792d1d2a468a7dc", None]})
    table = Table(title="study 'x': 2 trial(s)")
    for col in frame.columns:
        table.add_column(col, overflow="fold")
    for row in frame_table(frame, title="x").rows:
        table.add_row(*row)
    drawn = _drawn(frame_table(frame, title="study 'x': 2 trial(s)"), width)
    if width == 200:  # wide enough: line for line what rich's own Table draws
        assert drawn == _drawn(table, width)
    else:  # too narrow: the widest column folds and every line fits
        lines = drawn.splitlines()
        assert max(len(line) for line in lines) <= width
        assert "db8452449a4f46ac9792d1d2a468a7dc" not in drawn
        assert "".join(line.split("│")[-2].strip() for line in lines if "│" in line).startswith(
            "db8452449a4f46ac9792d1d2a468a7dc")


def test_frame_table_draws_a_row_line_as_one_segment() -> None:
    frame = pd.DataFrame({"number": list(range(50)), "value": [0.5] * 50})
    console = Console(width=100, file=io.StringIO())
    segments = list(console.render(frame_table(frame, title="x"), console.options))
    body = [s.text for s in segments if s.text.startswith("│")]
    assert len(body) == 50 and all(text.endswith("│") for text in body)  # a thousand rows: a thousand segments
