"""The study's MLflow parent run: made once, the best trial written on it after every trial,
the study files and the report logged on it, ended when the last trial of the study ends."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from nnstudy.contract import (
    ATTR_BEST_EPOCH,
    BEST_PARAM_PREFIX,
    STUDY_EXPERIMENT,
    STUDY_PARENT_RUN,
    TAG_BEST_RUN,
    TAG_BEST_TRIAL,
    TAG_NOTE,
    TAG_OBJECTIVES,
    TAG_OPTUNA_STORAGE,
    TAG_PARETO_TRIALS,
    TAG_SPEC_FILE,
    TrialRecord,
    run_id_of,
)
from nnstudy.data import PreparedData
from nnstudy.pareto import directions, front, front_rows, front_text, is_multi, objective_names, values_of
from nnstudy.spec import StudySpec
from nnstudy.store import Store
from nnstudy.tracking import DatasetRecord, Tracker

#: seconds a process that did not create the study waits for its creator to make the parent run
PARENT_WAIT_S = 60.0


def open_parent(spec: StudySpec, store: Store, study: optuna.Study, *, created: bool, tracker: Tracker,
                experiment_id: str, data: PreparedData, env: dict[str, str]) -> str:
    """The study's one parent run (made by the process that created the study; the others wait
    for it). A new parent run gets the spec, the data summary and the preprocessing under ``study/``."""
    known = study.user_attrs.get(STUDY_PARENT_RUN)
    if known is None and not created:  # the process that created the study is creating its parent run
        known = _wait_for_parent(study)
    parent_id = tracker.parent_run(
        experiment_id, spec.name, known,
        params={"sampler": spec.study.sampler, "pruner": spec.study.pruner, "metric": spec.study.metric,
                "direction": spec.direction, "seed": spec.study.seed, "data_source": spec.data.source,
                **({"objectives": ",".join(spec.objectives), "directions": ",".join(spec.directions)}
                   if spec.multi_objective else {})},
        tags={**env, TAG_OPTUNA_STORAGE: store.storage, TAG_SPEC_FILE: str(spec.path or "")},
    )
    if known != parent_id:
        study.set_user_attr(STUDY_PARENT_RUN, parent_id)
        study.set_user_attr(STUDY_EXPERIMENT, experiment_id)
        _log_study_files(tracker, parent_id, spec, data)
        tracker.log_dataset(parent_id, DatasetRecord.of_data(data))
    return parent_id


def _wait_for_parent(study: optuna.Study, timeout_s: float = PARENT_WAIT_S) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        parent = optuna.load_study(study_name=study.study_name, storage=study._storage).user_attrs.get(STUDY_PARENT_RUN)
        if parent:
            return str(parent)
        time.sleep(0.5)
    return None  # its creator died before making one: look for, or create, the parent ourselves


def _log_study_files(tracker: Tracker, run_id: str, spec: StudySpec, data: PreparedData) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
        Path(tmp, "data.json").write_text(json.dumps(data.summary(), indent=2))
        Path(tmp, "preprocessing.json").write_text(data.preprocessing.to_json())
        tracker.log_artifacts(run_id, Path(tmp), "study")


def update_parent_run(tracker: Tracker, parent_id: str, best: optuna.trial.FrozenTrial,
                      study_attrs: dict[str, Any]) -> None:
    """The best value so far (a point per call: the optimization history) and the link to the best child."""
    tracker.log_summary(parent_id, {"best_value": float(best.value or 0.0)}, {
        TAG_BEST_RUN: run_id_of(best, study_attrs) or "", TAG_BEST_TRIAL: str(best.number),
        **{f"{BEST_PARAM_PREFIX}{k}": str(v) for k, v in best.params.items()}})


def update_parent(tracker: Tracker, parent_id: str, study: optuna.Study) -> None:
    """After a trial: the best trial (one objective) or the Pareto front (several) on the parent run;
    nothing before a trial completes."""
    if not is_multi(study):
        try:
            best = study.best_trial
        except ValueError:
            return
        update_parent_run(tracker, parent_id, best, study.user_attrs)
        return
    trials = front(study)
    if trials:
        update_parent_front(tracker, parent_id, study, trials)


def update_parent_front(tracker: Tracker, parent_id: str, study: optuna.Study,
                        trials: list[optuna.trial.FrozenTrial]) -> None:
    """Several objectives: the front's trial numbers (tag ``nnstudy.pareto_trials``), its size (a point per
    call) and its table (``pareto/front.csv``: trial, each objective, best epoch, run id, parameters)."""
    names = objective_names(study, "value")
    tracker.log_summary(parent_id, {"pareto_front_size": float(len(trials))},
                        {TAG_PARETO_TRIALS: front_text(trials), TAG_OBJECTIVES: ",".join(names)})
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        pd.DataFrame(front_rows(study, trials, names)).to_csv(Path(tmp, "front.csv"), index=False)
        tracker.log_artifacts(parent_id, Path(tmp), "pareto")


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


def study_note(study: optuna.Study, metric: str, reproduce: Callable[[int], str] | None = None) -> str:
    """The parent run's description (Markdown, shown on its page in the MLflow UI): trial counts by state,
    the best trial with a link to its run, its value, best epoch and parameters, and how to reproduce it."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name.lower() for t in trials)
    lines = [f"**nnstudy study `{study.study_name}`**: {len(trials)} trials "
             f"({', '.join(f'{n} {state}' for state, n in sorted(counts.items()))}).", ""]
    if is_multi(study):
        return "\n".join([*lines, *_front_note(study, metric, reproduce)])
    try:
        best = study.best_trial
    except ValueError:
        return "\n".join([*lines, "No trial has completed yet."])
    run_id = run_id_of(best, study.user_attrs)
    experiment = study.user_attrs.get(STUDY_EXPERIMENT)
    trial = f"[trial {best.number}](#/experiments/{experiment}/runs/{run_id})" if run_id and experiment else \
        f"trial {best.number}"
    epoch = best.user_attrs.get(ATTR_BEST_EPOCH)
    repeated = TrialRecord.from_trial(best)  # seed repeats: the spread of the best trial's repeats
    found = repeated.spread
    spread = f" (repeats: {found[0]:.6g} ± {found[1]:.2g}, n={len(repeated.repeat_values)})" if found else ""
    at = f" at epoch {epoch}" if epoch is not None else ""
    lines += [f"Best: {trial}, {metric} = {best.value:.6g}{spread}{at}.", "", "| parameter | value |", "|---|---|",
              *(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in best.params.items())]
    if reproduce is not None:
        lines += ["", f"Reproduce: `{reproduce(best.number)}`"]
    return "\n".join(lines)


def _front_note(study: optuna.Study, metric: str, reproduce: Callable[[int], str] | None) -> list[str]:
    """Several objectives: the Pareto front as a Markdown table, each trial linked to its run."""
    trials = front(study)
    if not trials:
        return ["No trial has completed yet."]
    names = objective_names(study, metric)
    experiment = study.user_attrs.get(STUDY_EXPERIMENT)
    dirs = ", ".join(f"{n} ({d})" for n, d in zip(names, directions(study)))
    lines = [f"Pareto front: {len(trials)} trial(s) that no other trial beats in every objective: {dirs}.", "",
             "| trial | " + " | ".join(names) + " | best epoch | parameters |",
             "|---|" + "---|" * len(names) + "---|---|"]
    for t in trials:
        run_id = run_id_of(t, study.user_attrs)
        link = f"[{t.number}](#/experiments/{experiment}/runs/{run_id})" if run_id and experiment else str(t.number)
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        lines.append(f"| {link} | " + " | ".join(f"{v:.6g}" for v in values_of(t) or ()) +
                     f" | {t.user_attrs.get(ATTR_BEST_EPOCH, '')} | {params} |")
    if reproduce is not None:
        lines += ["", f"Reproduce one: `{reproduce(trials[0].number)}` (any trial number of the front)"]
    return lines


def finish_parent(study: optuna.Study, tracker: Tracker, parent_id: str, metric: str,
                  reproduce: Callable[[int], str] | None = None) -> None:
    """Log the report and the description; end the parent run unless other processes still run trials
    of the study. ``reproduce``: the command that reproduces a trial, for the description."""
    log_report(study, tracker, parent_id, metric)
    tracker.log_summary(parent_id, {}, {TAG_NOTE: study_note(study, metric, reproduce)})
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        tracker.end_run(parent_id, "FINISHED")
