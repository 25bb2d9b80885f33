"""The study spec: a TOML file that defines a whole study, validated before anything runs.

``load_spec(path)`` reads and validates a spec and returns a :class:`StudySpec`. Every error
is a :class:`~nnstudy.errors.SpecError` naming the file, the field, the value and what is
allowed. Spec files are data, never code: they are parsed with :mod:`tomllib` only.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nnstudy.errors import SpecError
from nnstudy.space import PARAMETERS, SearchSpace, did_you_mean

Task = Literal["binary", "multiclass", "regression"]
BUILTIN_SOURCES = ("pass_fail", "grades", "digits", "breast_cancer")

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


class StudySection(_Section):
    """``[study]``: what to optimize and how."""

    name: Optional[str] = Field(default=None, min_length=1)  # defaults to the spec file's stem
    direction: Optional[Literal["minimize", "maximize"]] = None  # defaults from the metric
    metric: str = "val_loss"
    n_trials: int = Field(default=20, gt=0)
    timeout: Optional[float] = Field(default=None, gt=0)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "asha", "percentile", "none"] = "median"
    seed: int = Field(default=42, ge=0, le=2**31 - 2)
    keep_models: Literal["best", "all", "none"] = "best"
    max_retries: int = Field(default=1, ge=0, le=10)  # re-runs of a trial whose worker died
    trials_per_process: int = Field(default=25, ge=0)  # a fresh worker process after this many (0: never)

    @model_validator(mode="after")
    def _metric_and_direction(self) -> StudySection:
        known = sorted({m for task in METRICS for m in metric_names(task)})
        if self.metric not in known:
            raise ValueError(f"metric|{self.metric!r} is not a per-epoch metric"
                             f"{did_you_mean(self.metric, known)}; allowed: {', '.join(known)}")
        if self.direction is not None and self.direction != default_direction(self.metric):
            raise ValueError(f"direction|{self.direction!r} with metric {self.metric!r}; allowed: "
                             f"{default_direction(self.metric)!r} (or leave direction out)")
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


class TrainSection(_Section):
    """``[train]``: how each trial trains."""

    max_epochs: int = Field(default=100, gt=0, le=100_000)
    early_stopping_patience: int = Field(default=10, gt=0)
    restore_best_weights: bool = True
    min_delta: float = Field(default=0.0, ge=0)
    deterministic: bool = True  # TensorFlow op determinism: a re-run gives the same curve
    backend: Literal["tensorflow", "jax", "torch"] = "tensorflow"  # Keras backend, set before Keras loads


class StudySpec(BaseModel):
    """A validated study spec. ``path`` is the file it came from (relative sources resolve against it)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)

    study: StudySection = Field(default_factory=StudySection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    search: dict[str, Any] = Field(default_factory=dict)
    enqueue: list[dict[str, Any]] = Field(default_factory=list)
    path: Optional[Path] = Field(default=None, exclude=True)

    @property
    def name(self) -> str:
        if self.study.name:
            return self.study.name
        return self.path.stem if self.path else "nnstudy"

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return self.study.direction or default_direction(self.study.metric)

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.parse(self.search, self.path)

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
        data["search"] = self.space.to_dict()
        source = Path(self.data.source)
        if not self.data.is_builtin and not source.is_absolute():
            data["data"]["source"] = str((self.base_dir / source).resolve())
        return data


_SECTIONS = ("study", "data", "train", "search", "enqueue")


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
        model = {"study": StudySection, "data": DataSection, "train": TrainSection}.get(str(loc[0]))
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
    space = SearchSpace.parse(spec.search, file)  # validates every search key
    for i, params in enumerate(spec.enqueue):
        space.check_params(params, file, f"[[enqueue]][{i}]")
    if spec.study.sampler == "grid":
        space.grid(file)
    if spec.data.task != "auto":
        spec.check_task(spec.data.task)
    if not spec.data.is_builtin and spec.data.target is None:
        raise SpecError(file, "[data].target", f"missing for file source {spec.data.source!r}; "
                        "allowed: the name of the target column")
    return spec


def load_spec(path: str | Path, *, overrides: dict[str, dict[str, Any]] | None = None) -> StudySpec:
    """Read and validate a spec file. ``overrides`` (section -> key -> value) win over the file.

    Raises:
        SpecError: the file is missing, is not valid TOML, or a field is invalid.
    """
    path = Path(path)
    if not path.exists():
        raise SpecError(path, "", "no such file")
    if path.is_dir():
        raise SpecError(path, "", "is a directory; allowed: a .toml spec file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise SpecError(path, "", f"not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise SpecError(path, "", "not a UTF-8 text file; allowed: a .toml spec file") from None
    for section, values in (overrides or {}).items():
        if values:
            table = raw.setdefault(section, {})
            if not isinstance(table, dict):
                raise SpecError(path, f"[{section}]", f"{table!r} is not a table; allowed: a [{section}] table")
            table.update(values)
    return parse_spec(raw, path=path.resolve())


__all__ = ["StudySpec", "load_spec", "parse_spec", "metric_names", "default_direction", "PARAMETERS"]
