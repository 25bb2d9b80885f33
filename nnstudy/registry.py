"""A trial's MLflow Model in the MLflow Model Registry, with the alias ``champion`` on it.

``register`` makes (or reuses) the model version of a trial's logged model, tags it with the study,
trial, metric and value it came from, and points ``champion`` at it; ``models:/NAME@champion`` is
then what ``mlflow models serve`` and ``mlflow.pyfunc.load_model`` take. Registering the same
trial again reuses its version, so the command is safe to repeat.
"""

from __future__ import annotations

import shlex
from typing import Any

from nnstudy.contract import (
    CHAMPION,
    VERSION_METRIC,
    VERSION_RUN,
    VERSION_STUDY,
    VERSION_TRIAL,
    VERSION_VALUE,
    TrialRecord,
)
from nnstudy.errors import StudyNotFoundError, UserInputError
from nnstudy.records import StudyRecords
from nnstudy.spec import name_problem
from nnstudy.store import absolute_sqlite, default_store


def check_name(name: str, field: str = "--name") -> None:
    """Exit 2 (before anything is written) for a name the registry or a models:/ URI cannot hold."""
    problem = name_problem(name, "registered model")
    if problem:
        raise UserInputError(f"{field} {problem}")


def registered(records: StudyRecords, name: str, *, trial: int | None = None) -> dict[str, Any]:
    """Register the model of ``trial`` (default: the best trial) as ``name`` and point ``champion`` at it.

    Returns name, version, alias, the trial, its value and ``models:/NAME@champion``.

    Raises:
        UserInputError: a bad name; an unknown trial; a trial without a logged MLflow Model.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    check_name(name)
    rec = records.with_model(trial)
    if not rec.model_uri:
        raise StudyNotFoundError(f"trial {rec.number} of study {records.name!r} kept its model as a bundle of an "
                                 "older nnstudy, not as an MLflow Model; allowed: a trial of a study run since")
    uri = absolute_sqlite(records.store.tracking_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        with default_store(uri):  # MLflow resolves the models:/ source through the default store
            version = _version_of(client, name, rec) or _create_version(client, name, rec, records)
            client.set_registered_model_alias(name, CHAMPION, version)
    except MlflowException as err:
        if err.error_code == "INVALID_PARAMETER_VALUE":
            raise UserInputError(f"--name {name!r}: MLflow refused it: {err.message}") from None
        raise
    return {"name": name, "version": int(version), "alias": CHAMPION, "study": records.name, "trial": rec.number,
            "value": rec.value, "run_id": rec.run_id, "model_uri": f"models:/{name}@{CHAMPION}",
            "source": rec.model_uri, "serve": serve_command(uri, f"models:/{name}@{CHAMPION}")}


def serve_command(tracking_uri: str, model_uri: str, port: int = 5001) -> str:
    """The shell command that serves ``model_uri`` from this store with MLflow's scoring server."""
    return (f"MLFLOW_TRACKING_URI={shlex.quote(tracking_uri)} mlflow models serve -m {shlex.quote(model_uri)} "
            f"--env-manager local --port {port}")


def champion_trial(records: StudyRecords, name: str) -> int | None:
    """The trial of this study that ``name@champion`` points at (None: none, or another study's)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = absolute_sqlite(records.store.tracking_uri)
    try:
        found = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    if found.tags.get(VERSION_STUDY) != records.name:
        return None
    return int(found.tags[VERSION_TRIAL]) if VERSION_TRIAL in found.tags else None


def _version_of(client: Any, name: str, rec: TrialRecord) -> str | None:
    """The version already registered from this trial's run, if any."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    for version in client.search_model_versions(f"name = '{name}' and run_id = '{rec.run_id}'"):
        if version.source == rec.model_uri or version.tags.get(VERSION_TRIAL) == str(rec.number):
            return str(version.version)
    return None


def _create_version(client: Any, name: str, rec: TrialRecord, records: StudyRecords) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags={VERSION_STUDY: records.name},
                                       description=f"Best models of the nnstudy study {records.name!r}.")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    model_id = str(rec.model_uri).removeprefix("models:/")
    made = client.create_model_version(
        name, source=rec.model_uri, run_id=rec.run_id, model_id=model_id,
        tags={VERSION_STUDY: records.name, VERSION_TRIAL: str(rec.number), VERSION_METRIC: records.metric(),
              VERSION_VALUE: repr(rec.value), VERSION_RUN: str(rec.run_id)},
        description=f"Trial {rec.number} of study {records.name!r}: " + ", ".join(
            f"{n} = {v}" for n, v in zip(records.objectives(), rec.values or (rec.value,))) + ".")
    return str(made.version)
