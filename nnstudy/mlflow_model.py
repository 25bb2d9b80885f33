"""A trained model as an MLflow Model: logged on its trial's run, loaded back as a bundle.

The MLflow Model (named ``model``, a pyfunc built from the code in :mod:`nnstudy.pyfunc_model`)
holds the bundle of :mod:`nnstudy.export` (``model.keras`` + ``preprocessing.json``) among its
artifacts, a copy of nnstudy's code (so it loads wherever its pinned requirements are installed),
a signature of the raw input columns and the predictions, and a few raw rows as input example.
``mlflow.pyfunc.load_model(uri).predict(rows)`` therefore returns what ``nnstudy predict`` returns.
Nothing is pickled.
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nnstudy.contract import ATTR_MODEL_LOGGED, ATTR_MODEL_URI, MODEL_NAME, TAG_STUDY, TAG_TRIAL
from nnstudy.export import Bundle, download_bundle, save_bundle
from nnstudy.store import default_store

if TYPE_CHECKING:
    import keras
    import optuna

    from nnstudy.data import PreparedData
    from nnstudy.export import AnyPreprocessing
    from nnstudy.objective import ResultHook, TrialLike
    from nnstudy.spec import StudySpec
    from nnstudy.tracking import Tracker
    from nnstudy.training import TrainResult

PACKAGE_DIR = Path(__file__).resolve().parent


#: what the model's code needs when nnstudy runs from a checkout without being installed (no metadata to read)
MODEL_NEEDS = ["keras", "mlflow", "numpy", "pandas", "scikit-learn", "pyarrow", "pydantic", "rich", "click"]
TENSORFLOW = ("tensorflow", "tensorflow-cpu")


@functools.cache  # per process: the installed versions and the Keras backend do not change
def requirements() -> list[str]:
    """nnstudy's own requirements (those of this platform), pinned to the versions installed here, with
    the Keras backend in use instead of TensorFlow when it is another: what ``mlflow models serve`` installs
    for a fresh environment."""
    from importlib.metadata import PackageNotFoundError, requires, version

    import keras
    from packaging.requirements import Requirement

    try:
        texts = requires("nnstudy") or []
    except PackageNotFoundError:
        texts = MODEL_NEEDS + ["tensorflow-cpu"]
    names: list[str] = []
    for text in texts:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else ""))
    backend = keras.backend.backend()
    if backend != "tensorflow":  # the model runs on its own backend: TensorFlow is not needed to load it
        names = [n for n in names if n not in TENSORFLOW] + [backend]
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={version(name.split('[')[0])}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned


def _code_copy(destination: Path) -> Path:
    """nnstudy's source files (no caches) under ``destination/nnstudy``."""
    target = destination / "nnstudy"
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


@contextmanager
def _no_bytecode() -> Iterator[None]:
    """MLflow imports the model's code file from the folder it uploads: no ``__pycache__`` may land in it."""
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


@contextmanager
def _serving_check(validate: bool) -> Iterator[None]:
    """Without ``validate``, MLflow's check that a logged model loads back and predicts its input example
    is skipped: MLflow's pyfunc flavor has no switch for it, so its private check is a no-op meanwhile
    (where MLflow moved it, the check runs as ever). The model and its input example are saved the same."""
    import mlflow.models.utils as utils

    check = getattr(utils, "_validate_serving_input", None)
    if validate or check is None:
        yield
        return
    utils._validate_serving_input = lambda *args, **kwargs: None
    try:
        yield
    finally:
        utils._validate_serving_input = check


def signature_of(bundle: Bundle, example: pd.DataFrame | np.ndarray) -> Any:
    """The model's signature: the raw input columns (numbers as ``any``: nnstudy takes integers and
    decimals alike and checks them itself, as ``nnstudy predict`` does; text as ``string``) or the input
    array's shape and type, and the prediction columns."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    # MLflow's hint that integer columns cannot hold missing values: numbers are "any" here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        inferred = infer_signature(example, bundle.predict(example))
    if not isinstance(example, pd.DataFrame):
        return inferred
    numbers = (DataType.long, DataType.integer, DataType.double, DataType.float)
    anything = AnyType()  # type: ignore[no-untyped-call]
    inputs = Schema([ColSpec(anything, spec.name, spec.required) if spec.type in numbers else spec
                     for spec in inferred.inputs.inputs])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs)


def log_model(tracker: Tracker, run_id: str, model: keras.Model, preprocessing: AnyPreprocessing,
              info: dict[str, Any], example: pd.DataFrame | np.ndarray | None, *, signature: Any = None,
              validate: bool = True) -> str:
    """Log the MLflow Model ``model`` on the run; returns its URI (``models:/<model id>``). ``signature``:
    the one :func:`signature_of` gave for an earlier model of the same preprocessing and task (the same
    columns in and out), else inferred here. ``validate``: MLflow loads the logged model back and predicts
    its input example (about 0.4 s; a failure is MLflow's warning, not an error)."""
    import mlflow.pyfunc
    from mlflow.models import Model

    from nnstudy import pyfunc_model

    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = save_bundle(model, preprocessing, Path(tmp, "bundle"), info)
        if signature is None and example is not None:
            signature = signature_of(Bundle(model, preprocessing, info), example)
        # made here, in the run's experiment (Model.log alone would put it in the default experiment)
        run = tracker.client.get_run(run_id)
        made = tracker.client.create_logged_model(
            run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id, model_type="nnstudy",
            params={k: v for k, v in run.data.params.items()},
            tags={TAG_STUDY: str(info.get("study", "")), TAG_TRIAL: str(info.get("trial", ""))})
        try:
            with default_store(tracker.tracking_uri), warnings.catch_warnings(), _no_bytecode(), \
                    _serving_check(validate):
                # the hint of signature_of, given again when MLflow saves the input example
                warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column")
                logged = Model.log(
                    artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id,
                    model_id=made.model_id, python_model=str(Path(pyfunc_model.__file__)),
                    artifacts={pyfunc_model.BUNDLE_ARTIFACT: str(bundle_dir)},
                    code_paths=[str(_code_copy(Path(tmp, "code")))], signature=signature, input_example=example,
                    pip_requirements=list(requirements()),
                    metadata={k: info[k] for k in ("study", "trial", "metric", "value") if k in info})
        except BaseException:  # no half-logged model is left READY-less in the UI: it is marked FAILED
            from mlflow.entities import LoggedModelStatus

            tracker.client.finalize_logged_model(made.model_id, LoggedModelStatus.FAILED)
            raise
    return str(logged.model_uri)


def load_bundle(tracking_uri: str, model_uri: str, destination: Path) -> Bundle:
    """Download an MLflow Model that nnstudy logged and load its bundle (Keras' safe mode)."""
    import mlflow.artifacts

    from nnstudy import pyfunc_model

    with default_store(tracking_uri):  # models:/ URIs are resolved through the default (tracking) store
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination)))
    return Bundle.load(local / "artifacts" / pyfunc_model.BUNDLE_ARTIFACT)


def trial_bundle(client: Any, run_id: str, model_uri: str | None, destination: Path) -> Bundle:
    """A trial's bundle: from its MLflow Model (``model_uri``), else from the run's ``model/`` artifacts
    (studies made before models were logged as MLflow Models)."""
    if model_uri:
        return load_bundle(client.tracking_uri, model_uri, destination)
    return download_bundle(client, run_id, destination)


def model_keeper(spec: StudySpec, study: optuna.Study, tracker: Tracker, data: PreparedData,
                 parent_run_id: str | None = None) -> ResultHook:
    """A result hook that logs the trained model of every trial (``[study].keep_models = "all"``) or of
    each new best (``"best"``, the default) as an MLflow Model on the trial's run; ``"none"`` logs none.
    The study's parent run lists each such model among its logged models too (step = trial number).
    The models of one study differ only in their weights: the signature is inferred, and MLflow's check
    that a model loads and predicts its input example runs, for the first model this process logs."""
    first: list[Any] = []  # the signature of the first model logged, once it is

    def keep(trial: TrialLike, run_id: str, result: TrainResult) -> None:
        if spec.study.keep_models == "none":
            return
        value = result.value(spec.study.metric)
        if spec.study.keep_models == "best" and spec.multi_objective:
            # several objectives: every trial that is on the Pareto front when it ends keeps its model, so
            # each trial of the final front has one (a trial later dominated keeps it too)
            from optuna.trial import TrialState

            from nnstudy.pareto import on_front, values_of

            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            others = [v for v in (values_of(t) for t in done) if v is not None]
            if not on_front((value, *result.objective_values(spec.objectives)[1:]), others, spec.directions):
                return
        elif spec.study.keep_models == "best":
            try:
                best: float | None = study.best_value
            except ValueError:
                best = None
            if best is not None and not (value < best if spec.direction == "minimize" else value > best):
                return
        info = {"study": spec.name, "trial": trial.number, "params": trial.params, "best_epoch": result.best_epoch,
                "keras_backend": spec.train.backend, "metric": spec.study.metric, "value": value,
                "data_digest": data.digest}
        if first:
            signature = first[0]
        else:
            signature = (signature_of(Bundle(result.model, data.preprocessing, info), data.example)
                         if data.example is not None else None)
        uri = log_model(tracker, run_id, result.model, data.preprocessing, info, data.example, signature=signature,
                        validate=not first)
        first[:] = [signature]
        trial.set_user_attr(ATTR_MODEL_URI, uri)
        trial.set_user_attr(ATTR_MODEL_LOGGED, True)
        if parent_run_id is not None:
            tracker.log_model_output(parent_run_id, uri.removeprefix("models:/"), step=trial.number)

    return keep
