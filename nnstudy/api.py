"""The library's front door: run a study, open it again, and read, reproduce and use its results.

Every ``nnstudy`` command is a few lines over one of these functions, so a notebook can do
all the command line does::

    from nnstudy import api, load_spec
    outcome = api.run_study(load_spec("studies/pass_fail.toml"), show_progress=False)
    records = api.open_study("pass_fail")
    api.trials_frame(records).head()
    api.best(records)["params"]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnstudy.contract import TrialRecord
from nnstudy.errors import UserInputError

if TYPE_CHECKING:
    import pandas as pd

    from nnstudy.records import StudyRecords
    from nnstudy.reproduction import Reproduction
    from nnstudy.runner import StudyOutcome
    from nnstudy.spec import StudySpec


def run_study(spec: StudySpec, **options: Any) -> StudyOutcome:
    """Run (or resume) a study; see :func:`nnstudy.runner.run_study` for the options."""
    from nnstudy.runner import run_study as run

    outcome = run(spec, **options)
    name = spec.study.register_as
    best = outcome.best_trial
    if name and best is not None:
        outcome.registered = _register_if_new(outcome, name, best.number)
    return outcome


def _register_if_new(outcome: StudyOutcome, name: str, best: int) -> dict[str, Any] | None:
    """``[study].register_as``: register the best trial's model unless ``name@champion`` is it already.
    A study that ran is never failed for it: a model that cannot be registered is a warning."""
    import sys

    from nnstudy.records import StudyRecords
    from nnstudy.registry import champion_trial, registered
    from nnstudy.tracking import Tracker

    records = StudyRecords(outcome.study, outcome.store, outcome.parent_run_id,
                           Tracker(outcome.store.tracking_uri, outcome.store.artifact_root))
    try:
        if champion_trial(records, name) == best:
            return None
        return registered(records, name)
    except Exception as err:  # the trials are safe either way; `nnstudy register` can do it later
        print(f"warning: the best model was not registered as {name!r}: {err}", file=sys.stderr)
        return None


def register(records: StudyRecords, name: str, *, trial: int | None = None) -> dict[str, Any]:
    """Register a trial's MLflow Model (default: the best trial's) in the MLflow Model Registry as
    ``name`` and point the alias ``champion`` at it; see :func:`nnstudy.registry.registered`."""
    from nnstudy.registry import registered

    return registered(records, name, trial=trial)


def validate(spec: StudySpec) -> dict[str, Any]:
    """Check a spec, its data and its model (built for the largest configuration of the space and
    run on two rows, without training) without writing anything; returns a summary."""
    from nnstudy.data import prepare
    from nnstudy.model import check_model

    data = prepare(spec)
    model = check_model(spec, data.input_shape, data.task, data.n_classes, data.x_train[:2])
    return {"study": spec.name, "direction": spec.direction, "metric": spec.study.metric,
            **({"objectives": spec.objectives, "directions": spec.directions} if spec.multi_objective else {}),
            "searched": spec.space.searched, "data": data.summary(), "model": model}


def open_study(study_name: str | None = None, *, storage: str | None = None,
               tracking_uri: str | None = None) -> StudyRecords:
    """An existing study and its MLflow records. Defaults: the only study in ``./mlruns``."""
    from nnstudy.records import load_records

    return load_records(study_name, storage=storage, tracking_uri=tracking_uri)


def trials_frame(records: StudyRecords, *, diagnosis: bool = True, sort: str = "value",
                 top: int | None = None) -> pd.DataFrame:
    """One row per trial (see :func:`nnstudy.report.trials_frame`), sorted by ``sort`` (best first
    for ``value``, the default), the first ``top`` rows (default: all). ``diagnosis=False`` skips
    reading curves from MLflow for trials that have no recorded diagnosis."""
    from nnstudy.report import trials_frame as frame_of

    frame = frame_of(records.study, connect=(lambda: records.client) if diagnosis else None)
    if sort not in frame.columns:
        raise UserInputError(f"--sort {sort!r}: no such column; allowed: {', '.join(frame.columns)}")
    ascending = not (sort == "value" and records.study.directions[0].name == "MAXIMIZE")
    frame = frame.sort_values(sort, ascending=ascending, na_position="last", kind="stable")
    return frame.head(top) if top is not None else frame


def best(records: StudyRecords) -> dict[str, Any]:
    """The best trial: number, value, params, best and stopped epoch, seed, run id, the URI of its MLflow
    Model (None when it kept none) and the command that reproduces it.

    A study of several objectives has no single best trial: its Pareto front instead, ``front`` (each
    trial as above, with ``values``: objective -> value), with ``objectives`` and ``directions``."""
    from nnstudy.pareto import directions, front, is_multi

    if is_multi(records.study):
        names = records.objectives()
        if not front(records.study):
            from nnstudy.errors import StudyNotFoundError

            raise StudyNotFoundError(f"study {records.name!r} has no complete trial yet")
        return {"study": records.name, "objectives": names, "directions": directions(records.study),
                "front": [{**_trial_info(records, TrialRecord.from_trial(t, records.study.user_attrs)),
                           "values": dict(zip(names, t.values))} for t in front(records.study)],
                "tracking_uri": records.store.tracking_uri}
    rec = TrialRecord.from_trial(records.trial(), records.study.user_attrs)
    return {"study": records.name, "trial": rec.number, "value": rec.value, "params": rec.params,
            "best_epoch": rec.best_epoch, "stopped_epoch": rec.stopped_epoch, "seed": rec.seed,
            "mlflow_run_id": rec.run_id, "model_uri": rec.model_uri, "tracking_uri": records.store.tracking_uri,
            **_repeats_info(records, rec), "reproduce": records.reproduce_command(rec.number)}


def _repeats_info(records: StudyRecords, rec: TrialRecord) -> dict[str, Any]:
    """Seed repeats ([study].repeats > 1): the best trial's spread (``spread`` "mean ± sd (n=K)", ``mean``,
    ``sd``, ``repeat_values``) and ``close_call``: its lead over the runner-up and whether that lead is
    within one standard deviation (``within_one_sd``)."""
    if rec.spread is None:
        return {}
    import optuna

    from nnstudy.report import close_call, spread_text

    others = [t for t in records.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if t.value is not None and t.number != rec.number]
    maximize = records.study.direction == optuna.study.StudyDirection.MAXIMIZE
    others.sort(key=lambda t: float(t.value or 0.0), reverse=maximize)
    runner_up = TrialRecord.from_trial(others[0]) if others else None
    return {"spread": spread_text(rec), "mean": rec.spread[0], "sd": rec.spread[1],
            "repeat_values": list(rec.repeat_values), "close_call": close_call(rec, runner_up)}


def _trial_info(records: StudyRecords, rec: TrialRecord) -> dict[str, Any]:
    return {"trial": rec.number, "value": rec.value, "params": rec.params, "best_epoch": rec.best_epoch,
            "stopped_epoch": rec.stopped_epoch, "seed": rec.seed, "mlflow_run_id": rec.run_id,
            "model_uri": rec.model_uri, "reproduce": records.reproduce_command(rec.number)}


def reproduce(records: StudyRecords, *, trial: int | None = None, run_id: str | None = None) -> Reproduction:
    """Re-train a trial (default: the best) through the same trial pipeline and compare the curves."""
    from nnstudy.reproduction import reproduce as run

    if trial is not None and run_id is not None:
        raise UserInputError("give --trial or --run-id, not both")
    return run(records, trial_number=trial, run_id=run_id)


def predict(records: StudyRecords, input_file: Path, *, trial: int | None = None) -> pd.DataFrame:
    """Predictions of a trial's saved model (default: the best trial's) for the raw rows of a
    CSV or Parquet file (or the array ``x`` of a ``.npz``): the original class labels, and the
    probabilities of classes."""
    import tempfile

    from nnstudy.mlflow_model import trial_bundle
    from nnstudy.files import regular_file
    from nnstudy.tables import read_table

    rec = records.with_model(trial)
    regular_file(Path(input_file), field="--input", allowed="a .csv or .parquet file with the columns the model was "
                 "trained on, or a .npz with its input array x")
    rows: Any
    if Path(input_file).suffix.lower() == ".npz":
        from nnstudy.arrays import load_npz_inputs

        rows = load_npz_inputs(Path(input_file))
    else:
        rows = read_table(Path(input_file))
    with tempfile.TemporaryDirectory() as tmp:
        return trial_bundle(records.client, str(rec.run_id), rec.model_uri, Path(tmp)).predict(rows, input_file)


def report(records: StudyRecords, out_dir: Path, *, top: int = 5) -> list[Path]:
    """Write the study's plots, trials.csv and best_params.json into ``out_dir``; returns the files."""
    from nnstudy.report import write_report

    return write_report(records.study, out_dir, client=records.client, metric=records.metric(), top=top)


def sync(records: StudyRecords) -> list[int]:
    """Write the MLflow records kept while the tracking server was unreachable (safe to repeat)."""
    from nnstudy.sync import sync_records
    from nnstudy.tracking import check_reachable

    check_reachable(records.store.tracking_uri)
    from nnstudy.contract import ATTR_PENDING, STUDY_PARENT_PENDING

    pending = records.study.user_attrs.get(STUDY_PARENT_PENDING) or any(
        ATTR_PENDING in t.user_attrs for t in records.study.get_trials(deepcopy=False))
    if pending:  # there is something to write: a read-only or full store is refused before the first write
        records.store.check_writable()
    return sync_records(records.study, records.tracker, metric=records.metric())
