"""The study spec: a TOML file that defines a whole study, validated before anything runs.

``load_spec(path)`` reads and validates a spec and returns a :class:`StudySpec`. Every error
is a :class:`~nnstudy.errors.SpecError` naming the file, the field, the value and what is
allowed. Spec files are data, never code: they are parsed with :mod:`tomllib` only.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nnstudy.errors import SpecError
from nnstudy.files import file_problem
from nnstudy.space import PARAMETERS, SearchSpace, did_you_mean

if TYPE_CHECKING:
    from nnstudy.builder import BuilderRef
    from nnstudy.layers import LayerTemplate

Task = Literal["binary", "multiclass", "regression"]
BUILTIN_SOURCES = ("pass_fail", "grades", "digits", "breast_cancer", "digits_images")
ARRAY_SOURCES = ("digits_images",)  # built-in sets that are arrays (images), not tables

#: per-epoch Keras metrics a study can optimize, by task
METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("loss", "accuracy"),
    "multiclass": ("loss", "accuracy"),
    "regression": ("loss", "mae"),
}
_MAXIMIZED = ("accuracy",)


def metric_names(task: str) -> list[str]:
    """All metric names (training and ``val_``) logged per epoch for ``task``."""
    base = METRICS[task]
    return [*base, *(f"val_{m}" for m in base)]


def default_direction(metric: str) -> Literal["minimize", "maximize"]:
    """``maximize`` for accuracy-like metrics, ``minimize`` for losses and errors."""
    return "maximize" if metric.removeprefix("val_") in _MAXIMIZED else "minimize"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


#: a study name: it names the MLflow experiment and its artifact folder, and is pasted into commands
STUDY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_NAME = 100


def name_problem(name: str, what: str) -> str | None:
    """Why ``name`` cannot name a study or a registered model (None when it can)."""
    if STUDY_NAME.fullmatch(name) and len(name) <= MAX_NAME and ".." not in name:
        return None
    shown = f"{name[:60]!r}{'...' if len(name) > 60 else ''}"
    return (f"{shown} is not a {what} name (it names a folder or a models:/ URI and is pasted into commands); "
            f"allowed: 1 to {MAX_NAME} letters, digits, '_', '-' and '.', starting with a letter, digit or '_', "
            "without '..'")


#: most seed repeats of one configuration ([study].repeats)
MAX_REPEATS = 100


class StudySection(_Section):
    """``[study]``: what to optimize and how."""

    name: Optional[str] = Field(default=None, min_length=1)  # defaults to the spec file's stem
    direction: Optional[Literal["minimize", "maximize"]] = None  # defaults from the metric
    metric: str = "val_loss"
    n_trials: int = Field(default=20, gt=0)
    timeout: Optional[float] = Field(default=None, gt=0)
    sampler: Literal["tpe", "random", "grid", "nsga2"] = "tpe"
    pruner: Literal["median", "hyperband", "asha", "percentile", "none"] = "median"
    # several objectives: the metric first, then trial measures (n_params, latency_ms); a Pareto front
    objectives: Optional[list[str]] = None
    directions: Optional[list[Literal["minimize", "maximize"]]] = None  # one per objective; default: inferred
    seed: int = Field(default=42, ge=0, le=2**31 - 2)
    keep_models: Literal["best", "all", "none"] = "best"
    max_retries: int = Field(default=1, ge=0, le=10)  # re-runs of a trial whose worker died
    trials_per_process: int = Field(default=0, ge=0)  # a fresh worker process after this many (0: never)
    pruner_startup_trials: int = Field(default=5, ge=0)  # median/percentile: trials before any is pruned
    pruner_warmup_epochs: int = Field(default=5, ge=0)  # median/percentile: epochs before a trial is pruned
    pruner_percentile: float = Field(default=25.0, gt=0, lt=100)  # percentile: keep trials in the best P%
    pruner_reduction_factor: int = Field(default=3, ge=2, le=100)  # asha/hyperband: keep 1/F at each rung
    heartbeat_interval: int = Field(default=20, ge=1, le=3600)  # seconds between a running trial's heartbeats
    heartbeat_grace: int = Field(default=60, ge=2, le=86_400)  # seconds without one before a trial is dead
    register_as: Optional[str] = None  # register the best model under this name at the end (alias champion)
    repeats: int = Field(default=1, ge=1, le=MAX_REPEATS)  # trainings of each configuration, one seed each
    aggregate: Literal["mean", "median", "worst"] = "mean"  # a trial's value from its repeats' best-epoch values

    @model_validator(mode="before")
    @classmethod
    def _objective_defaults(cls, data: Any) -> Any:
        """With several objectives, ``metric`` is the first one and ``pruner`` defaults to ``none``."""
        objectives = data.get("objectives") if isinstance(data, dict) else None
        if isinstance(objectives, list) and len(objectives) > 1 and isinstance(objectives[0], str):
            known = sorted({m for task in METRICS for m in metric_names(task)})
            if objectives[0] not in known:
                raise ValueError(f"objectives|{objectives[0]!r} comes first, but the first objective is the study "
                                 "metric that early stopping watches; allowed: a per-epoch metric first "
                                 f"({', '.join(known)}), then n_params, latency_ms")
            data = {"metric": objectives[0], "pruner": "none", **data}
        return data

    @model_validator(mode="after")
    def _metric_and_direction(self) -> StudySection:
        if self.name is not None and (problem := name_problem(self.name, "study")):
            raise ValueError(f"name|{problem}")
        if self.register_as is not None and (problem := name_problem(self.register_as, "registered model")):
            raise ValueError(f"register_as|{problem}")
        if self.register_as is not None and self.keep_models == "none":
            raise ValueError("register_as|needs a kept model; allowed: keep_models = 'best' or 'all' with it")
        known = sorted({m for task in METRICS for m in metric_names(task)})
        if self.metric not in known:
            raise ValueError(f"metric|{self.metric!r} is not a per-epoch metric"
                             f"{did_you_mean(self.metric, known)}; allowed: {', '.join(known)}")
        if self.direction is not None and self.direction != default_direction(self.metric):
            raise ValueError(f"direction|{self.direction!r} with metric {self.metric!r}; allowed: "
                             f"{default_direction(self.metric)!r} (or leave direction out)")
        if self.heartbeat_grace <= self.heartbeat_interval:
            raise ValueError(f"heartbeat_grace|{self.heartbeat_grace} is not longer than heartbeat_interval = "
                             f"{self.heartbeat_interval}; allowed: a grace period longer than the interval")
        return self

    @model_validator(mode="after")
    def _several_objectives(self) -> StudySection:
        """``objectives``: the metric first, then distinct trial measures; no pruner, no grid, no single best."""
        from nnstudy.pareto import MEASURE_DIRECTIONS, TRIAL_MEASURES

        if self.objectives is None:
            if self.directions is not None:
                raise ValueError("directions|is given without objectives; allowed: leave it out, or list "
                                 "[study].objectives (one direction each)")
            return self
        shown, measures = f"objectives = {self.objectives!r}", ", ".join(TRIAL_MEASURES)
        if len(self.objectives) < 2:
            raise ValueError(f"objectives|{self.objectives!r} names fewer than two objectives; allowed: the metric "
                             f"first, then one or more of {measures} (for one objective use metric)")
        first, *rest = self.objectives
        if first != self.metric:
            raise ValueError(f"metric|{self.metric!r} is not the first of {shown}; allowed: {first!r} "
                             "(or leave metric out)")
        for name in rest:
            if name not in TRIAL_MEASURES:
                known = sorted({m for task in METRICS for m in metric_names(task)})
                what = ("is a per-epoch metric: only the first objective can be one" if name in known else
                        f"is not an objective{did_you_mean(name, [*TRIAL_MEASURES, *known])}")
                raise ValueError(f"objectives|{name!r} {what}; allowed: the metric first, then {measures}")
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives|{shown} names an objective twice; allowed: distinct objectives")
        if self.directions is not None:
            expected = [default_direction(first), *(MEASURE_DIRECTIONS[m] for m in rest)]
            if list(self.directions) != expected:
                raise ValueError(f"directions|{list(self.directions)!r} for {shown}; allowed: {expected!r} "
                                 "(or leave directions out)")
        if self.pruner != "none":
            raise ValueError(f"pruner|{self.pruner!r} with {shown}: Optuna cannot prune a trial of several "
                             "objectives; allowed: 'none' (or leave pruner out)")
        if self.sampler == "grid":
            raise ValueError(f"sampler|'grid' with {shown}; allowed: 'tpe' (multi-objective TPE), 'nsga2' "
                             "(NSGA-II) or 'random'")
        if self.register_as is not None:
            raise ValueError(f"register_as|registers the best model, but {shown} has a Pareto front of them; "
                             "allowed: leave register_as out and register a trial of the front with "
                             "`nnstudy register --trial N`")
        return self


class DataSection(_Section):
    """``[data]``: where the rows come from and how they are split."""

    source: str = Field(default="pass_fail", min_length=1)
    target: Optional[str] = None
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    test_fraction: float = Field(default=0.2, ge=0, lt=1)
    exclude: list[str] = Field(default_factory=list)
    missing: Literal["error", "drop", "mean", "median"] = "error"
    n_samples: int = Field(default=1000, ge=50, le=1_000_000)  # pass_fail / grades only
    seed: int = Field(default=0, ge=0, le=2**31 - 3)  # generates pass_fail / grades; the split uses [study].seed
    delimiter: Optional[Literal[",", ";", "\t", "|", " "]] = None  # CSV: the column separator (default: sniffed)
    decimal: Literal[".", ","] = "."  # CSV: the decimal mark
    x: str = Field(default="x", min_length=1)  # .npz: the inputs array
    y: str = Field(default="y", min_length=1)  # .npz: the labels array
    scale: Literal["auto", "none", "standard", "unit"] = "auto"  # auto: unit for digits_images, else standard

    @model_validator(mode="after")
    def _fractions(self) -> DataSection:
        if self.validation_fraction + self.test_fraction > 0.8:
            raise ValueError(f"test_fraction|validation_fraction + test_fraction = "
                             f"{self.validation_fraction + self.test_fraction:g} leaves too little training "
                             "data; allowed: a sum of at most 0.8")
        return self

    @property
    def is_builtin(self) -> bool:
        return self.source in BUILTIN_SOURCES

    @property
    def is_arrays(self) -> bool:
        """Arrays (``.npz`` or a built-in image set) rather than a table."""
        return self.source in ARRAY_SOURCES or (not self.is_builtin and self.source.lower().endswith(".npz"))


class TrainSection(_Section):
    """``[train]``: how each trial trains."""

    max_epochs: int = Field(default=100, gt=0, le=100_000)
    early_stopping_patience: int = Field(default=10, gt=0)
    restore_best_weights: bool = True
    min_delta: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    deterministic: bool = True  # TensorFlow op determinism: a re-run gives the same curve
    backend: Literal["tensorflow", "jax", "torch"] = "tensorflow"  # Keras backend, set before Keras loads
    exploding_factor: float = Field(default=1000.0, gt=1, le=1e12)  # loss above F x the first epoch's: diverged
    steps_per_execution: int = Field(default=50, ge=1, le=10_000)  # most batches per compiled call (TensorFlow)
    eval_batch_size: int = Field(default=4096, ge=1, le=1_000_000)  # rows per batch when evaluating
    system_metrics: bool = True  # MLflow's system/* metrics (CPU, memory, disk, network, GPU) on every trial run
    system_metrics_interval: float = Field(default=1.0, ge=1, le=3600, allow_inf_nan=False)  # seconds per sample
    checkpoint_every: Optional[int] = Field(default=None, ge=1, le=100_000)  # epochs; a dead worker's trial resumes
    reuse_compiled: bool = True  # TensorFlow: a trial reuses the traced functions of an earlier one of its shapes

    @property
    def checkpoint_warning(self) -> str | None:
        """Why ``checkpoint_every`` (allowed) will never write a checkpoint, or None."""
        if self.checkpoint_every is not None and self.checkpoint_every >= self.max_epochs:
            return (f"[train].checkpoint_every = {self.checkpoint_every} is not below max_epochs = "
                    f"{self.max_epochs}: no trial writes a checkpoint, a retried trial starts from epoch 1")
        return None


class ModelSection(_Section):
    """``[model]``: the network. Without it, the built-in MLP; ``layers`` lists the user's layers;
    ``builder`` names a Keras-Tuner-style ``build(hp)`` function (``"models.py:build"``)."""

    layers: Optional[list[Any]] = None
    builder: Optional[str] = Field(default=None, min_length=1)
    max_layers: int = Field(default=500, ge=1, le=10_000)  # layers after repeats are expanded
    max_params: int = Field(default=50_000_000, ge=1, le=10_000_000_000)  # weights of one model

    @model_validator(mode="after")
    def _one_way(self) -> ModelSection:
        if self.layers is not None and self.builder is not None:
            raise ValueError("builder|both layers and builder are given; allowed: one of them")
        return self


class StudySpec(BaseModel):
    """A validated study spec. ``path`` is the file it came from (relative sources resolve against it)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)

    study: StudySection = Field(default_factory=StudySection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    model: ModelSection = Field(default_factory=ModelSection)
    search: dict[str, Any] = Field(default_factory=dict)
    enqueue: list[dict[str, Any]] = Field(default_factory=list)
    path: Optional[Path] = Field(default=None, exclude=True)

    @property
    def name(self) -> str:
        """``[study].name``, else the spec file's name with every character a study name cannot hold
        replaced by ``-`` (see :data:`STUDY_NAME`)."""
        if self.study.name:
            return self.study.name
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.path.stem).strip("-.") if self.path else ""
        return stem[:MAX_NAME] or "nnstudy"

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return self.study.direction or default_direction(self.study.metric)

    @property
    def objectives(self) -> list[str]:
        """What the study optimizes: ``[study].objectives``, else the metric alone."""
        return list(self.study.objectives) if self.study.objectives else [self.study.metric]

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        """One direction per objective: the metric's, then ``minimize`` for the trial measures."""
        from nnstudy.pareto import MEASURE_DIRECTIONS

        return [self.direction, *(cast(Literal["minimize", "maximize"], MEASURE_DIRECTIONS[m])
                                  for m in self.objectives[1:])]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def checkpoint_warning(self) -> str | None:
        """Why ``[train].checkpoint_every`` (allowed) will never write a checkpoint, or None."""
        if self.train.checkpoint_warning:
            return self.train.checkpoint_warning
        if self.train.checkpoint_every is not None and self.study.repeats > 1:
            return (f"[train].checkpoint_every is ignored with [study].repeats = {self.study.repeats}: trials with "
                    "seed repeats write no checkpoint, a retried trial starts from epoch 1")
        return None

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.parse(self.search, self.path, custom=self.model.layers is not None)

    def layer_template(self) -> LayerTemplate:
        """The checked ``[model].layers`` (imports Keras)."""
        from nnstudy.layers import parse_layers

        return parse_layers(self.model.layers, self.path)

    def builder_ref(self) -> BuilderRef:
        """The checked ``[model].builder`` (its file exists)."""
        from nnstudy.builder import parse_builder_ref

        return parse_builder_ref(str(self.model.builder), self.base_dir, self.path)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def check_task(self, task: str, *, source: str | None = None) -> None:
        """Reject a metric that the task does not log (``val_accuracy`` on a regression)."""
        allowed = metric_names(task)
        if self.study.metric not in allowed:
            raise SpecError(self.path, "[study].metric", f"{self.study.metric!r} is not logged for a {task} task"
                            f"{' (data ' + source + ')' if source else ''}; allowed: {', '.join(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, with the study name and direction resolved (for logging/reproducing)."""
        data = self.model_dump(mode="json")
        data["study"]["name"] = self.name
        data["study"]["direction"] = self.direction
        if self.multi_objective:
            data["study"]["directions"] = self.directions
        data["search"] = self.space.to_dict()
        if self.model.builder is not None:  # a builder's own parameters are its business
            data["search"] = {k: v for k, v in data["search"].items() if k in BUILDER_SEARCH}
        source = Path(self.data.source)
        if not self.data.is_builtin and not source.is_absolute():
            data["data"]["source"] = str((self.base_dir / source).resolve())
        if self.model.builder is not None:
            ref = self.builder_ref()
            data["model"]["builder"] = f"{ref.path}:{ref.function}"
        return data


_SECTIONS = ("study", "data", "train", "model", "search", "enqueue")


def _field_name(loc: tuple[Any, ...]) -> str:
    if not loc:
        return ""
    head, *rest = loc
    if head == "enqueue":
        text = "[[enqueue]]" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest)
        return text
    text = f"[{head}]"
    for part in rest:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _convert(err: ValidationError, file: Any, raw: dict[str, Any]) -> SpecError:
    e = err.errors(include_url=False)[0]
    loc = tuple(e["loc"])
    field = _field_name(loc)
    etype = e["type"]
    if etype == "extra_forbidden":
        name = str(loc[-1])
        if len(loc) == 1:
            return SpecError(file, f"[{name}]", f"unknown section{did_you_mean(name, _SECTIONS)}; "
                             f"allowed: {', '.join(f'[{s}]' for s in _SECTIONS)}")
        sections: dict[str, type[BaseModel]] = {"study": StudySection, "data": DataSection, "train": TrainSection,
                                                "model": ModelSection}
        model = sections.get(str(loc[0]))
        options = list(model.model_fields) if model else []
        return SpecError(file, field, f"unknown key{did_you_mean(name, options)}; allowed: {', '.join(options)}")
    msg = str(e.get("msg", ""))
    if etype == "value_error":
        text = msg.removeprefix("Value error, ")
        key, _, problem = text.partition("|")
        return SpecError(file, f"[{loc[0]}].{key}" if loc else key, problem)
    value = e.get("input")
    if etype == "missing":
        return SpecError(file, field, "missing; it is required")
    return SpecError(file, field, f"{value!r} is not allowed; allowed: {_allowed_text(msg)}")


def _allowed_text(msg: str) -> str:
    text = msg.removeprefix("Input should be ").rstrip(".")
    text = text.replace("a valid integer", "an integer").replace("a valid ", "a ")
    return text


def parse_spec(raw: dict[str, Any], *, path: Path | None = None) -> StudySpec:
    """Validate already-parsed spec data (a TOML document as a dict)."""
    file = path if path is not None else "<spec>"
    for key in raw:
        if key not in _SECTIONS:
            raise SpecError(file, f"[{key}]", f"unknown section{did_you_mean(key, _SECTIONS)}; "
                            f"allowed: {', '.join(f'[{s}]' for s in _SECTIONS)}")
    enqueued = raw.get("enqueue", [])
    if not isinstance(enqueued, list) or not all(isinstance(e, dict) for e in enqueued):
        raise SpecError(file, "[[enqueue]]", f"{enqueued!r} is not an array of tables; allowed: one [[enqueue]] "
                        "table per configuration")
    try:
        spec = StudySpec.model_validate({**raw, "path": path})
    except ValidationError as err:
        raise _convert(err, file, raw) from None
    space = spec.space  # validates every search key
    _check_model(spec, space, file)
    for i, params in enumerate(spec.enqueue):
        space.check_params(params, file, f"[[enqueue]][{i}]")
    if spec.study.sampler == "grid":
        space.grid(file)
    if spec.data.task != "auto":
        spec.check_task(spec.data.task)
    if spec.data.is_arrays:
        if spec.data.target is not None:
            raise SpecError(file, "[data].target", f"{spec.data.target!r} is given for the arrays of "
                            f"{spec.data.source!r}; allowed: leave target out and name the arrays with [data].x/.y")
    elif spec.data.scale not in ("auto", "standard"):
        raise SpecError(file, "[data].scale", f"{spec.data.scale!r} for the table {spec.data.source!r}; allowed: "
                        "'standard' (or 'auto'): table columns are always standardised")
    elif not spec.data.is_builtin and spec.data.target is None:
        raise SpecError(file, "[data].target", f"missing for file source {spec.data.source!r}; "
                        "allowed: the name of the target column")
    return spec


#: [search] names a builder spec may use: those of the optimizer (a builder defines the rest with hp.*)
BUILDER_SEARCH = ("learning_rate", "optimizer", "batch_size")


def _check_model(spec: StudySpec, space: SearchSpace, file: Any) -> None:
    """``$name`` references and custom parameters agree; a builder's search is its own."""
    if spec.model.layers is not None:
        refs = spec.layer_template().references()
        unknown = sorted(refs - set(space.dimensions))
        if unknown:
            raise SpecError(file, "[model].layers", f"'${unknown[0]}' refers to no [search] parameter"
                            f"{did_you_mean(unknown[0], list(space.dimensions))}; allowed: a name defined in "
                            "[search]")
        unused = [n for n in space.custom if n not in refs]
        if unused:
            raise SpecError(file, f"[search].{unused[0]}", f"is used by no layer of [model].layers; allowed: "
                            f"parameters nnstudy knows ({', '.join(PARAMETERS)}) or names the layers use as "
                            f"'${unused[0]}'")
    if spec.model.builder is not None:
        spec.builder_ref()  # the file exists
        extra = [n for n in spec.search if n not in BUILDER_SEARCH]
        if extra:
            raise SpecError(file, f"[search].{extra[0]}", "is not searched with a [model].builder; allowed: "
                            f"{', '.join(BUILDER_SEARCH)} (define the rest in the builder with hp.Int, hp.Choice, ...)")
        if spec.study.sampler == "grid":
            raise SpecError(file, "[study].sampler", "'grid' with a [model].builder: its search space is known only "
                            "while it runs; allowed: 'tpe' or 'random'")


def peek_backend(path: str | Path) -> str | None:
    """The ``[train].backend`` a spec file asks for, read before the spec is validated (the backend is
    chosen before Keras is imported, and validating ``[model].layers`` imports Keras); ``None`` when
    the file cannot say (its errors are reported by :func:`load_spec`)."""
    if file_problem(Path(path), "") is not None:  # never open a FIFO; load_spec says what is wrong
        return None
    try:
        backend = tomllib.loads(Path(path).read_text(encoding="utf-8-sig")).get("train", {}).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return backend if isinstance(backend, str) else None


def load_spec(path: str | Path, *, overrides: dict[str, dict[str, Any]] | None = None) -> StudySpec:
    """Read and validate a spec file. ``overrides`` (section -> key -> value) win over the file.

    Raises:
        SpecError: the file is missing, is not valid TOML, or a field is invalid.
    """
    path = Path(path)
    found = file_problem(path, "a .toml spec file")
    if found is not None:
        raise SpecError(path, "", found[1])
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark, as editors on Windows write, is fine
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(path, "", f"not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise SpecError(path, "", "not a UTF-8 text file; allowed: a .toml spec file") from None
    if not raw and not any((overrides or {}).values()):
        raise SpecError(path, "", "is empty (no table, no key); allowed: a spec with at least one table, e.g. "
                        "[data] source = \"pass_fail\" (see studies/ for examples)")
    for section, values in (overrides or {}).items():
        if values:
            table = raw.setdefault(section, {})
            if not isinstance(table, dict):
                raise SpecError(path, f"[{section}]", f"{table!r} is not a table; allowed: a [{section}] table")
            table.update(values)
    return parse_spec(raw, path=path.resolve())


__all__ = ["StudySpec", "load_spec", "parse_spec", "metric_names", "default_direction", "PARAMETERS"]
