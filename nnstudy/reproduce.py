"""Reproducing a trial: re-train its configuration with the same seed, data split and epochs,
log the new run next to the original, and compare the per-epoch curves."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

from nnstudy.data import prepare
from nnstudy.objective import run_id_of
from nnstudy.records import StudyRecords
from nnstudy.tracking import TAG_PARENT, TAG_ROLE, TAG_STUDY, TAG_TRIAL, environment_tags
from nnstudy.training import configure_determinism, device_name, train

TAG_REPRODUCTION_OF = "nnstudy.reproduction_of"
TAG_REPRODUCED_BY = "nnstudy.reproduced_by"


@dataclass
class Reproduction:
    """The outcome of ``reproduce``: curves side by side and what differs from the original."""

    trial_number: int
    original_run_id: str
    run_id: str
    metric: str
    original: dict[int, float]  # epoch -> study metric, as logged by the original run
    reproduced: dict[int, float]
    max_abs_diff: float
    environment_diffs: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (original, now)

    def within(self, tolerance: float) -> bool:
        return math.isfinite(self.max_abs_diff) and self.max_abs_diff <= tolerance

    def rows(self) -> list[tuple[int, float | None, float | None, float | None]]:
        epochs = sorted(set(self.original) | set(self.reproduced))
        out = []
        for e in epochs:
            a, b = self.original.get(e), self.reproduced.get(e)
            out.append((e, a, b, abs(a - b) if a is not None and b is not None else None))
        return out


def reproduce(records: StudyRecords, *, trial_number: int | None = None, run_id: str | None = None) -> Reproduction:
    """Re-train a trial (default: the best) and compare its curve with the original run's."""
    trial = records.trial(trial_number, run_id)
    original_id = run_id_of(trial, records.study.user_attrs) or ""
    spec = records.spec()
    metric = spec.study.metric
    data = prepare(spec)
    client = records.client
    original = client.get_run(original_id)
    params = spec.space.suggest(optuna.trial.FixedTrial(trial.params))
    seed = int(trial.user_attrs["seed"])
    configure_determinism(spec.train.deterministic)
    env = environment_tags()
    device = device_name()
    now_tags = {**env, "nnstudy.device": device, "nnstudy.data_digest": data.digest}
    diffs = {k: (original.data.tags.get(k, "?"), v) for k, v in now_tags.items()
             if k.startswith(("nnstudy.version.", "nnstudy.device", "nnstudy.data_digest", "nnstudy.keras_backend"))
             and original.data.tags.get(k) != v}
    for key in [k for k in original.data.tags if k.startswith("nnstudy.version.") and k not in now_tags]:
        diffs[key] = (original.data.tags[key], "not installed")

    new = client.create_run(
        original.info.experiment_id, run_name=f"trial-{trial.number:04d}-reproduction",
        tags={**now_tags, TAG_STUDY: spec.name, TAG_ROLE: "reproduction", TAG_TRIAL: str(trial.number),
              TAG_REPRODUCTION_OF: original_id,
              **({TAG_PARENT: records.parent_run_id} if records.parent_run_id else {})},
    )
    new_id = str(new.info.run_id)
    tracker = records.tracker
    tracker.log_summary(new_id, {}, params={**params, "seed": seed})
    from nnstudy.tracking import TrialRun

    run = TrialRun(client, new_id)
    try:
        result = train(data, params, spec.train, metric=metric, direction=spec.direction, seed=seed,
                       on_epoch=lambda epoch, logs: run.log_epoch(epoch, logs) or False)
    except BaseException:
        run.flush()
        tracker.end_run(new_id, "FAILED")
        raise
    run.flush()
    original_curve = {m.step: m.value for m in client.get_metric_history(original_id, metric)}
    new_curve = {i + 1: v for i, v in enumerate(result.history.get(metric, []))}
    common = set(original_curve) & set(new_curve)
    if common and set(original_curve) == set(new_curve):
        max_diff = max(abs(original_curve[e] - new_curve[e]) for e in common)
    else:
        max_diff = math.inf  # different number of epochs: not a reproduction
    tracker.log_summary(new_id, {"best_epoch": result.best_epoch, "stopped_epoch": result.stopped_epoch,
                                 f"best_{metric}": result.value(metric), "max_abs_diff": max_diff
                                 if math.isfinite(max_diff) else -1.0, **result.test_metrics})
    tracker.end_run(new_id, "FINISHED")
    client.set_tag(original_id, TAG_REPRODUCED_BY, new_id)
    return Reproduction(trial_number=trial.number, original_run_id=original_id, run_id=new_id, metric=metric,
                        original=original_curve, reproduced=new_curve, max_abs_diff=max_diff,
                        environment_diffs=diffs)


def format_command(records: StudyRecords, trial_number: int, extra: dict[str, Any] | None = None) -> str:
    """The shell command that reproduces ``trial_number`` of this study."""
    parts = ["nnstudy", "reproduce", "--study-name", records.study.study_name, "--trial", str(trial_number)]
    if records.store.storage != "sqlite:///mlruns/optuna.db":
        parts += ["--storage", records.store.storage]
    if records.store.tracking_uri != "sqlite:///mlruns/mlflow.db":
        parts += ["--tracking-uri", records.store.tracking_uri]
    return " ".join(parts)
