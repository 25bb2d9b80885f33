"""Finding an existing study and its MLflow records (for trials, best, reproduce, report, predict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from nnstudy.errors import StudyNotFoundError
from nnstudy.objective import run_id_of
from nnstudy.runner import ATTR_PARENT_RUN, make_storage
from nnstudy.spec import StudySpec, parse_spec
from nnstudy.store import Store, resolve_store
from nnstudy.tracking import Tracker


@dataclass
class StudyRecords:
    """An existing study: the Optuna study, where it lives, and its MLflow parent run."""

    study: optuna.Study
    store: Store
    tracker: Tracker
    parent_run_id: str | None

    @property
    def client(self) -> Any:
        return self.tracker.client

    def spec(self) -> StudySpec:
        """The spec the study was run with, as logged on its parent run."""
        import json
        import tempfile
        from pathlib import Path

        if not self.parent_run_id:
            raise StudyNotFoundError(f"study {self.study.study_name!r} has no MLflow parent run in "
                                     f"{self.store.tracking_uri}")
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(self.parent_run_id, "study/spec.json", tmp)
            raw = json.loads(Path(path).read_text())
        return parse_spec(raw)

    def trial(self, number: int | None = None, run_id: str | None = None) -> optuna.trial.FrozenTrial:
        """A trial by number or MLflow run id; the best trial when neither is given."""
        trials = self.study.get_trials(deepcopy=False)
        if run_id is not None:
            for t in trials:
                if run_id_of(t, self.study.user_attrs) == run_id:
                    return t
            raise StudyNotFoundError(f"no trial of study {self.study.study_name!r} has MLflow run {run_id!r}")
        if number is not None:
            for t in trials:
                if t.number == number:
                    return t
            raise StudyNotFoundError(f"study {self.study.study_name!r} has no trial {number}; "
                                     f"allowed: 0..{len(trials) - 1}")
        try:
            return self.study.best_trial
        except ValueError:
            raise StudyNotFoundError(f"study {self.study.study_name!r} has no complete trial yet") from None


def load_records(study_name: str | None = None, *, storage: str | None = None,
                 tracking_uri: str | None = None) -> StudyRecords:
    """Open an existing study. With no name, the storage must hold exactly one study."""
    store = resolve_store(storage, tracking_uri)
    for path in store.local_files():
        if not path.exists():
            raise StudyNotFoundError(f"no study store at {path}; run `nnstudy run SPEC` first "
                                     "or pass --storage/--tracking-uri")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rdb = make_storage(store.storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(rdb, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            raise StudyNotFoundError(f"{store.storage} holds {len(names)} studies; choose one with --study-name: "
                                     + (", ".join(names) or "(none)"))
        study_name = names[0]
    if study_name not in names:
        raise StudyNotFoundError(f"--study-name {study_name!r}: no such study in {store.storage}; "
                                 f"allowed: {', '.join(names) or '(none)'}")
    study = optuna.load_study(study_name=study_name, storage=rdb)
    tracker = Tracker(store.tracking_uri, store.artifact_root)
    return StudyRecords(study=study, store=store, tracker=tracker,
                        parent_run_id=study.user_attrs.get(ATTR_PARENT_RUN))
