"""The Model Registry: `[study].register_as` at the end of a study, `nnstudy register`, and the
registered model served by `mlflow models serve` answering raw rows as `nnstudy predict` does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from nnstudy import api
from nnstudy.cli import cli
from nnstudy.datasets import pass_fail_frame
from nnstudy.records import StudyRecords
from nnstudy.spec import load_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, StudyRecords, Any]]:
    """A 3-trial study run with ``register_as = "course-pass"`` in its own folder (default store)."""
    folder = tmp_path_factory.mktemp("registered")
    spec_path = folder / "reg.toml"
    spec_path.write_text('[study]\nname = "reg"\nn_trials = 3\npruner = "none"\nregister_as = "course-pass"\n'
                         'keep_models = "all"\n[data]\nsource = "pass_fail"\nn_samples = 300\n'
                         '[train]\nmax_epochs = 4\n[search]\nlearning_rate = { low = 0.001, high = 0.1, log = true }\n'
                         'depth = 1\nunits = [8, 16]\n', encoding="utf-8")
    before = os.getcwd()
    os.chdir(folder)
    try:
        outcome = api.run_study(load_spec(spec_path), show_progress=False)
        yield folder, api.open_study("reg"), outcome
    finally:
        os.chdir(before)


def _client(folder: Path) -> MlflowClient:
    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_register_as_registers_the_best_trial_with_its_origin(registered_study: tuple[Path, StudyRecords, Any]) -> None:
    folder, records, outcome = registered_study
    best = outcome.best_trial
    assert outcome.registered is not None and outcome.registered["trial"] == best.number
    version = _client(folder).get_model_version_by_alias("course-pass", "champion")
    assert version.tags["study"] == "reg" and version.tags["trial"] == str(best.number)
    assert version.tags["metric"] == "val_loss" and float(version.tags["value"]) == pytest.approx(best.value)
    assert version.run_id == best.user_attrs["mlflow_run_id"]
    assert version.source == best.user_attrs["model_uri"]


def test_register_is_safe_to_repeat_and_moves_champion(registered_study: tuple[Path, StudyRecords, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder, records, outcome = registered_study
    monkeypatch.chdir(folder)
    first = api.register(records, "course-pass")
    assert first["version"] == outcome.registered["version"]  # the same trial: no new version
    other = next(t.number for t in records.study.trials if t.number != outcome.best_trial.number)
    result = CliRunner().invoke(cli, ["register", "--name", "course-pass", "--trial", str(other)])
    assert result.exit_code == 0, result.output
    assert f"registered trial {other}" in result.output and "mlflow models serve -m models:/course-pass@champion" \
        in result.output
    assert _client(folder).get_model_version_by_alias("course-pass", "champion").tags["trial"] == str(other)
    # back to the best, as the end of the next study would do
    api.register(records, "course-pass")
    assert _client(folder).get_model_version_by_alias("course-pass", "champion").tags["trial"] == \
        str(outcome.best_trial.number)


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "a/b"], "--name 'a/b' is not a registered model name"),
    (["--name", ""], "is not a registered model name"),
    (["--name", "ok", "--trial", "99"], "has no trial 99"),
])
def test_register_bad_input_exits_2_and_writes_nothing(registered_study: tuple[Path, StudyRecords, Any],
                                                       monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                       message: str) -> None:
    folder, _, _ = registered_study
    monkeypatch.chdir(folder)
    before = [m.name for m in _client(folder).search_registered_models()]
    result = CliRunner().invoke(cli, ["register", *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert [m.name for m in _client(folder).search_registered_models()] == before


def test_best_json_names_the_model(registered_study: tuple[Path, StudyRecords, Any],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _, outcome = registered_study
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(cli, ["best", "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    best = outcome.best_trial
    assert info["trial"] == best.number and info["value"] == pytest.approx(best.value)
    assert info["model_uri"] == best.user_attrs["model_uri"] and info["mlflow_run_id"] == best.user_attrs["mlflow_run_id"]
    assert info["reproduce"] == f"nnstudy reproduce --study-name reg --trial {best.number}"


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_served_champion_answers_raw_rows_like_predict(registered_study: tuple[Path, StudyRecords, Any],
                                                       free_port: int, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder, records, _ = registered_study
    monkeypatch.chdir(folder)
    rows = pass_fail_frame(12, 9).drop(columns="passed")
    rows["lectures"] = rows["lectures"] + np.where(rows.index % 2 == 0, 0.5, 0.0)  # trained on whole numbers
    rows.to_csv(tmp_path / "rows.csv", index=False)
    expected = api.predict(records, tmp_path / "rows.csv")
    # the venv's bin first: MLflow starts `uvicorn` by name, as an activated environment finds it
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlruns/mlflow.db",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/course-pass@champion",
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(free_port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{free_port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(server.stderr.read().decode()[-3000:] if server.stderr else "no output")
                time.sleep(0.5)
        url = f"http://127.0.0.1:{free_port}/invocations"
        split = json.loads(rows.to_json(orient="split", index=False))
        status, answer = _post(url, {"dataframe_split": split})
        assert status == 200, answer
        served = pd.DataFrame(answer["predictions"])
        assert list(served.columns) == list(expected.columns)
        assert list(served["prediction"]) == list(expected["prediction"])
        pd.testing.assert_series_equal(served["p(1)"], expected["p(1)"].reset_index(drop=True), rtol=1e-6, check_dtype=False,
                                       check_names=False)
        # a missing column: MLflow's schema error names it
        status, answer = _post(url, {"dataframe_split": {"columns": ["lectures"], "data": [[3]]}})
        assert status == 400 and "hours" in answer["message"], answer
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_register_as_refuses_a_study_that_keeps_no_model(tiny_spec: Callable[..., Any]) -> None:
    from nnstudy.errors import SpecError

    with pytest.raises(SpecError, match="register_as.*keep_models = 'best' or 'all'"):
        tiny_spec(study={"register_as": "m", "keep_models": "none"})
