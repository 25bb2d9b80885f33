"""Keras Tuner's ``HyperParameters`` API backed by an Optuna trial.

A Keras Tuner hypermodel function ``build(hp)`` runs unchanged: ``hp.Int``, ``hp.Float``,
``hp.Choice`` and ``hp.Boolean`` become Optuna ``suggest_*`` calls (the values land in
``trial.params``); ``hp.Fixed`` returns its value and keeps it in :attr:`HyperParameters.fixed`
for logging. The same function on ``optuna.trial.FixedTrial(trial.params)`` gives the same values.

Conditional parameters (``parent_name``/``parent_values``, or ``with hp.conditional_scope(...)``,
nestable) are suggested only while their condition holds; otherwise they are absent from
``trial.params`` and :attr:`HyperParameters.values` and the call returns the default (``default``,
else ``min_value`` for ``Int``/``Float``, the first value for ``Choice``, False for ``Boolean``;
Keras Tuner returns None there). Mistakes in the calls (``min_value > max_value``, empty
``values``, unknown ``sampling``, a name redefined differently) raise :class:`ValueError`.
"""

from __future__ import annotations

import contextlib
import re
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

Scalar = int | float | str | bool
SAMPLINGS = ("linear", "log", "reverse_log")


@dataclass(frozen=True)
class Condition:
    """A parameter is active only while the value of ``parent_name`` is one of ``values``."""

    parent_name: str
    values: tuple[Scalar, ...]

    def is_active(self, current: dict[str, Any]) -> bool:
        """Whether the parent is active and holds one of ``values``."""
        return self.parent_name in current and current[self.parent_name] in self.values


@dataclass(frozen=True)
class HyperParameter:
    """One registered definition: its kind, what is sampled (``config``), default and conditions."""

    name: str
    kind: str  # "int", "float", "choice", "boolean" or "fixed"
    config: tuple[tuple[str, Any], ...]
    default: Any
    conditions: tuple[Condition, ...] = ()

    def describe(self) -> str:
        """The definition as it would be written: ``Int(min_value=1, max_value=4, ...)``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.config)
        return f"{self.kind.capitalize()}({args})"


#: names nnstudy logs itself on every trial run (a hyperparameter of the same name would be overwritten)
RESERVED = frozenset({"seed", "metric", "max_epochs", "early_stopping_patience", "restore_best_weights", "min_delta",
                      "data_source", "task", "validation_fraction", "test_fraction", "split_seed", "batch_size"})
_MLFLOW_NAME = re.compile(r"[\w./ :-]{1,250}")  # what MLflow accepts as a parameter name


def _name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a hyperparameter name must be a non-empty string, got {name!r}")
    if not _MLFLOW_NAME.fullmatch(name):
        raise ValueError(f"hyperparameter name {name!r} cannot be an MLflow parameter; allowed: letters, digits, "
                         "'_', '-', '.', '/', ':' and spaces (e.g. 'units_0' rather than 'units[0]')")
    if name in RESERVED:
        raise ValueError(f"hyperparameter name {name!r} is one nnstudy records itself; allowed: another name "
                         f"(not {', '.join(sorted(RESERVED))}; the batch size is [search].batch_size)")
    return name


def _number(kind: str, name: str, arg: str, value: Any) -> Any:
    integral = kind == "Int"
    ok = isinstance(value, numbers.Integral if integral else numbers.Real) and not isinstance(value, bool)
    if not ok or not (integral or math.isfinite(value)):
        allowed = "an integer" if integral else "a finite number"
        raise ValueError(f"{kind} {name!r}: {arg} = {value!r}; allowed: {allowed}")
    return int(value) if integral else float(value)


def _numeric(kind: str, name: str, min_value: Any, max_value: Any, step: Any, sampling: Any,
             default: Any) -> tuple[tuple[tuple[str, Any], ...], Any]:
    """Check an ``Int``/``Float`` definition; return its config and default."""
    low, high = _number(kind, name, "min_value", min_value), _number(kind, name, "max_value", max_value)
    if low > high:
        raise ValueError(f"{kind} {name!r}: min_value = {low} > max_value = {high}; allowed: min_value <= max_value")
    mode = sampling.lower() if isinstance(sampling, str) else sampling
    if mode not in SAMPLINGS:
        raise ValueError(f"{kind} {name!r}: sampling = {sampling!r}; allowed: {', '.join(map(repr, SAMPLINGS))}")
    if mode != "linear" and low <= 0:
        raise ValueError(f"{kind} {name!r}: sampling = {mode!r} with min_value = {low!r}; allowed: min_value > 0")
    if step is not None:
        step = _number(kind, name, "step", step)
        if step <= (0 if mode == "linear" else 1):
            allowed = "a step > 0" if mode == "linear" else "a factor > 1 with log sampling"
            raise ValueError(f"{kind} {name!r}: step = {step!r}; allowed: {allowed}")
    value = low if default is None else _number(kind, name, "default", default)
    if not low <= value <= high:
        raise ValueError(f"{kind} {name!r}: default = {value} is outside [{low}, {high}]")
    if kind == "Int" and mode == "linear" and step is None:
        step = 1
    return (("min_value", low), ("max_value", high), ("step", step), ("sampling", str(mode))), value


def _geometric(low: float, high: float, factor: float) -> list[float]:
    values = [low]
    while values[-1] * factor <= high * (1 + 1e-12):
        values.append(values[-1] * factor)
    return values


def _stepped_high(low: float, high: float, step: float) -> float:
    """The largest ``low + k * step`` not above ``high`` (as Optuna computes it, so it never warns)."""
    d_low, d_step = Decimal(str(low)), Decimal(str(step))
    return float(d_low + ((Decimal(str(high)) - d_low) // d_step) * d_step)


class HyperParameters:
    """Keras Tuner's ``HyperParameters`` on top of an Optuna trial (``Trial`` or ``FixedTrial``).

    Attributes: ``trial``; ``values`` (active parameter name → value, fixed ones included);
    ``fixed`` (the active ``Fixed`` values); ``space`` (every definition registered, in order).
    """

    def __init__(self, trial: BaseTrial) -> None:
        self.trial = trial
        self.values: dict[str, Any] = {}
        self.fixed: dict[str, Any] = {}
        self.space: list[HyperParameter] = []
        self._defs: dict[str, HyperParameter] = {}
        self._scope: list[Condition] = []

    @classmethod
    def from_trial(cls, trial: BaseTrial) -> HyperParameters:
        """Wrap an ``optuna.Trial`` (a search) or an ``optuna.trial.FixedTrial`` (a reproduction)."""
        return cls(trial)

    def _condition(self, parent_name: Any, parent_values: Any) -> Condition:
        if not isinstance(parent_name, str) or parent_name not in self._defs:
            known = ", ".join(map(repr, self._defs)) or "none yet"
            raise ValueError(f"parent_name = {parent_name!r} is not a defined hyperparameter; define the parent "
                             f"first (defined: {known})")
        values = tuple(parent_values) if isinstance(parent_values, (list, tuple)) else (parent_values,)
        if not values:
            raise ValueError(f"parent_values for parent {parent_name!r} is empty; allowed: at least one value")
        return Condition(parent_name, values)

    @contextlib.contextmanager
    def conditional_scope(self, parent_name: str, parent_values: Scalar | Sequence[Scalar]) -> Iterator[None]:
        """Make the parameters defined inside active only while ``parent_name`` is in ``parent_values``."""
        self._scope.append(self._condition(parent_name, parent_values))
        try:
            yield
        finally:
            self._scope.pop()

    def _retrieve(self, hp: HyperParameter, suggest: Callable[[], Any],
                  parent_name: str | None, parent_values: Any) -> Any:
        conditions = list(self._scope)
        if parent_name is not None:
            conditions.append(self._condition(parent_name, parent_values))
        hp = HyperParameter(hp.name, hp.kind, hp.config, hp.default, tuple(conditions))
        known = self._defs.setdefault(hp.name, hp)
        if (known.kind, known.config) != (hp.kind, hp.config):
            raise ValueError(f"hyperparameter {hp.name!r} is already defined as {known.describe()}; it cannot be "
                             f"redefined as {hp.describe()} (give the new one another name)")
        if hp not in self.space:
            self.space.append(hp)
        if not all(c.is_active(self.values) for c in hp.conditions):
            return hp.default
        if hp.name not in self.values:
            self.values[hp.name] = suggest()
            if hp.kind == "fixed":
                self.fixed[hp.name] = self.values[hp.name]
        return self.values[hp.name]

    def _suggest_number(self, hp: HyperParameter) -> Any:
        c = dict(hp.config)
        low, high, step, log = c["min_value"], c["max_value"], c["step"], c["sampling"] != "linear"
        if log and step is not None:  # a multiplicative step: the explicit list of values
            values = _geometric(low, high, step)
            return self.trial.suggest_categorical(hp.name, [int(v) for v in values] if hp.kind == "int" else values)
        if hp.kind == "int":
            s = step or 1
            return self.trial.suggest_int(hp.name, low, low + (high - low) // s * s, step=s, log=log)
        top = high if step is None else _stepped_high(low, high, step)
        return self.trial.suggest_float(hp.name, low, top, step=step, log=log)

    def Int(self, name: str, min_value: int, max_value: int, step: int | None = None, sampling: str = "linear",
            default: int | None = None, parent_name: str | None = None, parent_values: Any = None) -> int:
        """An integer in ``[min_value, max_value]``.

        ``step`` defaults to 1 on a linear scale (``min_value, min_value + step, ...``); with
        ``sampling = "log"`` and a step it is a factor (``min_value, min_value * step, ...``) and the
        values are a categorical choice. ``"reverse_log"`` is treated as ``"log"``.
        ``default`` (the value while inactive) defaults to ``min_value``.
        """
        config, value = _numeric("Int", _name(name), min_value, max_value, step, sampling, default)
        hp = HyperParameter(name, "int", config, value)
        return int(self._retrieve(hp, lambda: self._suggest_number(hp), parent_name, parent_values))

    def Float(self, name: str, min_value: float, max_value: float, step: float | None = None,
              sampling: str = "linear", default: float | None = None, parent_name: str | None = None,
              parent_values: Any = None) -> float:
        """A number in ``[min_value, max_value]``.

        ``step`` defaults to None (continuous); on a linear scale it is a spacing, with
        ``sampling = "log"`` a factor (the values are then a categorical choice). ``"reverse_log"``
        is treated as ``"log"``. ``default`` (the value while inactive) defaults to ``min_value``.
        """
        config, value = _numeric("Float", _name(name), min_value, max_value, step, sampling, default)
        hp = HyperParameter(name, "float", config, value)
        return float(self._retrieve(hp, lambda: self._suggest_number(hp), parent_name, parent_values))

    def Choice(self, name: str, values: Sequence[Scalar], ordered: bool | None = None, default: Scalar | None = None,
               parent_name: str | None = None, parent_values: Any = None) -> Any:
        """One of ``values`` (int, float, str or bool, all of one type). ``ordered`` is accepted and ignored.

        ``default`` (the value while inactive) defaults to the first value.
        """
        name = _name(name)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"Choice {name!r}: values = {values!r}; allowed: a non-empty list")
        choices = list(values)
        types = {type(v) for v in choices}
        if not types <= {int, float, str, bool} or len(types) > 1:
            raise ValueError(f"Choice {name!r}: values = {choices!r}; allowed: values of one type, "
                             "all int, all float, all str or all bool")
        if default is not None and default not in choices:
            raise ValueError(f"Choice {name!r}: default = {default!r} is not one of {choices!r}")
        value = choices[0] if default is None else default
        hp = HyperParameter(name, "choice", (("values", tuple(choices)),), value)
        return self._retrieve(hp, lambda: self.trial.suggest_categorical(name, choices), parent_name, parent_values)

    def Boolean(self, name: str, default: bool = False, parent_name: str | None = None,
                parent_values: Any = None) -> bool:
        """``False`` or ``True``. ``default`` (the value while inactive) defaults to False."""
        name = _name(name)
        if not isinstance(default, bool):
            raise ValueError(f"Boolean {name!r}: default = {default!r}; allowed: True or False")
        hp = HyperParameter(name, "boolean", (), default)
        return bool(self._retrieve(hp, lambda: self.trial.suggest_categorical(name, [False, True]),
                                   parent_name, parent_values))

    def Fixed(self, name: str, value: Scalar, parent_name: str | None = None, parent_values: Any = None) -> Any:
        """Always ``value``: recorded in :attr:`values` and :attr:`fixed`, never suggested to Optuna."""
        name = _name(name)
        if not isinstance(value, (int, float, str, bool)):
            raise ValueError(f"Fixed {name!r}: value = {value!r}; allowed: an int, float, str or bool")
        hp = HyperParameter(name, "fixed", (("value", value),), value)
        return self._retrieve(hp, lambda: value, parent_name, parent_values)

    def is_active(self, name: str) -> bool:
        """Whether ``name`` is defined and its conditions hold (it has a value)."""
        return name in self.values

    def get(self, name: str) -> Any:
        """The value of an active parameter; ValueError if inactive, KeyError if never defined."""
        if name in self.values:
            return self.values[name]
        if name in self._defs:
            raise ValueError(f"hyperparameter {name!r} is currently inactive")
        raise KeyError(f"hyperparameter {name!r} does not exist")

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` has been defined (active or not), as in Keras Tuner."""
        return name in self._defs

    def __repr__(self) -> str:
        return f"HyperParameters(values={self.values!r})"
