"""Opening an existing study and its MLflow records, for the commands that read a study
(trials, best, report, predict, reproduce, sync). Imports neither Keras nor TensorFlow."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from nnstudy.contract import STUDY_PARENT_RUN, TrialRecord, run_id_of
from nnstudy.errors import StudyNotFoundError
from nnstudy.pareto import front, is_multi, objective_names
from nnstudy.storage import make_storage, study_names
from nnstudy.store import Store, resolve_store

if TYPE_CHECKING:
    from nnstudy.spec import StudySpec
    from nnstudy.tracking import Tracker


@dataclass
class StudyRecords:
    """An existing study: the Optuna study, where it lives, and its MLflow parent run.

    The MLflow client is opened on first use (``tracker``, ``client``): importing MLflow and opening
    its store costs seconds, and ``nnstudy best`` or ``nnstudy trials`` need only the Optuna storage."""

    study: optuna.Study
    store: Store
    parent_run_id: str | None
    opened_tracker: Tracker | None = field(default=None, repr=False)

    @property
    def tracker(self) -> Tracker:
        if self.opened_tracker is None:
            from nnstudy.tracking import Tracker

            self.opened_tracker = Tracker(self.store.tracking_uri, self.store.artifact_root)
        return self.opened_tracker

    @property
    def client(self) -> Any:
        return self.tracker.client

    @property
    def name(self) -> str:
        return str(self.study.study_name)

    def raw_spec(self) -> dict[str, Any]:
        """The spec the study was run with, as logged on its parent run (plain data, not validated)."""
        if not self.parent_run_id:
            raise StudyNotFoundError(f"study {self.name!r} has no MLflow parent run in {self.store.tracking_uri}")
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(self.parent_run_id, "study/spec.json", tmp)
            raw: dict[str, Any] = json.loads(Path(path).read_text())
        return raw

    def spec(self) -> StudySpec:
        """The spec the study was run with, validated (a spec with ``[model].layers`` imports Keras)."""
        from nnstudy.spec import parse_spec

        return parse_spec(self.raw_spec())

    def backend(self) -> str:
        """The Keras backend the study was run with (to set before Keras is imported)."""
        return str(self.raw_spec().get("train", {}).get("backend") or "tensorflow")

    def metric(self) -> str:
        """The study metric, as logged on the parent run (``val_loss`` when the parent run is missing).
        Read from the run's parameters, not the spec, so that reading a study never loads Keras."""
        if not self.parent_run_id:
            return "val_loss"
        return str(self.client.get_run(self.parent_run_id).data.params.get("metric") or self.spec().study.metric)

    def run_id(self, trial: optuna.trial.FrozenTrial) -> str | None:
        return run_id_of(trial, self.study.user_attrs)

    def record(self, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        return TrialRecord.from_trial(trial, self.study.user_attrs)

    def with_model(self, number: int | None = None) -> TrialRecord:
        """The record of a trial (default: the best) that kept its model; exit 2 saying why one has none."""
        rec = self.record(self.trial(number))
        if not rec.model_logged or rec.run_id is None:
            why = "" if rec.state == "COMPLETE" else f" (it is {rec.state}: only complete trials keep models)"
            raise StudyNotFoundError(f"trial {rec.number} of study {self.name!r} has no saved model{why}; allowed: "
                                     "a trial that kept one (see [study].keep_models; `nnstudy trials` lists them)")
        return rec

    def trial(self, number: int | None = None, run_id: str | None = None) -> optuna.trial.FrozenTrial:
        """A trial by number or MLflow run id; the best trial when neither is given (one query of the
        storage: the trials are read only to find one by number or run id)."""
        if run_id is not None:
            for t in self.study.get_trials(deepcopy=False):
                if self.run_id(t) == run_id:
                    return t
            raise StudyNotFoundError(f"no trial of study {self.name!r} has MLflow run {run_id!r}")
        if number is not None:
            trials = self.study.get_trials(deepcopy=False)
            for t in trials:
                if t.number == number:
                    return t
            raise StudyNotFoundError(f"study {self.name!r} has no trial {number}; allowed: 0..{len(trials) - 1}")
        if is_multi(self.study):
            numbers = ", ".join(str(t.number) for t in front(self.study)) or "(none complete yet)"
            raise StudyNotFoundError(f"study {self.name!r} has several objectives and no single best trial; "
                                     f"allowed: --trial N, a trial of its Pareto front: {numbers}")
        try:
            return self.study.best_trial
        except ValueError:
            raise StudyNotFoundError(f"study {self.name!r} has no complete trial yet") from None

    def objectives(self) -> list[str]:
        """The names of the study's objectives (the metric alone for a study of one)."""
        return objective_names(self.study, self.metric())

    def reproduce_command(self, trial_number: int) -> str:
        """The shell command that reproduces ``trial_number`` of this study."""
        return self.store.reproduce_command(self.name, trial_number)


def load_records(study_name: str | None = None, *, storage: str | None = None,
                 tracking_uri: str | None = None) -> StudyRecords:
    """Open an existing study. With no name, the storage must hold exactly one study."""
    store = resolve_store(storage, tracking_uri)
    store.check_files(reading=True)  # both stores exist and are what they claim: nothing is created or migrated
    store.open_read_only()  # a store on a read-only mount is read all the same
    rdb = make_storage(store.storage, create=False)
    names = study_names(rdb)
    if study_name is None:
        if len(names) != 1:
            raise StudyNotFoundError(f"{store.storage} holds {len(names)} studies; choose one with --study-name: "
                                     + (", ".join(names) or "(none)"))
        study_name = names[0]
    if study_name not in names:
        raise StudyNotFoundError(f"--study-name {study_name!r}: no such study in {store.storage}; "
                                 f"allowed: {', '.join(names) or '(none)'}")
    study = optuna.load_study(study_name=study_name, storage=rdb)
    return StudyRecords(study=study, store=store, parent_run_id=study.user_attrs.get(STUDY_PARENT_RUN))
