"""run_study: validate everything first, then run (or resume) the study in one parent run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from nnstudy.contract import ATTR_RUN_ID, STUDY_PARENT_RUN, TAG_PARENT
from nnstudy.errors import SpecError, StoreError
from nnstudy.runner import run_study
from nnstudy.spec import StudySpec
from nnstudy.tracking import Tracker


def test_bad_data_is_refused_before_any_store_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     tiny_spec: Callable[..., StudySpec]) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(data={"source": "missing.csv", "target": "y", "n_samples": 1000}, path=tmp_path / "s.toml")
    with pytest.raises(SpecError, match=r"\[data\]\.source: .*missing\.csv.*no such file"):
        run_study(spec, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_tracking_server_is_refused_before_any_store_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_spec: Callable[..., StudySpec], free_port: int) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="unreachable"):
        run_study(tiny_spec(), tracking_uri=f"http://127.0.0.1:{free_port}", show_progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_run_then_resume_adds_trials_to_the_same_parent_run(study_dir: Path,
                                                            tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"n_trials": 1, "sampler": "random"})
    first = run_study(spec, show_progress=False)
    assert first.new_trials == 1 and first.best_trial is not None
    assert first.store.storage == "sqlite:///mlruns/optuna.db" and (study_dir / "mlruns" / "optuna.db").exists()
    assert first.study.user_attrs[STUDY_PARENT_RUN] == first.parent_run_id
    client = Tracker(first.store.tracking_uri).client
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"
    assert first.data.summary()["train_rows"] == 72  # 120 rows, 20 % validation, 20 % test

    second = run_study(spec, show_progress=False)
    assert second.new_trials == 1 and second.parent_run_id == first.parent_run_id
    trials = second.study.get_trials()
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    runs = [client.get_run(t.user_attrs[ATTR_RUN_ID]) for t in trials]
    assert all(r.data.tags[TAG_PARENT] == first.parent_run_id for r in runs)
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"
    assert trials[0].params != trials[1].params  # the resumed search does not repeat itself
