"""The study runner: spec -> data -> Optuna study + MLflow parent run -> trials -> leaderboard.

``run_study`` validates everything (spec, data, store URIs, tracking server) *before* it
creates a store, then runs the trials. Re-running the same spec adds trials to the same
study and the same parent run.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from nnstudy.data import PreparedData, prepare
from nnstudy.errors import SpecError, StoreError, StudyInterrupted, TrialFailed
from nnstudy.objective import ATTR_PENDING, ATTR_RUN_ID, Objective, ResultHook, run_id_of
from nnstudy.progress import StudyProgress
from nnstudy.spec import StudySpec
from nnstudy.store import Store, absolute_sqlite, resolve_store
from nnstudy.tracking import TAG_BEST_RUN, Tracker, check_reachable, environment_tags, write_pending
from nnstudy.training import TrainResult

ATTR_PARENT_RUN = "mlflow_parent_run_id"
ATTR_EXPERIMENT = "mlflow_experiment_id"
ATTR_PARENT_PENDING = "mlflow_parent_pending"
HEARTBEAT_INTERVAL_S = 20
HEARTBEAT_GRACE_S = 60


@dataclass
class StudyOutcome:
    """What ``run_study`` leaves behind."""

    study: optuna.Study
    store: Store
    parent_run_id: str
    experiment_id: str
    new_trials: int
    data: PreparedData
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        try:
            return self.study.best_trial
        except ValueError:
            return None


def make_sampler(spec: StudySpec, *, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded with ``[study].seed + offset``."""
    seed = spec.study.seed + offset
    if spec.study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.study.sampler == "grid":
        return optuna.samplers.GridSampler(spec.space.grid(spec.path), seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


class ProcessSampler(optuna.samplers.BaseSampler):
    """The spec's sampler, seeded when this process gets its first trial: ``seed + that trial's number``.

    Trial numbers are unique across processes, so workers that open a study at the same moment
    propose different configurations, while a lone process gets the same sequence every time
    (a resumed random search does not repeat itself either).
    """

    def __init__(self, spec: StudySpec) -> None:
        self._spec = spec
        self._inner: optuna.samplers.BaseSampler | None = None

    def _sampler(self, number: int = 0) -> optuna.samplers.BaseSampler:
        if self._inner is None:
            self._inner = make_sampler(self._spec, offset=number)
        return self._inner

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._sampler(trial.number).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return self._sampler(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        return self._sampler(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._sampler(trial.number).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    state: optuna.trial.TrialState, values: Any) -> None:
        self._sampler(trial.number).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler().reseed_rng()


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """``median`` (after 5 trials, from epoch 5), ``percentile`` (the same, but below the best 25%),
    ``asha`` (successive halving from epoch 1), ``hyperband`` (1..max_epochs) or ``none``."""
    warmup = min(5, spec.train.max_epochs - 1)
    if spec.study.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
    if spec.study.pruner == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=warmup)
    if spec.study.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if spec.study.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.train.max_epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def make_storage(url: str, *, max_retries: int = 1) -> optuna.storages.BaseStorage:
    """RDB storage with heartbeats (trials of dead workers are failed, then re-run up to
    ``max_retries`` times) and a patient SQLite lock."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    last: Exception | None = None
    for attempt in range(5):  # workers starting together race to create the schema: retry
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
                return optuna.storages.RDBStorage(absolute_sqlite(url), engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=HEARTBEAT_GRACE_S,
                                                  heartbeat_stale_trial_callback=retry)
        except Exception as err:  # sqlalchemy raises many kinds for a bad URL or an unreachable server
            last = err
            if "UNIQUE constraint" not in str(err) and "already exists" not in str(err) and "locked" not in str(err):
                break
            time.sleep(0.2 * (attempt + 1))
    raise StoreError(f"--storage {url!r}: cannot open the Optuna storage: {str(last).splitlines()[0]}") from None


def open_study(spec: StudySpec, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, bool]:
    """Create the study or load it (resume); its direction must match the spec.
    Returns the study and whether this call created it (exactly one process does)."""
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,
                                    pruner=make_pruner(spec), sampler=ProcessSampler(spec))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=spec.name, storage=storage, pruner=make_pruner(spec),
                                  sampler=ProcessSampler(spec))
        created = False
    if study.direction.name.lower() != spec.direction:
        raise SpecError(spec.path, "[study].direction", f"{spec.direction!r}, but study {spec.name!r} in the "
                        f"storage was created with {study.direction.name.lower()!r}; allowed: the same "
                        "direction, or another [study].name / --study-name")
    return study, created


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale_trials(study: optuna.Study, tracker: Tracker) -> list[int]:
    """Fail trials left RUNNING by a dead process, and end their MLflow runs as KILLED.

    A trial started on this host whose process is gone is failed at once; trials of other
    hosts are failed by Optuna once their heartbeat is older than the grace period.
    Returns the numbers of the trials whose records were repaired.
    """
    storage = study._storage
    host = platform.node()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid):
            storage.set_trial_user_attr(t._trial_id, "fail_reason", "worker-died")
            if storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                heartbeat = isinstance(storage, optuna.storages._heartbeat.BaseHeartbeat)
                callback = storage.get_heartbeat_stale_trial_callback() if heartbeat else None
                if callback is not None:  # the same retry as for a stale heartbeat
                    callback(study, storage.get_trial(t._trial_id))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    repaired = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run_id = t.user_attrs.get(ATTR_RUN_ID)
        if not run_id or t.user_attrs.get("fail_reason") not in (None, "worker-died"):
            continue  # failures nnstudy recorded itself already ended their MLflow run
        try:
            if tracker.run_status(run_id) == "RUNNING":
                tracker.end_run(run_id, "KILLED", {"nnstudy.fail_reason": "worker-died"})
                repaired.append(t.number)
        except Exception:  # a run deleted from MLflow: nothing to end
            continue
    return repaired


def enqueue(study: optuna.Study, configs: list[dict[str, Any]]) -> None:
    """Queue configurations to try first (skipped when the study already tried them)."""
    for params in configs:
        study.enqueue_trial(params, skip_if_exists=True)


def load_enqueue_file(path: str | Path, spec: StudySpec) -> list[dict[str, Any]]:
    """Read ``--enqueue FILE.json`` (a JSON list of parameter dicts) and check it against the space."""
    path = Path(path)
    try:
        configs = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(path, "--enqueue", "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError) as err:
        raise SpecError(path, "--enqueue", f"not valid JSON: {err}; allowed: a JSON list of parameter objects") from None
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise SpecError(path, "--enqueue", "allowed: a JSON list of parameter objects, e.g. "
                        '[{"learning_rate": 0.001, "optimizer": "adam"}]')
    space = spec.space
    for i, params in enumerate(configs):
        space.check_params(params, path, f"[{i}]")
    return configs


def _model_keeper(spec: StudySpec, study: optuna.Study, tracker: Tracker, data: PreparedData) -> ResultHook:
    """Log the trained model of every trial (``keep_models = "all"``) or of each new best ("best")."""

    def keep(trial: optuna.Trial, run_id: str, result: TrainResult) -> None:
        if spec.study.keep_models == "none":
            return
        if spec.study.keep_models == "best":
            value = result.value(spec.study.metric)
            try:
                best = study.best_value
            except ValueError:
                best = None
            better = best is None or (value < best if spec.direction == "minimize" else value > best)
            if not better:
                return
        from nnstudy.export import log_bundle

        log_bundle(tracker, run_id, result.model, data.preprocessing, {
            "study": spec.name, "trial": trial.number, "params": trial.params, "best_epoch": result.best_epoch,
            "metric": spec.study.metric, "value": result.value(spec.study.metric), "data_digest": data.digest})
        trial.set_user_attr("model_logged", True)

    return keep


def _log_study_files(tracker: Tracker, run_id: str, spec: StudySpec, data: PreparedData) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
        Path(tmp, "data.json").write_text(json.dumps(data.summary(), indent=2))
        Path(tmp, "preprocessing.json").write_text(data.preprocessing.to_json())
        tracker.log_artifacts(run_id, Path(tmp), "study")


def log_report(study: optuna.Study, tracker: Tracker, parent_id: str, metric: str) -> None:
    """Write the study report (plots, trials.csv, best_params.json) onto the parent run under ``report/``.

    A report that cannot be drawn never costs the study: the reason is printed and the run goes on.
    """
    from nnstudy.report import write_report

    try:
        with tempfile.TemporaryDirectory() as tmp:
            write_report(study, Path(tmp), client=tracker.client, metric=metric)
            tracker.log_artifacts(parent_id, Path(tmp), "report")
    except Exception as err:  # plotting libraries fail in many ways; the trials are safe either way
        print(f"warning: the study report could not be written: {type(err).__name__}: {err}", file=sys.stderr)


@dataclass
class StudyContext:
    """Everything a process needs to run trials of one study (made once per process)."""

    spec: StudySpec
    store: Store
    data: PreparedData
    study: optuna.Study
    tracker: Tracker
    experiment_id: str
    parent_id: str
    env: dict[str, str]

    def optimize(self, n_trials: int, *, timeout: float | None, progress: StudyProgress | None = None) -> None:
        """Run ``n_trials`` trials of the study in this process."""
        objective = Objective(self.spec, self.data, self.tracker, self.experiment_id, self.parent_id,
                              progress=progress.on_epoch if progress else None, run_tags=self.env,
                              on_result=_model_keeper(self.spec, self.study, self.tracker, self.data))
        callbacks = [self.update_parent] + ([progress.on_trial_end] if progress else [])
        # the frameworks' millions of long-lived objects leave the collector's view: the gc.collect()
        # after each trial then costs milliseconds instead of ~0.3 s
        gc.collect()
        gc.freeze()
        self.study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(TrialFailed,),
                            callbacks=callbacks, gc_after_trial=True, show_progress_bar=False)

    def update_parent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """After each trial: the best value so far (a point per trial) and the link to the best child."""
        try:
            best = study.best_trial
        except ValueError:
            return
        try:
            update_parent_run(self.tracker, self.parent_id, best, study.user_attrs)
        except Exception:  # MLflow unreachable: `sync` writes the parent's summary later
            study.set_user_attr(ATTR_PARENT_PENDING, True)


def open_context(spec: StudySpec, store: Store, data: PreparedData | None = None) -> StudyContext:
    """Open (or create) the study, its experiment and its one parent run. Safe to call from many
    processes at once: the study and the parent run are created exactly once."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    data = data if data is not None else prepare(spec)
    with store.init_lock():
        study, created = open_study(spec, make_storage(store.storage, max_retries=spec.study.max_retries))
        tracker = Tracker(store.tracking_uri, store.artifact_root)
        experiment_id = tracker.experiment(spec.name)
    env = environment_tags()
    known = study.user_attrs.get(ATTR_PARENT_RUN)
    if known is None and not created:  # the process that created the study is creating its parent run
        known = _wait_for_parent(study)
    parent_id = tracker.parent_run(
        experiment_id, spec.name, known,
        params={"sampler": spec.study.sampler, "pruner": spec.study.pruner, "metric": spec.study.metric,
                "direction": spec.direction, "seed": spec.study.seed, "data_source": spec.data.source},
        tags={**env, "nnstudy.optuna_storage": store.storage, "nnstudy.spec_file": str(spec.path or "")},
    )
    if known != parent_id:
        study.set_user_attr(ATTR_PARENT_RUN, parent_id)
        study.set_user_attr(ATTR_EXPERIMENT, experiment_id)
        _log_study_files(tracker, parent_id, spec, data)
    return StudyContext(spec, store, data, study, tracker, experiment_id, parent_id, env)


def _wait_for_parent(study: optuna.Study, timeout_s: float = 60.0) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        parent = optuna.load_study(study_name=study.study_name, storage=study._storage).user_attrs.get(ATTR_PARENT_RUN)
        if parent:
            return str(parent)
        time.sleep(0.5)
    return None  # its creator died before making one: look for, or create, the parent ourselves


def _interrupted(ctx: StudyContext) -> StudyInterrupted:
    ctx.tracker.end_run(ctx.parent_id, "KILLED")
    done = len(ctx.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    return StudyInterrupted(f"study {ctx.spec.name!r} interrupted; {done} complete trial(s) are kept in "
                            f"{ctx.store.storage}. Run the same command again to resume.")


def update_parent_run(tracker: Tracker, parent_id: str, best: optuna.trial.FrozenTrial,
                      study_attrs: dict[str, Any]) -> None:
    tracker.log_summary(parent_id, {"best_value": best.value}, {
        TAG_BEST_RUN: run_id_of(best, study_attrs) or "", "nnstudy.best_trial": str(best.number),
        **{f"best.{k}": str(v) for k, v in best.params.items()}})


def finish(ctx: StudyContext) -> None:
    """Write the report and end the parent run, unless other workers still run trials of the study."""
    try:
        _finish_parent(ctx.study, ctx.tracker, ctx.parent_id, ctx.spec.study.metric)
    except Exception as err:  # MLflow unreachable: the trials are in the Optuna storage; `sync` finishes this
        ctx.study.set_user_attr(ATTR_PARENT_PENDING, True)
        print(f"warning: MLflow unreachable at the end of the study ({type(err).__name__}); run `nnstudy sync` "
              "when it is back", file=sys.stderr)


def _finish_parent(study: optuna.Study, tracker: Tracker, parent_id: str, metric: str) -> None:
    log_report(study, tracker, parent_id, metric)
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        tracker.end_run(parent_id, "FINISHED")


def sync_records(study: optuna.Study, tracker: Tracker, *, metric: str) -> list[int]:
    """Write to MLflow the records of trials that ran while it was unreachable (and the parent's
    summary). Safe to repeat. Returns the numbers of the trials written."""
    attrs = study.user_attrs
    experiment_id, parent_id = attrs.get(ATTR_EXPERIMENT), attrs.get(ATTR_PARENT_RUN)
    if not experiment_id or not parent_id:
        return []
    written = []
    for t in study.get_trials(deepcopy=False):
        pending = t.user_attrs.get(ATTR_PENDING)
        if not pending or attrs.get(f"{ATTR_RUN_ID}.{t.number}"):
            continue
        run_id = write_pending(tracker, experiment_id, parent_id, study.study_name, t.number, pending)
        study.set_user_attr(f"{ATTR_RUN_ID}.{t.number}", run_id)
        written.append(t.number)
    if written or study.user_attrs.get(ATTR_PARENT_PENDING):
        try:
            update_parent_run(tracker, parent_id, study.best_trial, study.user_attrs)
        except ValueError:  # no complete trial
            pass
        _finish_parent(study, tracker, parent_id, metric)
        study.set_user_attr(ATTR_PARENT_PENDING, False)
    return written


def run_study(spec: StudySpec, *, storage: str | None = None, tracking_uri: str | None = None,
              extra_enqueue: list[dict[str, Any]] | None = None, show_progress: bool = True,
              workers: int = 1, gpus: list[str] | None = None, trials_per_gpu: int = 1) -> StudyOutcome:
    """Run (or resume) the study of ``spec``: adds ``[study].n_trials`` trials.

    ``workers > 1`` (or ``gpus``) runs the trials in that many worker processes, each with its
    share of the threads (or its GPU slot); the total number of new trials stays exact.

    Raises:
        UserInputError: bad spec, data or store; raised before anything is written.
        StudyInterrupted: Ctrl-C / SIGTERM; finished trials are kept, the running ones are FAIL.
    """
    from nnstudy.workers import plan_workers, run_workers

    store = resolve_store(storage, tracking_uri)
    data = prepare(spec)  # validates the data before any store exists
    plans = plan_workers(workers, gpus=gpus, trials_per_gpu=trials_per_gpu)
    check_reachable(store.tracking_uri)
    store.check_databases()
    store.prepare()
    ctx = open_context(spec, store, data)
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
            recycle = spec.study.trials_per_process
            if len(plans) == 1 and not plans[0].env and (recycle == 0 or spec.study.n_trials <= recycle):
                ctx.optimize(spec.study.n_trials, timeout=spec.study.timeout, progress=progress)
            else:
                run_workers(ctx, plans, progress=progress, trials_per_process=recycle)
    except KeyboardInterrupt:
        raise _interrupted(ctx) from None
    except BaseException:
        ctx.tracker.end_run(ctx.parent_id, "FAILED")
        raise
    finish(ctx)
    return StudyOutcome(study=ctx.study, store=store, parent_run_id=ctx.parent_id, experiment_id=ctx.experiment_id,
                        new_trials=len(ctx.study.get_trials(deepcopy=False)) - before, data=data)
