"""The Optuna side of a study: the RDB storage (heartbeats, retries of dead workers' trials),
creating or loading the study, and repairing trials left RUNNING by a dead process."""

from __future__ import annotations

import copy
import datetime
import json
import os
import platform
import time
import warnings
from collections.abc import Collection, Container, Iterable
from typing import TYPE_CHECKING, Any, cast

import optuna
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from nnstudy.contract import (
    ATTR_FAIL_REASON,
    ATTR_HOST,
    ATTR_PID,
    STUDY_EXPERIMENT,
    STUDY_TRIAL_VALUE,
    TAG_FAIL_REASON,
    run_id_of,
)
from nnstudy.errors import SpecError, StoreError
from nnstudy.store import absolute_sqlite, commit_without_fsync

if TYPE_CHECKING:
    from nnstudy.spec import StudySpec
    from nnstudy.tracking import Tracker

#: heartbeat settings used when no spec is at hand (reading a study); the spec's [study] fields win
DEFAULT_HEARTBEAT_INTERVAL_S = 20
DEFAULT_HEARTBEAT_GRACE_S = 60


class RetryDeadTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's re-run of a dead worker's trial (same parameters), without the dead trial's user
    attributes: its run id, pid or ``fail_reason`` must not pass for the re-run's own."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bare = copy.copy(trial)
        bare.user_attrs = {}
        super().__call__(study, bare)


class ReadingStorage(optuna.storages.RDBStorage):
    """The RDB storage of the commands that read a study: a study's trials are read as plain rows, one
    query per table, and built into the same ``FrozenTrial``s Optuna builds. Optuna reads them as ORM
    objects, one per trial, parameter, attribute and value (some 30,000 at a thousand trials, a second
    of ``nnstudy trials``), and parses each parameter's distribution again per trial. It takes the place of a
    private method of Optuna's and reads Optuna's tables: where another Optuna version names them otherwise (or
    calls the method otherwise), Optuna's own reader is used."""

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        try:
            return self._read_rows(*args, **kwargs)
        except (AttributeError, ImportError, TypeError):
            return super()._get_trials(*args, **kwargs)

    def _read_rows(self, study_id: int, states: Container[TrialState] | None, included_trial_ids: set[int],
                   trial_id_greater_than: int) -> list[FrozenTrial]:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        trial = models.TrialModel
        where = [trial.study_id == study_id]
        if states is not None:
            where.append(trial.state.in_(list(cast(Iterable[TrialState], states))))
        if trial_id_greater_than > -1:  # Optuna's cache asks again for what it has not seen finished
            newer = trial.trial_id > trial_id_greater_than
            unfinished = [i for i in included_trial_ids if i <= trial_id_greater_than]
            where.append(sa.or_(newer, trial.trial_id.in_(unfinished)) if unfinished else newer)
        with self.engine.connect() as conn:
            if conn.execute(sa.select(models.StudyModel.study_id).where(
                    models.StudyModel.study_id == study_id)).first() is None:
                raise KeyError(f"No study with study_id {study_id} exists.")

            def rows(model: Any, *columns: Any) -> Iterable[Any]:  # a child table's rows of the study's trials
                return conn.execute(sa.select(model.trial_id, *columns).join(trial, trial.trial_id == model.trial_id)
                                    .where(*where))

            wanted = {r[0]: r for r in conn.execute(sa.select(
                trial.trial_id, trial.number, trial.state, trial._datetime_start_utc, trial._datetime_complete_utc)
                .where(*where).order_by(trial.trial_id))}
            if not wanted:  # nothing new since the last read: the plots read the study's trials again and again
                return []
            kids: dict[str, dict[int, list[Any]]] = {name: {tid: [] for tid in wanted}
                                                     for name in ("param", "value", "user", "system", "step")}
            for name, found in (
                    ("param", rows(models.TrialParamModel, models.TrialParamModel.param_id,
                                   models.TrialParamModel.param_name, models.TrialParamModel.param_value,
                                   models.TrialParamModel.distribution_json)),
                    ("value", rows(models.TrialValueModel, models.TrialValueModel.objective,
                                   models.TrialValueModel.value, models.TrialValueModel.value_type)),
                    ("user", rows(models.TrialUserAttributeModel, models.TrialUserAttributeModel.key,
                                  models.TrialUserAttributeModel.value_json)),
                    ("system", rows(models.TrialSystemAttributeModel, models.TrialSystemAttributeModel.key,
                                    models.TrialSystemAttributeModel.value_json)),
                    ("step", rows(models.TrialIntermediateValueModel, models.TrialIntermediateValueModel.step,
                                  models.TrialIntermediateValueModel.intermediate_value,
                                  models.TrialIntermediateValueModel.intermediate_value_type))):
                for row in found:
                    if row[0] in wanted:
                        kids[name][row[0]].append(row[1:])
        parsed: dict[str, BaseDistribution] = {}  # a study's few distinct distributions, parsed once

        def distribution(text: str) -> BaseDistribution:
            if text not in parsed:
                parsed[text] = json_to_distribution(text)
            return parsed[text]

        out = []
        for tid, (_, number, state, start, complete) in wanted.items():
            stored = kids["value"][tid]
            values: list[float] | None = None
            if stored:
                values = [0.0] * len(stored)
                for objective, value, kind in stored:
                    values[objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
            params = sorted(kids["param"][tid], key=lambda p: p[0])
            out.append(FrozenTrial(
                number=number, state=state, value=None, values=values, datetime_start=_local(start),
                datetime_complete=_local(complete),
                params={name: distribution(text).to_external_repr(value) for _, name, value, text in params},
                distributions={name: distribution(text) for _, name, _, text in params},
                user_attrs={key: json.loads(text) for key, text in kids["user"][tid]},
                system_attrs={key: json.loads(text) for key, text in kids["system"][tid]},
                intermediate_values={step: models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
                    value, kind) for step, value, kind in kids["step"][tid]},
                trial_id=tid))
        return out


def _local(utc: datetime.datetime | None) -> datetime.datetime | None:
    """A stored trial time (naive UTC) as Optuna gives it: naive local time."""
    return None if utc is None else utc.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None)


def make_storage(url: str, *, max_retries: int = 1, heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL_S,
                 heartbeat_grace: int = DEFAULT_HEARTBEAT_GRACE_S, create: bool = True) -> optuna.storages.BaseStorage:
    """RDB storage with heartbeats (trials of dead workers are failed, then re-run up to
    ``max_retries`` times) and a patient SQLite lock. ``create=False`` (reading a study) never makes
    the schema, and reads the trials in bulk (:class:`ReadingStorage`)."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
        commit_without_fsync(absolute_sqlite(url))
    else:
        engine_kwargs["pool_pre_ping"] = True
    last: Exception | None = None
    for attempt in range(5):  # workers starting together race to create the schema: retry
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = RetryDeadTrial(max_retry=max_retries)
                kind = optuna.storages.RDBStorage if create else ReadingStorage
                return kind(absolute_sqlite(url), engine_kwargs=engine_kwargs,
                            heartbeat_interval=heartbeat_interval, grace_period=heartbeat_grace,
                            heartbeat_stale_trial_callback=retry, skip_table_creation=not create)
        except Exception as err:  # sqlalchemy raises many kinds for a bad URL or an unreachable server
            last = err
            if "UNIQUE constraint" not in str(err) and "already exists" not in str(err) and "locked" not in str(err):
                break
            time.sleep(0.2 * (attempt + 1))
    raise StoreError(f"--storage {url!r}: cannot open the Optuna storage: {str(last).splitlines()[0]}") from None


def storage_for(spec: StudySpec, url: str) -> optuna.storages.BaseStorage:
    """:func:`make_storage` with the spec's retry and heartbeat settings."""
    s = spec.study
    return make_storage(url, max_retries=s.max_retries, heartbeat_interval=s.heartbeat_interval,
                        heartbeat_grace=s.heartbeat_grace)


def open_study(spec: StudySpec, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, bool]:
    """Create the study or load it (resume); its direction must match the spec.
    Returns the study and whether this call created it (exactly one process does)."""
    from nnstudy.sampling import ProcessSampler, make_pruner

    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions,
                                    pruner=make_pruner(spec), sampler=ProcessSampler(spec))
        created = True
        if spec.multi_objective:  # the names readers show (plots, tables) without the spec
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(spec.objectives)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=spec.name, storage=storage, pruner=make_pruner(spec),
                                  sampler=ProcessSampler(spec))
        created = False
    stored = [d.name.lower() for d in study.directions]
    if len(stored) != len(spec.directions):
        raise SpecError(spec.path, "[study].objectives", f"{spec.objectives!r}, but study {spec.name!r} in the "
                        f"storage was created with {len(stored)} objective(s) ({', '.join(stored)}); allowed: "
                        f"{len(stored)} objective(s), or another [study].name / --study-name")
    if stored != spec.directions and spec.multi_objective:
        raise SpecError(spec.path, "[study].directions", f"{spec.directions!r}, but study {spec.name!r} in the "
                        f"storage was created with {stored!r}; allowed: the same directions, or another "
                        "[study].name / --study-name")
    _same_trial_value(spec, study, created)
    if study.directions[0].name.lower() != spec.direction:
        raise SpecError(spec.path, "[study].direction", f"{spec.direction!r}, but study {spec.name!r} in the "
                        f"storage was created with {study.directions[0].name.lower()!r}; allowed: the same "
                        "direction, or another [study].name / --study-name")
    return study, created


def _same_trial_value(spec: StudySpec, study: optuna.Study, created: bool) -> None:
    """A trial's value is an aggregate over ``[study].repeats`` seeds: a resumed study must mean the same by it,
    or the sampler would rank a lucky single seed against means of three. The creator records it; a study
    created before repeats existed (no record) was of one seed."""
    how = spec.study.aggregate if spec.study.repeats > 1 else "mean"
    if created:
        study.set_user_attr(STUDY_TRIAL_VALUE, {"repeats": spec.study.repeats, "aggregate": how})
        return
    stored = study.user_attrs.get(STUDY_TRIAL_VALUE)
    if not isinstance(stored, dict):
        if spec.study.repeats == 1 or not study.get_trials(deepcopy=False):
            return  # an older study of one seed, or one whose creator has not written its record yet
        stored = {"repeats": 1, "aggregate": "mean"}
    if stored.get("repeats") != spec.study.repeats:
        raise SpecError(spec.path, "[study].repeats", f"{spec.study.repeats}, but the trials of study {spec.name!r} "
                        f"in the storage are worth {stored.get('repeats')} seed(s) each; allowed: "
                        f"{stored.get('repeats')}, or another [study].name / --study-name")
    if stored.get("aggregate") != how:
        raise SpecError(spec.path, "[study].aggregate", f"{how!r}, but the trials of study {spec.name!r} in the "
                        f"storage are valued by the {stored.get('aggregate')!r} of their repeats; allowed: "
                        f"{stored.get('aggregate')!r}, or another [study].name / --study-name")


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """The names of the studies in a storage (their trials are not read)."""
    return optuna.study.get_all_study_names(storage)


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
    hosts are failed once their heartbeat is older than the grace period. Either way the trial's
    ``fail_reason`` is ``worker-died`` and it is re-run (same parameters and seed) up to
    ``[study].max_retries`` times. Returns the numbers of the trials whose records were repaired.
    """
    storage = study._storage
    host = platform.node()
    callback = None
    if isinstance(storage, optuna.storages._heartbeat.BaseHeartbeat):
        callback = storage.get_heartbeat_stale_trial_callback()
    grace = getattr(storage, "grace_period", None) or DEFAULT_HEARTBEAT_GRACE_S
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get(ATTR_PID)
        dead = t.user_attrs.get(ATTR_HOST) == host and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid)
        # a trial whose process never wrote its pid (its first write found the disk full) and never beat:
        # its process writes the pid within milliseconds of making it, so one older than the grace is dead
        ownerless = pid is None and t.datetime_start is not None and \
            (now - t.datetime_start).total_seconds() > grace and not _has_heartbeat(storage, t._trial_id)
        if (dead or ownerless) and _fail(storage, t._trial_id, "worker-died") and callback is not None:
            callback(study, storage.get_trial(t._trial_id))  # the same retry as for a stale heartbeat
    if isinstance(storage, optuna.storages._heartbeat.BaseHeartbeat) and \
            optuna.storages._heartbeat.is_heartbeat_enabled(storage):
        # the trials whose heartbeat is too old: named before Optuna fails (and retries) them, to record why
        stale = storage._get_stale_trial_ids(study._study_id)
        for trial_id in stale:
            storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, "worker-died")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    return sorted(set(_end_open_runs(study, tracker, failed)) | set(_end_orphan_runs(study, tracker, failed)))


def _has_heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> bool:
    """Whether a trial's heartbeat was ever recorded (then Optuna's stale-heartbeat check covers it)."""
    rdb = getattr(storage, "_backend", storage)  # (Optuna wraps its RDB storage in a cache)
    if not isinstance(rdb, optuna.storages.RDBStorage) or rdb.heartbeat_interval is None:
        return False
    try:
        from optuna.storages._rdb.models import TrialHeartbeatModel

        session = rdb.scoped_session()
        try:
            return TrialHeartbeatModel.where_trial_id(trial_id, session) is not None
        finally:
            session.close()
    except Exception:  # Optuna's private model moved: leave such a trial to the heartbeat check
        return True


def _end_orphan_runs(study: optuna.Study, tracker: Tracker, failed: list[optuna.trial.FrozenTrial]) -> list[int]:
    """End the MLflow runs still RUNNING of failed trials that never learnt their run's id: the process stopped
    (a full disk, a kill) between making the run and writing its id into the Optuna trial."""
    experiment = study.user_attrs.get(STUDY_EXPERIMENT)
    if not failed or not isinstance(experiment, str):
        return []
    by_number = {t.number: t for t in failed}
    repaired = []
    for number, run_ids in tracker.running_trial_runs(experiment, study.study_name).items():
        trial = by_number.get(number)
        if trial is None:
            continue
        reason = str(trial.user_attrs.get(ATTR_FAIL_REASON) or "worker-died")
        for run_id in run_ids:
            tracker.end_run(run_id, "FAILED" if reason == "disk-full" else "KILLED", {TAG_FAIL_REASON: reason})
        repaired.append(number)
    return repaired


def end_interrupted_trials(study: optuna.Study, tracker: Tracker, pids: Collection[int], *,
                           reason: str = "interrupted", trial_ids: Collection[int] = ()) -> list[int]:
    """After an interrupt: the trials of these processes (of this host, all ended now) that are still
    RUNNING become FAIL (``reason``: ``interrupted``, or ``disk-full``; not re-run), and their MLflow runs
    still RUNNING become KILLED (FAILED for a full disk). ``trial_ids``: trials the calling process started
    itself, also those it could not write its pid into (a full disk). Returns the numbers of the trials repaired."""
    storage = study._storage
    host = platform.node()
    ids = set(trial_ids)
    mine = [t for t in study.get_trials(deepcopy=False) if t._trial_id in ids or (
        t.user_attrs.get(ATTR_HOST) == host and t.user_attrs.get(ATTR_PID) in pids)]
    repaired = [t.number for t in mine if t.state == optuna.trial.TrialState.RUNNING
                and _fail(storage, t._trial_id, reason)]
    ended = _end_open_runs(study, tracker, [storage.get_trial(t._trial_id) for t in mine])
    return sorted(set(repaired) | set(ended))


def _fail(storage: optuna.storages.BaseStorage, trial_id: int, reason: str) -> bool:
    """Mark a RUNNING trial FAIL with its reason; False when another process finished it first."""
    try:
        storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, reason)
        return bool(storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def _end_open_runs(study: optuna.Study, tracker: Tracker, trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    """End as KILLED the MLflow runs still RUNNING of failed trials whose process died or was interrupted
    (failures nnstudy recorded itself ended their run already)."""
    from nnstudy.tracking import is_missing_run

    repaired = []
    for t in trials:
        reason = t.user_attrs.get(ATTR_FAIL_REASON)
        run_id = run_id_of(t, study.user_attrs)
        if t.state != optuna.trial.TrialState.FAIL or not run_id or reason not in (None, *OPEN_RUN_REASONS):
            continue
        try:
            if tracker.run_status(run_id) == "RUNNING":
                tracker.end_run(run_id, "FAILED" if reason == "disk-full" else "KILLED",
                                {TAG_FAIL_REASON: str(reason or "worker-died")})
                repaired.append(t.number)
        except Exception as err:
            if not is_missing_run(err):  # a run deleted from MLflow has nothing to end
                raise
    return repaired


#: fail reasons whose trial may have left its MLflow run RUNNING
OPEN_RUN_REASONS = ("worker-died", "interrupted", "disk-full")
