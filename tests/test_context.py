"""StudyContext: the study, experiment and parent run a process opens once, and the trials it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from nnstudy.context import StudyContext, open_context
from nnstudy.contract import (
    ATTR_RUN_ID,
    STUDY_PARENT_PENDING,
    STUDY_PARENT_RUN,
    TAG_BEST_RUN,
    TAG_PARENT,
)
from nnstudy.spec import StudySpec
from nnstudy.store import Store
from nnstudy.tracking import Tracker


@pytest.fixture
def store(tmp_path: Path, seed_mlflow_db: Callable[[Path], str]) -> Store:
    return Store(storage=f"sqlite:///{tmp_path}/optuna.db", tracking_uri=seed_mlflow_db(tmp_path / "mlflow.db"),
                 artifact_root=tmp_path / "artifacts")


def test_opening_twice_gives_one_study_and_one_parent_run(store: Store, tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec()
    first = open_context(spec, store)
    second = open_context(spec, store, first.data)
    assert second.parent_id == first.parent_id == first.study.user_attrs[STUDY_PARENT_RUN]
    assert second.experiment_id == first.experiment_id
    assert optuna.get_all_study_names(store.storage) == [spec.name]
    assert first.data.digest == second.data.digest and first.env["nnstudy.python"]
    parents = first.tracker.client.search_runs([first.experiment_id], "tags.`nnstudy.role` = 'study'")
    assert len(parents) == 1


def test_runs_target_points_at_the_parent(store: Store, tiny_spec: Callable[..., StudySpec]) -> None:
    ctx = open_context(tiny_spec(), store)
    target = ctx.runs
    assert (target.experiment_id, target.parent_run_id, target.study_name) == (ctx.experiment_id, ctx.parent_id,
                                                                                 "tiny")
    rec = target.start(0, params={}, tags={})
    assert ctx.tracker.client.get_run(rec.run_id).data.tags[TAG_PARENT] == ctx.parent_id


def test_update_parent_keeps_the_summary_for_sync_when_mlflow_is_down(
        store: Store, tiny_spec: Callable[..., StudySpec], monkeypatch: pytest.MonkeyPatch, free_port: int) -> None:
    ctx = open_context(tiny_spec(), store)
    ctx.update_parent(ctx.study, None)  # type: ignore[arg-type]  # no complete trial yet: nothing to write
    assert STUDY_PARENT_PENDING not in ctx.study.user_attrs
    ctx.study.add_trial(optuna.trial.create_trial(value=0.3))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = StudyContext(ctx.spec, ctx.store, ctx.data, ctx.study, Tracker(f"http://127.0.0.1:{free_port}"),
                        ctx.experiment_id, ctx.parent_id, ctx.env)
    down.update_parent(ctx.study, ctx.study.trials[0])
    assert ctx.study.user_attrs[STUDY_PARENT_PENDING] is True


@pytest.mark.slow
def test_optimize_runs_trials_recorded_under_the_parent(store: Store, tiny_spec: Callable[..., StudySpec]) -> None:
    ctx = open_context(tiny_spec(), store)
    ctx.optimize(2, timeout=None)
    trials = ctx.study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in trials:
        assert ctx.tracker.client.get_run(t.user_attrs[ATTR_RUN_ID]).data.tags[TAG_PARENT] == ctx.parent_id
    parent = ctx.tracker.client.get_run(ctx.parent_id)
    assert parent.data.tags[TAG_BEST_RUN] == ctx.study.best_trial.user_attrs[ATTR_RUN_ID]



@pytest.mark.slow
@pytest.mark.parametrize("fails", [False, True])
def test_meanwhile_work_runs_in_a_thread_while_trials_train(store: Store, tiny_spec: Callable[..., StudySpec],
                                                            fails: bool) -> None:
    """The study's end work (imports) runs beside the trials, not after them; its failure never fails the
    study (the study's end meets it again and reports it)."""
    import threading

    ctx = open_context(tiny_spec(), store)
    ran: list[str] = []

    def work() -> None:
        ran.append(threading.current_thread().name)
        if fails:
            raise RuntimeError("an import failed")

    ctx.optimize(2, timeout=None, meanwhile=work)
    assert ran == ["nnstudy-meanwhile"]
    assert [t.state for t in ctx.study.get_trials()] == [optuna.trial.TrialState.COMPLETE] * 2


def test_what_meanwhile_work_made_leaves_the_collectors_view_after_the_next_trial() -> None:
    import gc

    from nnstudy.context import _Meanwhile

    made: list[list[object]] = []
    gc.collect()
    gc.freeze()
    try:
        meanwhile = _Meanwhile(lambda: made.append([[] for _ in range(1000)]))
        meanwhile._thread.join()
        before = gc.get_freeze_count()
        meanwhile.after_trial(None, None)  # type: ignore[arg-type]
        after = gc.get_freeze_count()
        assert after >= before + 1000
        meanwhile.after_trial(None, None)  # type: ignore[arg-type]
        assert gc.get_freeze_count() == after  # once
    finally:
        gc.unfreeze()
