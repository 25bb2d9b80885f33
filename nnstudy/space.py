"""The search space: which hyperparameters exist, what values they take, how a trial samples them.

Every search key in a spec takes a fixed value, a list of choices or a range table
``{ low, high, log = false, step = ... }``. This module turns those raw values into
:class:`Dimension` objects and asks an Optuna trial (or a ``FixedTrial``) for values.
It knows nothing of Keras.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Union

from nnstudy.errors import SpecError

if TYPE_CHECKING:
    import optuna

Scalar = Union[int, float, str, bool]
Params = dict[str, Any]

OPTIMIZERS = ("sgd", "adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "leaky_relu", "swish")


@dataclass(frozen=True)
class ParamDef:
    """One hyperparameter nnstudy knows how to search."""

    kind: Literal["int", "float", "str", "bool"]
    default: Scalar
    doc: str
    check: Callable[[Any], str | None]  # returns what is allowed when the value is not


def _positive(v: Any) -> str | None:
    return None if v > 0 else "a number > 0"


def _at_least(n: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= n else f"an integer >= {n}"


def _one_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else "one of " + ", ".join(options)


def _dropout(v: Any) -> str | None:
    return None if 0.0 <= v < 1.0 else "a rate in [0, 1)"


PARAMETERS: dict[str, ParamDef] = {
    "learning_rate": ParamDef("float", 1e-3, "step size of gradient descent", _positive),
    "optimizer": ParamDef("str", "adam", "optimizer name", _one_of(OPTIMIZERS)),
    "batch_size": ParamDef("int", 32, "rows per mini-batch", _at_least(1)),
    "dropout": ParamDef("float", 0.0, "dropout rate after each hidden layer", _dropout),
    "depth": ParamDef("int", 2, "number of hidden layers (0 = a single perceptron layer)", _at_least(0)),
    "units": ParamDef("int", 32, "units per hidden layer", _at_least(1)),
    "activation": ParamDef("str", "relu", "hidden-layer nonlinearity", _one_of(ACTIVATIONS)),
}


_OPTIONS = {id(PARAMETERS["optimizer"]): OPTIMIZERS, id(PARAMETERS["activation"]): ACTIVATIONS}


@dataclass(frozen=True)
class Fixed:
    value: Scalar


@dataclass(frozen=True)
class Choice:
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    step: float | None = None


Dimension = Union[Fixed, Choice, Range]


def did_you_mean(word: str, options: list[str] | tuple[str, ...]) -> str:
    """Return ``" (did you mean 'X'?)"`` for a near miss, else an empty string."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, (int, float))
    return isinstance(value, str)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value)) and abs(float(value)) < 1e300
    except OverflowError:  # an integer too large for a float
        return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: most points a grid search may have
MAX_GRID_POINTS = 100_000

_KIND_TEXT = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def _check_value(file: Any, field: str, pdef: ParamDef, value: Any) -> None:
    if not _type_ok(pdef.kind, value):
        raise SpecError(file, field, f"{value!r} has the wrong type; allowed: {_KIND_TEXT[pdef.kind]}")
    if pdef.kind in ("int", "float") and not _finite(value):
        raise SpecError(file, field, f"{_short(value)} is not finite; allowed: a finite number")
    allowed = pdef.check(value)
    if allowed:
        hint = did_you_mean(value, _OPTIONS.get(id(pdef), ())) if isinstance(value, str) else ""
        raise SpecError(file, field, f"{value!r} is not allowed{hint}; allowed: {allowed}")


def _anything(value: Any) -> str | None:
    return None


def custom_param(file: Any, name: str, raw: Any) -> ParamDef:
    """The definition of a parameter nnstudy does not know (used by ``[model]`` layers): its kind is
    that of its values (all integers: int; numbers: float; strings: str; true/false: bool)."""
    field = f"[search].{name}"
    if isinstance(raw, dict):
        values = [raw[k] for k in ("low", "high", "step") if k in raw]
    else:
        values = raw if isinstance(raw, list) else [raw]
    kinds = set()
    for value in values:
        if isinstance(value, bool):
            kinds.add("bool")
        elif isinstance(value, int):
            kinds.add("int")
        elif isinstance(value, float):
            kinds.add("float")
        elif isinstance(value, str):
            kinds.add("str")
        else:
            raise SpecError(file, field, f"{_short(value)} has the wrong type; allowed: numbers, strings or "
                            "true/false, as a value, a list of choices or a range { low, high }")
    if kinds == {"int", "float"}:
        kinds = {"float"}
    if len(kinds) > 1:
        raise SpecError(file, field, f"{_short(raw)} mixes {' and '.join(sorted(kinds))} values; allowed: "
                        "values of one type")
    kind = kinds.pop() if kinds else "float"
    return ParamDef(kind, None if isinstance(raw, (list, dict)) else raw, "custom parameter", _anything)  # type: ignore[arg-type]


def parse_dimension(file: Any, name: str, raw: Any, pdef: ParamDef | None = None) -> Dimension:
    """Validate one raw search value (scalar, list or range table) for parameter ``name``."""
    field = f"[search].{name}"
    pdef = pdef or PARAMETERS[name]
    if isinstance(raw, dict):
        if pdef.kind in ("str", "bool"):
            raise SpecError(file, field, f"{raw!r} is a range; allowed: a value or a list of choices for {name}")
        unknown = sorted(set(raw) - {"low", "high", "log", "step"})
        if unknown:
            hint = did_you_mean(unknown[0], ["low", "high", "log", "step"])
            raise SpecError(file, f"{field}.{unknown[0]}",
                            f"unknown range key{hint}; allowed: low, high, log, step")
        for key in ("low", "high"):
            if key not in raw:
                raise SpecError(file, field, f"{raw!r} lacks {key!r}; allowed: a range with both 'low' and 'high'")
            _check_value(file, f"{field}.{key}", pdef, raw[key])
        low, high = raw["low"], raw["high"]
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise SpecError(file, f"{field}.log", f"{log!r} is not allowed; allowed: true or false")
        if low > high:
            raise SpecError(file, field, f"low = {low!r} is greater than high = {high!r}; allowed: low <= high")
        if log and low <= 0:
            raise SpecError(file, f"{field}.low", f"{low!r} with log = true; allowed: low > 0 on a log scale")
        step = raw.get("step")
        if step is not None:
            if not _type_ok(pdef.kind, step) or not _finite(step) or step <= 0:
                raise SpecError(file, f"{field}.step", f"{step!r} is not allowed; allowed: "
                                f"{'an integer' if pdef.kind == 'int' else 'a number'} > 0")
            if log:
                raise SpecError(file, f"{field}.step", f"{step!r} together with log = true; "
                                "allowed: either a step or a log scale, not both")
            span, points = high - low, (high - low) / step
            if span > 0 and abs(points - round(points)) > 1e-9 * max(1.0, points):
                raise SpecError(file, f"{field}.step", f"{step!r} does not divide the range {low!r}..{high!r} "
                                f"(high - low = {span!r}); allowed: a step that divides high - low, so that high is "
                                "one of the values (Optuna would otherwise move high)")
        return Range(low=low, high=high, log=log, step=step)
    if isinstance(raw, list):
        if not raw:
            raise SpecError(file, field, "[] is an empty list of choices; allowed: at least one value")
        for i, value in enumerate(raw):
            _check_value(file, f"{field}[{i}]", pdef, value)
        duplicates = sorted({repr(v) for v in raw if raw.count(v) > 1})
        if duplicates:
            raise SpecError(file, field, f"{duplicates[0]} is listed more than once (it would weigh the search); "
                            "allowed: distinct choices")
        return Choice(tuple(raw)) if len(raw) > 1 else Fixed(raw[0])
    _check_value(file, field, pdef, raw)
    return Fixed(raw)


def _on_step(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return abs(k - round(k)) < 1e-9


@dataclass(frozen=True)
class SearchSpace:
    """The validated search space of a study: one :data:`Dimension` per known parameter."""

    dimensions: dict[str, Dimension]
    custom: dict[str, ParamDef] = field(default_factory=dict)  # parameters nnstudy does not know

    @classmethod
    def parse(cls, raw: dict[str, Any], file: Any = None, *, custom: bool = False) -> SearchSpace:
        """Build a space from the ``[search]`` table; missing parameters take their defaults.

        ``custom`` (a spec with ``[model]`` layers): names nnstudy does not know are custom
        parameters whose kind follows their values; otherwise they are an error.
        """
        defs: dict[str, ParamDef] = {}
        for name in raw:
            if name in PARAMETERS:
                continue
            if not custom:
                raise SpecError(file, f"[search].{name}", "unknown parameter"
                                f"{did_you_mean(name, list(PARAMETERS))}; allowed: {', '.join(PARAMETERS)} "
                                "(other names need [model] layers that use them)")
            if not name.isidentifier():
                raise SpecError(file, f"[search].{name}", "is not a parameter name; allowed: letters, digits and _, "
                                "not starting with a digit")
            defs[name] = custom_param(file, name, raw[name])
        dims: dict[str, Dimension] = {}
        for name, pdef in PARAMETERS.items():
            dims[name] = parse_dimension(file, name, raw[name]) if name in raw else Fixed(pdef.default)
        for name, pdef in defs.items():
            dims[name] = parse_dimension(file, name, raw[name], pdef)
        return cls(dims, defs)

    def param_def(self, name: str) -> ParamDef:
        return self.custom.get(name) or PARAMETERS[name]

    @property
    def searched(self) -> list[str]:
        """Names of the parameters that are actually searched (not fixed)."""
        return [n for n, d in self.dimensions.items() if not isinstance(d, Fixed)]

    def suggest(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> Params:
        """Ask ``trial`` for one value per parameter (fixed ones are returned as they are)."""
        params: Params = {}
        for name, dim in self.dimensions.items():
            kind = self.param_def(name).kind
            if isinstance(dim, Fixed):
                params[name] = dim.value
            elif isinstance(dim, Choice):
                params[name] = trial.suggest_categorical(name, list(dim.values))
            elif kind == "int":
                params[name] = trial.suggest_int(name, int(dim.low), int(dim.high),
                                                 step=int(dim.step or 1), log=dim.log)
            else:
                params[name] = trial.suggest_float(name, float(dim.low), float(dim.high),
                                                   step=dim.step, log=dim.log)
        return params

    def largest(self) -> Params:
        """The configuration with the largest value of every numeric parameter (the first choice of
        the others): the biggest model the space can build, to check before a study starts."""
        return self.corner(largest=True)

    def corner(self, *, largest: bool) -> Params:
        """Every numeric parameter at its largest (or smallest) value, the others at their first choice."""
        params: Params = {}
        for name, dim in self.dimensions.items():
            if isinstance(dim, Fixed):
                params[name] = dim.value
            elif isinstance(dim, Choice):
                numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in dim.values)
                pick = max if largest else min
                params[name] = pick(dim.values) if numeric else dim.values[0]
            else:
                step = dim.step or (1 if self.param_def(name).kind == "int" else None)
                high = min(dim.high, dim.low + math.floor((dim.high - dim.low) / step + 1e-9) * step) if step \
                    else dim.high
                value = high if largest else dim.low
                params[name] = int(value) if self.param_def(name).kind == "int" else float(value)
        return params

    def check_params(self, params: dict[str, Any], file: Any, field: str) -> None:
        """Reject a configuration (an ``[[enqueue]]`` entry) that lies outside this space."""
        for name, value in params.items():
            where = f"{field}.{name}"
            if name not in self.dimensions:
                raise SpecError(file, where, "unknown parameter"
                                f"{did_you_mean(name, list(self.dimensions))}; allowed: {', '.join(self.dimensions)}")
            pdef = self.param_def(name)
            _check_value(file, where, pdef, value)
            dim = self.dimensions[name]
            if isinstance(dim, Fixed) and value != dim.value:
                raise SpecError(file, where, f"{value!r} is outside the search space; allowed: {dim.value!r} (fixed)")
            if isinstance(dim, Choice) and value not in dim.values:
                raise SpecError(file, where, f"{value!r} is outside the search space; allowed: "
                                + ", ".join(repr(v) for v in dim.values))
            if isinstance(dim, Range) and not dim.low <= value <= dim.high:
                raise SpecError(file, where, f"{value!r} is outside the search space; allowed: "
                                f"{dim.low!r} <= value <= {dim.high!r}")
            if isinstance(dim, Range) and dim.step and not _on_step(value, dim.low, dim.step):
                raise SpecError(file, where, f"{value!r} is off the range's step; allowed: "
                                f"{dim.low!r} + k * {dim.step!r} up to {dim.high!r}")

    def grid(self, file: Any = None) -> dict[str, list[Any]]:
        """The grid of a grid search; every searched parameter must be a list or a stepped range."""
        grid: dict[str, list[Any]] = {}
        for name, dim in self.dimensions.items():
            if isinstance(dim, Fixed):
                continue
            if isinstance(dim, Choice):
                grid[name] = list(dim.values)
            elif dim.step is None and self.param_def(name).kind == "float":
                raise SpecError(file, f"[search].{name}", "a continuous range cannot be searched by "
                                "sampler = 'grid'; allowed: a list of choices or a range with a step")
            else:
                step = dim.step or 1
                n = int(math.floor((dim.high - dim.low) / step + 1e-9)) + 1
                if n > MAX_GRID_POINTS:
                    raise SpecError(file, f"[search].{name}", f"step = {step!r} makes {n} grid points; allowed: "
                                    f"at most {MAX_GRID_POINTS} points in a grid")
                values = [dim.low + i * step for i in range(n)]
                grid[name] = [int(v) for v in values] if self.param_def(name).kind == "int" else values
        total = math.prod(len(v) for v in grid.values())
        if total > MAX_GRID_POINTS:
            raise SpecError(file, "[search]", f"the grid has {total} points; allowed: at most {MAX_GRID_POINTS} "
                            "for sampler = 'grid' (use fewer choices, larger steps, or sampler = 'tpe')")
        return grid

    def to_dict(self) -> dict[str, Any]:
        """The space written back in spec form (``[search]`` table)."""
        out: dict[str, Any] = {}
        for name, dim in self.dimensions.items():
            if isinstance(dim, Fixed):
                out[name] = dim.value
            elif isinstance(dim, Choice):
                out[name] = list(dim.values)
            else:
                rng: dict[str, Any] = {"low": dim.low, "high": dim.high, "log": dim.log}
                if dim.step is not None:
                    rng["step"] = dim.step
                out[name] = rng
        return out
