"""Layer templates: the ``[model].layers`` list of a spec, checked, then built into Keras layers.

Each entry is a table ``{ type = "Dense", units = "$units", ... }`` naming a public class of
``keras.layers`` and its arguments, or a repeat block ``{ repeat = 3, layers = [...] }``
(``repeat`` may be ``"$depth"``; blocks nest up to :data:`MAX_NESTING` deep). Any value may be a
reference ``"$name"`` to a ``[search]`` parameter. Lists become tuples; tables are allowed only for
``*_regularizer`` (``{ l1 = .., l2 = .. }`` or ``{ type = "L2", ... }``), ``*_initializer``
(``{ type = "HeNormal" }``) and ``*_constraint`` (``{ type = "MaxNorm", max_value = 3 }``).
:func:`parse_layers` checks structure and names without building; :meth:`LayerTemplate.build`
resolves references, expands repeats, checks the size limits before weights are allocated and
builds each layer. Every user mistake is a one-line :class:`SpecError`. Keras is imported lazily.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nnstudy.errors import ModelTooLarge, SpecError
from nnstudy.space import did_you_mean

if TYPE_CHECKING:
    import keras

MAX_LAYERS = 500  #: default limit of built layers, after repeats are expanded
MAX_PARAMS = 50_000_000  #: default limit of weights (trainable or not) of the built layers
MAX_NESTING = 10  #: deepest nesting of repeat blocks
MAX_VALUE_DEPTH = 4  #: deepest nesting of lists in an argument value (``[[1, 1], [2, 2]]`` is 2)

_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)\Z")
_SERIALIZED = ("class_name", "module", "registered_name", "config")
_KINDS = ("initializer", "regularizer", "constraint")
_BASE_ARGS = ("name", "dtype", "trainable")  # keywords of keras.layers.Layer.__init__ every layer takes
#: layer names nnstudy gives the input and the output layer it adds
RESERVED_NAMES = ("features", "output")
_INPUT_ARGS = ("input_shape", "input_dim", "batch_input_shape", "batch_size")
_REASONS = {
    "runs arbitrary Python code": ("Lambda",),
    "loads an external SavedModel": ("TFSMLayer",),
    "wraps external PyTorch, JAX or Flax code": ("TorchModuleWrapper", "JaxLayer", "FlaxLayer"),
    "is the input, which nnstudy adds from the data's shape": ("InputLayer", "Input"),
    "is an abstract base class": ("Layer", "Wrapper"),
    "wraps layer objects, which a spec cannot give": ("Bidirectional", "TimeDistributed", "SpectralNormalization",
                                                      "Pipeline"),
    "needs cell objects; use SimpleRNN, LSTM or GRU": ("RNN", "StackedRNNCells", "SimpleRNNCell", "LSTMCell",
                                                       "GRUCell"),
    "merges several inputs; a Sequential layer gets one": ("Add", "Subtract", "Multiply", "Average", "Maximum",
                                                           "Minimum", "Concatenate", "Dot"),
    "takes several inputs (query, value); a Sequential layer gets one": (
        "Attention", "AdditiveAttention", "MultiHeadAttention", "GroupQueryAttention"),
}
#: layer types a spec may not name, each with the reason
REFUSED_TYPES: dict[str, str] = {name: why for why, names in _REASONS.items() for name in names}


def refused_types() -> dict[str, str]:
    """The layer types a spec may not name, each with the reason (a copy of :data:`REFUSED_TYPES`)."""
    return dict(REFUSED_TYPES)


@dataclass(frozen=True)
class Ref:
    """A reference ``"$name"`` to a ``[search]`` parameter."""
    name: str


@dataclass(frozen=True)
class Table:
    """An initializer, regularizer or constraint table (``kind`` is one of those three words)."""
    kind: str
    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class LayerNode:
    """One layer: its keras.layers class name and arguments (frozen: tuples, :class:`Ref`, :class:`Table`)."""
    type: str
    args: tuple[tuple[str, Any], ...]
    field: str


@dataclass(frozen=True)
class RepeatNode:
    """``layers`` repeated ``count`` times (an int >= 0 or a :class:`Ref`)."""
    count: int | Ref
    layers: tuple[Node, ...]
    field: str


Node = LayerNode | RepeatNode


def _short(value: Any, limit: int = 40) -> str:
    text = " ".join(str(value).split()) if isinstance(value, BaseException) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@functools.cache
def _classes(module: str) -> dict[str, type]:
    """Public classes of ``keras.<module>``: layers, initializers, regularizers or constraints."""
    import keras

    mod = getattr(keras, module)
    base = getattr(mod, {"layers": "Layer", "initializers": "Initializer", "regularizers": "Regularizer",
                         "constraints": "Constraint"}[module])
    return {name: obj for name in dir(mod) if name[0].isupper()
            and inspect.isclass(obj := getattr(mod, name)) and issubclass(obj, base) and obj is not base}


@functools.cache
def _allowed_args(cls: type) -> tuple[str, ...]:
    """Keyword arguments of ``cls.__init__`` (self, *args, **kwargs skipped), plus :data:`_BASE_ARGS` for layers."""
    import keras

    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    names = [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if any(p.kind == p.VAR_KEYWORD for p in params.values()) and issubclass(cls, keras.layers.Layer):
        names += _BASE_ARGS
    return tuple(dict.fromkeys(names))


def _parse_value(raw: Any, file: Any, field: str, kind: str | None, depth: int = 0) -> Any:
    """A frozen argument value: scalar, :class:`Ref`, tuple (from a list) or :class:`Table`."""
    if isinstance(raw, (bool, int)) or (isinstance(raw, float) and math.isfinite(raw)):
        return raw
    if isinstance(raw, str) and raw.startswith("$"):
        if not _REF.match(raw):
            raise SpecError(file, field, f"{raw!r} is not a reference; allowed: '$' and a parameter name")
        return Ref(raw[1:])
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list) and depth < MAX_VALUE_DEPTH:
        return tuple(_parse_value(v, file, f"{field}[{i}]", None, depth + 1) for i, v in enumerate(raw))
    if isinstance(raw, dict) and kind is not None and depth == 0:
        return _parse_table(raw, file, field, kind)
    allowed = ("a finite number, string, boolean, list or '$name'" if not isinstance(raw, (list, dict)) else
               f"lists nested at most {MAX_VALUE_DEPTH} deep" if isinstance(raw, list) else
               "a table only for *_initializer, *_regularizer and *_constraint arguments")
    raise SpecError(file, field, f"{_short(raw)} is not allowed; allowed: {allowed}")


def _parse_table(raw: dict[str, Any], file: Any, field: str, kind: str) -> Table:
    for key in raw:
        if key in _SERIALIZED:
            raise SpecError(file, f"{field}.{key}", "Keras serialization tables are refused (they can name any "
                            f"class); allowed: {{ type = \"<keras.{kind}s class>\", <its arguments> }}")
    classes = _classes(kind + "s")
    if "type" in raw:
        name = raw["type"]
        if not isinstance(name, str) or name not in classes:
            hint = did_you_mean(name, list(classes)) if isinstance(name, str) else ""
            raise SpecError(file, f"{field}.type", f"{_short(name)} is not a keras.{kind}s class{hint}; "
                            f"allowed: {', '.join(classes)}")
        allowed: tuple[str, ...] = ("type",) + _allowed_args(classes[name])
    elif kind == "regularizer" and raw:
        allowed = ("l1", "l2")
    else:
        example = {"initializer": "he_normal", "regularizer": "l2", "constraint": "max_norm"}[kind]
        raise SpecError(file, field, f"{_short(raw)} lacks 'type'; allowed: a name such as "
                        f"\"{example}\" or {{ type = \"<keras.{kind}s class>\", ... }}")
    for key in raw:
        if key not in allowed:
            raise SpecError(file, f"{field}.{key}", f"unknown key{did_you_mean(key, allowed)}; allowed: "
                            + ", ".join(allowed))
    return Table(kind, tuple((k, v if k == "type" else _parse_value(v, file, f"{field}.{k}", None, 1))
                             for k, v in raw.items()))


def _parse_list(raw: Any, file: Any, field: str, depth: int) -> tuple[Node, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError(file, field, f"{_short(raw)} is not allowed; allowed: a non-empty list of layer tables "
                        "{ type = \"Dense\", units = 32 } or repeat blocks { repeat = 2, layers = [...] }")
    return tuple(_parse_node(item, file, f"{field}[{i}]", depth) for i, item in enumerate(raw))


def _parse_node(raw: Any, file: Any, field: str, depth: int) -> Node:
    if not isinstance(raw, dict):
        raise SpecError(file, field, f"{_short(raw)} is not a table; allowed: {{ type = \"Dense\", ... }} "
                        "or { repeat = N, layers = [...] }")
    if "type" not in raw and ("repeat" in raw or "layers" in raw):
        extra = sorted(set(raw) - {"repeat", "layers"}) + ([] if "repeat" in raw else ["(no 'repeat')"])
        if extra:
            raise SpecError(file, f"{field}.{extra[0]}" if extra[0][0] != "(" else field, "unknown key of a repeat "
                            f"block{did_you_mean(extra[0], ['repeat', 'layers'])}; allowed: repeat, layers")
        if depth >= MAX_NESTING:
            raise SpecError(file, field, f"repeat blocks nested too deep; allowed: at most {MAX_NESTING} levels")
        count = raw["repeat"]
        if isinstance(count, str) and _REF.match(count):
            count = Ref(count[1:])
        elif isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SpecError(file, f"{field}.repeat", f"{_short(count)} is not allowed; allowed: an integer >= 0 "
                            "or a '$name' reference")
        return RepeatNode(count, _parse_list(raw.get("layers"), file, f"{field}.layers", depth + 1), field)
    name, classes = raw.get("type"), _classes("layers")
    if name is None:
        raise SpecError(file, field, "lacks 'type'; allowed: { type = \"Dense\", ... } or "
                        "{ repeat = N, layers = [...] }")
    if not isinstance(name, str) or name.startswith("$"):
        raise SpecError(file, f"{field}.type", f"{_short(name)} is not allowed; allowed: a keras.layers class "
                        "name such as Dense, Conv2D or Dropout, written out (no '$' reference)")
    if name in REFUSED_TYPES:
        raise SpecError(file, f"{field}.type", f"{name!r} is refused: it {REFUSED_TYPES[name]}")
    if name not in classes:
        usable = [n for n in classes if n not in REFUSED_TYPES]
        same = [n for n in usable if n.lower() == name.lower()]
        hint = f" (did you mean {same[0]!r}?)" if same else did_you_mean(name, usable)
        raise SpecError(file, f"{field}.type", f"{name!r} is not a keras.layers class{hint}; allowed: a public "
                        "layer class such as Dense, Conv2D, MaxPooling2D, Flatten, Dropout, LSTM")
    allowed, args = _allowed_args(classes[name]), []
    for key, value in raw.items():
        if key != "type" and key not in allowed:
            why = " (nnstudy adds the input from the data's shape)" if key in _INPUT_ARGS else ""
            raise SpecError(file, f"{field}.{key}", f"unknown argument of {name}{why}"
                            f"{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}")
        if key != "type":
            kind = next((k for k in _KINDS if key.endswith(k)), None)
            args.append((key, _parse_value(value, file, f"{field}.{key}", kind)))
    return LayerNode(name, tuple(args), field)


def parse_layers(raw: Any, file: Any, field: str = "[model].layers") -> LayerTemplate:
    """Check the raw ``[model].layers`` value (structure, types, argument names) without building.

    ``file`` and ``field`` (default ``"[model].layers"``) only name the place in error messages.
    """
    return LayerTemplate(_parse_list(raw, file, field, 0), field)


def _thaw(value: Any) -> Any:
    if isinstance(value, Ref):
        return f"${value.name}"
    if isinstance(value, Table):
        return {k: _thaw(v) for k, v in value.items}
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, Ref):
        yield value.name
    elif isinstance(value, (tuple, Table)):
        for v in (value.items if isinstance(value, Table) else value):
            yield from _refs(v)


def _resolve(value: Any, params: Mapping[str, Any], file: Any, field: str) -> Any:
    """The value with references replaced, lists as tuples and tables as Keras objects."""
    if isinstance(value, Ref):
        if value.name not in params:
            raise SpecError(file, field, f"'${value.name}' refers to no parameter; allowed: a [search] "
                            f"parameter ({', '.join(sorted(params)) or 'none defined'})")
        found = params[value.name]
        return tuple(found) if isinstance(found, list) else found
    if isinstance(value, tuple):
        return tuple(_resolve(v, params, file, f"{field}[{i}]") for i, v in enumerate(value))
    if not isinstance(value, Table):
        return value
    kw = {k: _resolve(v, params, file, f"{field}.{k}") for k, v in value.items if k != "type"}
    name = dict(value.items).get("type") or ("L1L2" if len(kw) == 2 else next(iter(kw)).upper())  # { l1, l2 }
    try:
        return _classes(value.kind + "s")[name](**kw)
    except Exception as exc:  # a wrong value inside the table
        raise SpecError(file, field, f"{_short(exc, 300)}; allowed: see keras.{value.kind}s.{name}") from None


def _estimate(cls_name: str, kw: Mapping[str, Any], shape: tuple[Any, ...]) -> int:
    """Weights a heavy layer will allocate on input ``shape``; 0 when unknown (then counted after building)."""
    def num(v: Any) -> int:
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0

    last, bias = num(shape[-1]) if shape else 0, int(kw.get("use_bias", True) is not False)
    if cls_name in ("Dense", "SimpleRNN", "LSTM", "GRU"):
        units, gates = num(kw.get("units")), {"Dense": 1, "SimpleRNN": 1, "LSTM": 4, "GRU": 3}[cls_name]
        bias *= 2 if cls_name == "GRU" and kw.get("reset_after", True) else 1
        return gates * units * (last + (0 if cls_name == "Dense" else units) + bias)
    if cls_name in ("Embedding", "ReversibleEmbedding"):
        return num(kw.get("input_dim")) * num(kw.get("output_dim"))
    match = re.match(r"(Separable|Depthwise)?Conv(LSTM)?([123])D(Transpose)?\Z", cls_name)
    size = kw.get("kernel_size")
    sizes = (size,) * int(match.group(3)) if match and isinstance(size, int) else size
    if not match or not isinstance(sizes, tuple) or not sizes or not all(num(s) for s in sizes):
        return 0
    kernel = math.prod(sizes)
    chans = num(shape[1]) if kw.get("data_format") == "channels_first" and len(shape) > 1 else last
    filters, mult = num(kw.get("filters")), num(kw.get("depth_multiplier", 1))
    if match.group(1) == "Separable":
        return kernel * chans * mult + chans * mult * filters + bias * filters
    if match.group(1) == "Depthwise":
        return kernel * chans * mult + bias * chans * mult
    if match.group(2):  # ConvLSTM: four gates over input and recurrent kernels
        return 4 * filters * (kernel * (chans + filters) + bias)
    return kernel * (chans // max(num(kw.get("groups", 1)), 1)) * filters + bias * filters


def _check_size(total: int, limit: int, file: Any, field: str, label: str) -> None:
    if total > limit:
        raise ModelTooLarge(file, field, f"{label} brings the model to {total:,} weights, over the limit of {limit:,}; "
                        f"allowed: at most {limit:,} weights (smaller units/filters or fewer layers)")


@dataclass(frozen=True)
class LayerTemplate:
    """The checked ``[model].layers``: layer and repeat nodes, ready to build with parameter values."""

    layers: tuple[Node, ...]
    field: str = "[model].layers"

    def references(self) -> set[str]:
        """Every parameter name referenced as ``"$name"`` (arguments, nested tables, repeat counts)."""
        def walk(nodes: tuple[Node, ...]) -> Iterator[str]:
            for n in nodes:
                if isinstance(n, LayerNode):
                    yield from (ref for _, v in n.args for ref in _refs(v))
                else:
                    yield from _refs(n.count)
                    yield from walk(n.layers)
        return set(walk(self.layers))

    def to_list(self) -> list[Any]:
        """The raw spec form (JSON-serialisable); ``parse_layers(t.to_list(), file, t.field) == t``."""
        def raw(nodes: tuple[Node, ...]) -> list[Any]:
            return [{"type": n.type, **{k: _thaw(v) for k, v in n.args}} if isinstance(n, LayerNode)
                    else {"repeat": _thaw(n.count), "layers": raw(n.layers)} for n in nodes]
        return raw(self.layers)

    def _count(self, nodes: tuple[Node, ...], params: Mapping[str, Any], file: Any) -> int:
        """How many layers ``nodes`` expand to, without expanding them (repeat counts multiply)."""
        total = 0
        for n in nodes:
            if isinstance(n, LayerNode):
                total += 1
                continue
            count = _resolve(n.count, params, file, f"{n.field}.repeat")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise SpecError(file, f"{n.field}.repeat", f"{_short(count)} is not allowed; allowed: an "
                                "integer >= 0")
            total += count * self._count(n.layers, params, file) if count else 0
        return total

    def _expand(self, nodes: tuple[Node, ...], params: Mapping[str, Any], file: Any,
                where: str = "") -> Iterator[tuple[LayerNode, str]]:
        for n in nodes:
            if isinstance(n, LayerNode):
                yield n, where
            elif self._count(n.layers, params, file):  # a body of no layers is not iterated
                count = _resolve(n.count, params, file, f"{n.field}.repeat")
                for i in range(count):
                    yield from self._expand(n.layers, params, file, f"{where} (repeat {i + 1} of {count})")

    def build(self, params: Mapping[str, Any], input_shape: tuple[int, ...], *, file: Any = None,
              max_layers: int = MAX_LAYERS, max_params: int = MAX_PARAMS) -> list[keras.layers.Layer]:
        """Construct the layers for ``params``, each built on the output of the one before.

        ``input_shape`` excludes the batch dimension; ``file`` (default None) names the spec in errors.
        Limits: at most ``max_layers`` (default 500) layers after repeats, checked before anything
        is constructed, and ``max_params`` (default 50,000,000) weights, checked before a layer's
        weights are allocated for Dense, Conv*, SeparableConv*, DepthwiseConv*, ConvLSTM*, Embedding,
        SimpleRNN, LSTM and GRU, after building for the others. Unnamed layers get Keras' own names.

        The returned layers are already built; their weights were drawn once, in order, from Keras'
        global RNG. Seed with ``keras.utils.set_random_seed`` before calling, then use them as they
        are: ``keras.Sequential([keras.Input(shape=input_shape), *layers, output])`` does not rebuild
        them, so the same seed and params give the same weights.
        """
        import keras

        n_layers = self._count(self.layers, params, file)
        if n_layers > max_layers:
            raise ModelTooLarge(file, self.field, f"{n_layers:,} layers after expanding repeats exceed the limit of "
                            f"{max_layers:,}; allowed: at most {max_layers:,} layers (smaller repeat counts)")
        x, total = keras.Input(shape=tuple(input_shape)), 0
        built: list[keras.layers.Layer] = []
        names = set(RESERVED_NAMES)
        for node, where in self._expand(self.layers, params, file):
            cls, label = _classes("layers")[node.type], f"{node.type}{where}"
            kwargs = {k: _resolve(v, params, file, f"{node.field}.{k}") for k, v in node.args}
            shape = tuple(x.shape)
            total += (estimate := _estimate(cls.__name__, kwargs, shape))
            _check_size(total, max_params, file, node.field, label)
            if kwargs.get("name") in names:
                raise SpecError(file, f"{node.field}.name", f"{kwargs['name']!r} is taken (by an earlier layer or "
                                f"by nnstudy: {', '.join(RESERVED_NAMES)}); allowed: a unique name (a named layer "
                                "in a repeat block repeats its name)")
            try:
                layer = cls(**kwargs)
            except Exception as exc:
                raise SpecError(file, node.field, f"{label} cannot be made from its arguments: {_short(exc, 300)}; "
                                f"allowed: {', '.join(_allowed_args(cls))}") from None
            try:
                x = layer(x)
                if isinstance(x, (list, tuple)) or not hasattr(x, "shape"):
                    raise ValueError("it returns several outputs; a Sequential layer needs one (return_state?)")
            except Exception as exc:
                raise SpecError(file, node.field, f"{label} does not fit its input of shape {shape} (batch first): "
                                f"{_short(exc, 300)}") from None
            total += layer.count_params() - estimate
            _check_size(total, max_params, file, node.field, label)
            names.add(layer.name)
            built.append(layer)
        return built
