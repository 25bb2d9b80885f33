"""Writing to MLflow what was kept in the Optuna storage while the tracking server was down."""

from __future__ import annotations

import optuna

from nnstudy.contract import ATTR_PENDING, STUDY_EXPERIMENT, STUDY_PARENT_PENDING, STUDY_PARENT_RUN, study_run_id_key
from nnstudy.parent import finish_parent, update_parent
from nnstudy.recorder import RunTarget, write_pending
from nnstudy.tracking import Tracker


def sync_records(study: optuna.Study, tracker: Tracker, *, metric: str) -> list[int]:
    """Write the records of trials that ran while MLflow was unreachable (and the parent's
    summary). Safe to repeat. Returns the numbers of the trials written."""
    attrs = study.user_attrs
    experiment_id, parent_id = attrs.get(STUDY_EXPERIMENT), attrs.get(STUDY_PARENT_RUN)
    if not experiment_id or not parent_id:
        return []
    target = RunTarget(tracker, str(experiment_id), str(parent_id), study.study_name)
    written = []
    for t in study.get_trials(deepcopy=False):
        pending = t.user_attrs.get(ATTR_PENDING)
        if not pending or attrs.get(study_run_id_key(t.number)):
            continue
        run_id = write_pending(target, t.number, pending)
        study.set_user_attr(study_run_id_key(t.number), run_id)
        written.append(t.number)
    if written or study.user_attrs.get(STUDY_PARENT_PENDING):
        update_parent(tracker, parent_id, study)  # nothing before a trial completes
        finish_parent(study, tracker, parent_id, metric)
        study.set_user_attr(STUDY_PARENT_PENDING, False)
    return written
