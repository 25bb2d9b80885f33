"""What a process needs to run trials of one study, made once per process: the study, its
experiment and parent run, the data and the trial pipeline. Used by the study runner and by
every worker process alike."""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from nnstudy.contract import STUDY_PARENT_PENDING
from nnstudy.data import PreparedData, prepare
from nnstudy.errors import TrialFailed
from nnstudy.interrupts import GATE
from nnstudy.parent import open_parent, update_parent
from nnstudy.progress import StudyProgress
from nnstudy.recorder import RunTarget
from nnstudy.spec import StudySpec
from nnstudy.storage import open_study, storage_for
from nnstudy.store import Store
from nnstudy.tracking import DatasetRecord, Tracker, environment_tags


@dataclass
class StudyContext:
    """Everything a process needs to run trials of one study."""

    spec: StudySpec
    store: Store
    data: PreparedData
    study: optuna.Study
    tracker: Tracker
    experiment_id: str
    parent_id: str
    env: dict[str, str]
    #: storage ids of the trials this process started (see ``Objective.started``)
    started: list[int] = field(default_factory=list)

    @property
    def runs(self) -> RunTarget:
        """Where this study's trial runs go."""
        return RunTarget(self.tracker, self.experiment_id, self.parent_id, self.spec.name, dataset=self.dataset)

    @functools.cached_property
    def dataset(self) -> DatasetRecord:
        """The study's data set as its runs log it."""
        return DatasetRecord.of_data(self.data)

    def optimize(self, n_trials: int, *, timeout: float | None, progress: StudyProgress | None = None,
                 meanwhile: Callable[[], None] | None = None, next_trial: Callable[[], bool] | None = None) -> None:
        """Run ``n_trials`` trials of the study in this process; ``meanwhile``: work for the study's end
        (imports) done by a background thread while the trials train (see :class:`_Meanwhile`);
        ``next_trial``: asked after each trial whether another may start (a worker asks the parent), so
        ``n_trials`` is then the most this process runs.

        An interrupt (Ctrl-C, SIGTERM) raises ``KeyboardInterrupt`` out of here only where no record is
        half-written (see :mod:`nnstudy.interrupts`): the running trial ends FAIL (``interrupted``) with its
        run KILLED, or, between trials, none is left open."""
        from nnstudy.mlflow_model import model_keeper
        from nnstudy.objective import Objective
        from nnstudy.training import configure_determinism

        configure_determinism(self.spec.train.deterministic)
        show = progress.on_epoch if progress else None

        def on_epoch(trial_number: int, epoch: int, logs: dict[str, float]) -> None:
            GATE.check()  # inside the trial's training: the trial records the interrupt
            if show is not None:
                show(trial_number, epoch, logs)

        objective = Objective(self.spec, self.data, self.runs, run_tags=self.env, progress=on_epoch,
                              on_result=model_keeper(self.spec, self.study, self.tracker, self.data, self.parent_id),
                              checkpoints=self.store.checkpoint_folder(self.spec.name), started=self.started)
        callbacks = [self.update_parent] + ([progress.on_trial_end] if progress else []) + [_between_trials]
        # the frameworks' millions of long-lived objects leave the collector's view while trials run:
        # the gc.collect() after each trial then costs milliseconds instead of ~0.3 s
        gc.collect()
        gc.freeze()
        if meanwhile is not None:
            callbacks.append(_Meanwhile(meanwhile).after_trial)
        if next_trial is not None:
            callbacks.append(_Asking(n_trials, next_trial).after_trial)
        try:
            self.study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(TrialFailed,),
                                callbacks=callbacks, gc_after_trial=True, show_progress_bar=False)
        finally:
            gc.unfreeze()
        GATE.check()  # an interrupt that came during the last trial's bookkeeping

    def update_parent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """After each trial: the best value so far and the link to the best child run (several objectives:
        the Pareto front)."""
        try:
            update_parent(self.tracker, self.parent_id, study)
        except Exception:  # MLflow unreachable (any transport error): `sync` writes the parent's summary later
            study.set_user_attr(STUDY_PARENT_PENDING, True)


class _Meanwhile:
    """Runs ``work`` in a daemon thread from now on. A trial's training runs mostly in the framework's
    kernels, outside Python's lock, so imports the study's end needs (seconds of a one-process study's
    end otherwise) run on the core the trials leave idle. After the first trial that ends once the work
    is done, what it made leaves the collector's view like the frameworks' objects (one collection).
    A failure is left for the end of the study to meet again, where it is reported."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._frozen = False
        self._thread = threading.Thread(target=self._quietly, args=(work,), name="nnstudy-meanwhile", daemon=True)
        self._thread.start()

    @staticmethod
    def _quietly(work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:  # the study's end runs the same imports and reports what fails
            pass

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not self._frozen and not self._thread.is_alive() and gc.get_freeze_count() > 0:
            self._frozen = True
            gc.collect()
            gc.freeze()


class _Asking:
    """Stops the study (after the trial that just ended) unless ``next_trial()`` allows another; not asked
    after the last of the ``n_trials`` this process may run."""

    def __init__(self, n_trials: int, next_trial: Callable[[], bool]) -> None:
        self.left = n_trials
        self.next_trial = next_trial

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.left -= 1
        if self.left > 0 and not self.next_trial():
            study.stop()


def _between_trials(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """After each trial (told, its run ended): raise an interrupt that waited for it."""
    GATE.check()


def open_context(spec: StudySpec, store: Store, data: PreparedData | None = None) -> StudyContext:
    """Open (or create) the study, its experiment and its one parent run. Safe to call from many
    processes at once: the study and the parent run are created exactly once."""
    data = data if data is not None else prepare(spec)
    with store.init_lock():
        study, created = open_study(spec, storage_for(spec, store.storage))
        tracker = Tracker(store.tracking_uri, store.artifact_root)
        experiment_id = tracker.experiment(spec.name)
    env = environment_tags()
    parent_id = open_parent(spec, store, study, created=created, tracker=tracker, experiment_id=experiment_id,
                            data=data, env=env)
    return StudyContext(spec, store, data, study, tracker, experiment_id, parent_id, env)
