"""The study runner: spec -> data -> Optuna study + MLflow parent run -> trials -> the end.

``run_study`` validates everything (spec, data, store URIs, tracking server) *before* it
creates a store, then runs the trials in this process or in worker processes. Re-running the
same spec adds trials to the same study and the same parent run.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from nnstudy.context import StudyContext, open_context
from nnstudy.contract import STUDY_PARENT_PENDING
from nnstudy.data import PreparedData, prepare
from nnstudy.enqueue import enqueue
from nnstudy.model import check_model
from nnstudy.errors import DiskFull, StudyInterrupted, error_chain, is_disk_full
from nnstudy.interrupts import GATE
from nnstudy.parent import finish_parent
from nnstudy.progress import StudyProgress
from nnstudy.schemas import SchemaTemplates
from nnstudy.report import import_plotting
from nnstudy.spec import StudySpec
from nnstudy.storage import end_interrupted_trials, recover_stale_trials
from nnstudy.store import Store, resolve_store, write_problem
from nnstudy.sync import sync_records
from nnstudy.tracking import check_reachable
from nnstudy.workers import WorkerPool, plan_workers, resolve_workers, run_workers


@dataclass
class StudyOutcome:
    """What ``run_study`` leaves behind."""

    study: optuna.Study
    store: Store
    parent_run_id: str
    experiment_id: str
    new_trials: int
    data: PreparedData
    registered: dict[str, Any] | None = None  # [study].register_as: the model version registered at the end

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        """The best trial; None before one completes, and for a study of several objectives (see ``front``)."""
        if len(self.study.directions) > 1:
            return None
        try:
            return self.study.best_trial
        except ValueError:
            return None

    @property
    def front(self) -> list[optuna.trial.FrozenTrial]:
        """The best trial, or the Pareto front of a study of several objectives (empty before one completes)."""
        from nnstudy.pareto import best_trials

        return best_trials(self.study)


def run_study(spec: StudySpec, *, storage: str | None = None, tracking_uri: str | None = None,
              extra_enqueue: list[dict[str, Any]] | None = None, show_progress: bool = True,
              workers: int | str = 1, gpus: list[str] | None = None, trials_per_gpu: int = 1,
              schemas: SchemaTemplates | None = None) -> StudyOutcome:
    """Run (or resume) the study of ``spec``: adds ``[study].n_trials`` trials.

    ``workers > 1`` (or ``gpus``) runs the trials in that many worker processes, each with its
    share of the threads (or its GPU slot); the total number of new trials stays exact. ``"auto"``
    (the command line's default) starts one per core on a machine without a GPU
    (:func:`nnstudy.workers.auto_workers`); worker processes are spawned (or forked: see
    :func:`nnstudy.workers.start_method`), so a script that calls this with workers must guard its top
    level with ``if __name__ == "__main__":``.
    ``schemas``: empty stores being made ahead (:meth:`nnstudy.schemas.SchemaTemplates.start`, which the
    command line calls before it imports TensorFlow): put in place of the local SQLite files not yet there.
    Defaults: the local store under ``./mlruns``, one process, a progress display on stderr.

    Raises:
        UserInputError: bad spec, data or store; raised before anything is written.
        StudyInterrupted: Ctrl-C / SIGTERM; finished trials are kept, the running ones are FAIL.
    """
    store = resolve_store(storage, tracking_uri)
    plans = plan_workers(resolve_workers(workers, spec.study.n_trials), gpus=gpus, trials_per_gpu=trials_per_gpu)
    recycle = spec.study.trials_per_process
    in_process = len(plans) == 1 and not plans[0].env and (recycle == 0 or spec.study.n_trials <= recycle)
    # worker processes start now: they import Keras while this process validates and creates the stores
    pool = None if in_process else WorkerPool(plans, spec.train.backend)
    try:
        ctx, before = _run(spec, store, pool, extra_enqueue, show_progress, schemas)
    finally:
        if pool is not None:
            pool.close()
    return StudyOutcome(study=ctx.study, store=store, parent_run_id=ctx.parent_id, experiment_id=ctx.experiment_id,
                        new_trials=len(ctx.study.get_trials(deepcopy=False)) - before, data=ctx.data)


def _run(spec: StudySpec, store: Store, pool: WorkerPool | None, extra_enqueue: list[dict[str, Any]] | None,
         show_progress: bool, schemas: SchemaTemplates | None) -> tuple[StudyContext, int]:
    """Validate, create the stores, run the trials (here, or in the pool's workers), end the parent run;
    returns the context and the number of trials the study had before."""
    data = prepare(spec)  # validates the data and the model before any store exists
    checked = check_model(spec, data.input_shape, data.task, data.n_classes, data.x_train[:2])
    if "warning" in checked:
        print(f"warning: {checked['warning']}", file=sys.stderr)
    if spec.checkpoint_warning:
        print(f"warning: {spec.checkpoint_warning}", file=sys.stderr)
    check_reachable(store.tracking_uri)
    store.check_files()
    store.check_databases()
    # from here an interrupt never lands inside a store write (see nnstudy.interrupts), and a full disk stops the study
    with GATE.critical(), _FullDisk(store) as full_disk:
        store.prepare(before_files=schemas.install if schemas is not None else None)
        ctx = full_disk.ctx = open_context(spec, store, data)
        recover_stale_trials(ctx.study, ctx.tracker)
        synced = sync_records(ctx.study, ctx.tracker, metric=spec.study.metric)
        if synced:
            print(f"wrote the MLflow records of {len(synced)} trial(s) kept while MLflow was unreachable",
                  file=sys.stderr)
        enqueue(ctx.study, [*spec.enqueue, *(extra_enqueue or [])])
        before = len(ctx.study.get_trials(deepcopy=False))
        progress = StudyProgress(spec.study.n_trials, spec.train.max_epochs, spec.study.metric, enabled=show_progress)
        try:
            with progress:
                GATE.check()
                if pool is None:
                    ctx.optimize(spec.study.n_trials, timeout=spec.study.timeout, progress=progress,
                                 meanwhile=import_plotting)
                else:
                    run_workers(ctx, pool, progress=progress, trials_per_process=spec.study.trials_per_process,
                                on_tail=import_plotting)
        except KeyboardInterrupt:
            raise _interrupted(ctx) from None
        except BaseException:
            ctx.tracker.end_run(ctx.parent_id, "FAILED")
            raise
        _finish(ctx)
    return ctx, before


class _FullDisk:
    """Stops the study when a write finds the store's disk full: :class:`DiskFull` (exit 2) naming it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ctx: StudyContext | None = None

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> None:
        if isinstance(err, Exception) and not isinstance(err, DiskFull) and is_disk_full(err):
            raise _disk_full(self.store, self.ctx, err) from None


def _disk_full(store: Store, ctx: StudyContext | None, err: BaseException) -> DiskFull:
    """After a write found the store's disk full: this process's running trial FAIL (``disk-full``) with
    its run FAILED, the parent run FAILED -- as far as the full disk lets these small writes through
    (what it refuses, the next ``nnstudy run`` repairs: a trial left RUNNING is failed and re-run) --
    and the message naming the full disk. SQLite rolled the refused write back: no record is torn."""
    files = [Path(e.filename) for e in error_chain(err) if isinstance(e, OSError) and e.filename]
    files += [*store.local_files(), *([store.artifact_root] if store.artifact_root else [])]
    full = next((f for f in files if (write_problem(f) or "").startswith("disk full")), files[0] if files else None)
    where = f"the disk holding {full}" if full is not None else f"the disk of {store.storage}"
    if ctx is None:
        return DiskFull(f"{where} is full (ENOSPC: no space left on device); free some space and run the same "
                        "command again")
    try:
        end_interrupted_trials(ctx.study, ctx.tracker, [os.getpid()], reason="disk-full", trial_ids=ctx.started)
        ctx.tracker.end_run(ctx.parent_id, "FAILED")
    except Exception:  # still full: the next run repairs what is left open
        pass
    done = len(ctx.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    return DiskFull(f"{where} is full (ENOSPC: no space left on device); study {ctx.spec.name!r} stopped, "
                    f"{done} complete trial(s) are kept in {store.storage}. Free some space and run the same "
                    "command again to resume.")


def _interrupted(ctx: StudyContext) -> StudyInterrupted:
    """After an interrupt: no trial of this process left open, the parent run KILLED."""
    end_interrupted_trials(ctx.study, ctx.tracker, [os.getpid()], trial_ids=ctx.started)
    ctx.tracker.end_run(ctx.parent_id, "KILLED")
    done = len(ctx.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    return StudyInterrupted(f"study {ctx.spec.name!r} interrupted; {done} complete trial(s) are kept in "
                            f"{ctx.store.storage}. Run the same command again to resume.")


def _finish(ctx: StudyContext) -> None:
    """Write the report and end the parent run, unless other workers still run trials of the study."""
    try:
        finish_parent(ctx.study, ctx.tracker, ctx.parent_id, ctx.spec.study.metric,
                      lambda number: ctx.store.reproduce_command(ctx.spec.name, number))
    except Exception as err:  # MLflow unreachable: the trials are in the Optuna storage; `sync` finishes this
        if is_disk_full(err):
            raise
        ctx.study.set_user_attr(STUDY_PARENT_PENDING, True)
        print(f"warning: MLflow unreachable at the end of the study ({type(err).__name__}); run `nnstudy sync` "
              "when it is back", file=sys.stderr)
