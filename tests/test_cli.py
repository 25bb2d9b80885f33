"""The command line over a real tiny study: output formats, one-line errors and their exit codes."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from nnstudy.cli import cli


@pytest.fixture
def study(recorded_study: Callable[..., Any]) -> Any:
    rs = recorded_study()
    for value, lr in ((0.5, 0.01), (0.2, 0.05), (0.35, 0.002)):
        rs.add(value, {"learning_rate": lr, "optimizer": "adam"})
    return rs


def _invoke(rs: Any, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--storage", rs.storage, "--tracking-uri", rs.tracking_uri])


def _one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_unknown_sort_column_is_one_error_line_and_exit_code_2(study: Any) -> None:
    result = _invoke(study, "trials", "--sort", "nope")
    assert result.exit_code == 2 and result.stdout == ""
    assert "--sort 'nope': no such column; allowed: number, state, value" in _one_error_line(result)


def test_trials_as_csv_sorted_and_cut(study: Any) -> None:
    result = _invoke(study, "trials", "--format", "csv", "--top", "2", "--no-diagnosis")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert list(frame["value"]) == sorted(t.value for t in study.study.trials)[:2]
    assert list(frame.columns[:3]) == ["number", "state", "value"] and "mlflow_run_id" in frame.columns


def test_trials_as_json_and_as_a_table(study: Any) -> None:
    result = _invoke(study, "trials", "--format", "json", "--sort", "learning_rate")
    rows = json.loads(result.stdout)
    assert [r["learning_rate"] for r in rows] == [0.002, 0.01, 0.05]
    table = _invoke(study, "trials")
    assert table.exit_code == 0 and "study 'tiny': 3 trial(s)" in table.stdout


def test_best_prints_json_and_the_reproduce_command(study: Any) -> None:
    result = _invoke(study, "best")
    assert result.exit_code == 0, result.output
    body, _, command = result.stdout.rpartition("reproduce: ")
    info = json.loads(body)
    best = study.study.best_trial
    assert (info["trial"], info["value"]) == (best.number, best.value)
    assert command.strip() == (f"nnstudy reproduce --study-name tiny --trial {best.number} --storage {study.storage} "
                               f"--tracking-uri {study.tracking_uri}")


def test_sync_with_nothing_kept(study: Any) -> None:
    result = _invoke(study, "sync")
    assert result.exit_code == 0 and f"study 'tiny': wrote 0 trial record(s) to {study.tracking_uri}" in result.stdout


def test_reproduce_refuses_a_trial_and_a_run_id_together(study: Any) -> None:
    result = _invoke(study, "reproduce", "--trial", "0", "--run-id", "abc")
    assert result.exit_code == 2 and "give --trial or --run-id, not both" in result.stderr


def test_a_missing_store_is_one_error_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["best", "--storage", f"sqlite:///{tmp_path}/optuna.db",
                                      "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert result.exit_code == 2 and "no study store at" in _one_error_line(result)


def test_ui_of_a_tracking_server_points_at_it() -> None:
    result = CliRunner().invoke(cli, ["ui", "--tracking-uri", "http://127.0.0.1:5999"])
    assert result.exit_code == 0
    assert result.stdout.strip() == "the tracking server already serves the UI: http://127.0.0.1:5999"


def test_version_and_short_help() -> None:
    from importlib.metadata import version

    assert CliRunner().invoke(cli, ["--version"]).stdout.strip().endswith(version("nnstudy"))
    assert CliRunner().invoke(cli, ["-h"]).exit_code == 0


def test_validate_warns_of_a_checkpoint_interval_that_never_comes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "s.toml"
    spec.write_text("[data]\nn_samples = 100\n[train]\nmax_epochs = 5\ncheckpoint_every = 8\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(spec)])
    assert result.exit_code == 0, result.output  # allowed
    assert "warning: [train].checkpoint_every = 8 is not below max_epochs = 5" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["s.toml"]  # nothing written
