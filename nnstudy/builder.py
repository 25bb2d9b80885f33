"""A user's own Python model builder, named in a spec as ``[model] builder = "models.py:build"``.

The file (relative to the spec's folder) defines ``build(hp)`` or ``build(hp, info)``: ``hp`` is a
:class:`nnstudy.hyperparameters.HyperParameters` (Keras Tuner's API), ``info`` a :class:`ModelInfo`
(input shape, number of outputs, task). It returns a ``keras.Sequential``, compiled or not.

Security: the builder file is the user's own code and runs with the user's rights. nnstudy
imports it only when a spec names it (``[model].builder``); a spec from someone else that names a
builder runs their code, just as ``python models.py`` would.

The file is imported under a private module name (``_nnstudy_builder_<hash>``), so its
``if __name__ == "__main__":`` block does not run. While it is imported and while the builder
runs, its folder is put first on ``sys.path`` so it can import sibling modules (which then stay
in ``sys.modules`` under their own names). Every failure of the user's code becomes a one-line
:class:`BuilderError` that names the file and line in the user's code and the exception.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from nnstudy.errors import NnstudyError, SpecError, UserInputError
from nnstudy.space import did_you_mean

if TYPE_CHECKING:
    import keras

    from nnstudy.hyperparameters import HyperParameters

FIELD = "[model].builder"
_ALLOWED_REF = "'FILE.py:FUNCTION', the file relative to the spec's folder (e.g. 'models.py:build')"
_MAX_DETAIL = 400


class BuilderError(UserInputError):
    """The user's builder failed: ``models.py:12: ZeroDivisionError: division by zero``."""

    def __init__(self, file: str | Path, line: int | None, problem: str) -> None:
        self.file = str(file)
        self.line = line
        self.problem = problem
        super().__init__(f"{self.file}:{line}: {problem}" if line else f"{self.file}: {problem}")


@dataclass(frozen=True)
class BuilderRef:
    """A resolved ``FILE.py:FUNCTION`` reference: the absolute file path and the function name."""

    path: Path
    function: str


@dataclass(frozen=True)
class ModelInfo:
    """What a two-argument builder ``build(hp, info)`` is told about the data.

    ``input_shape`` is one example's shape (no batch axis), ``n_outputs`` the output units
    (1 for binary and regression, the class count for multiclass), ``task`` one of
    "binary", "multiclass" or "regression".
    """

    input_shape: tuple[int, ...]
    n_outputs: int
    task: str


def parse_builder_ref(text: str, base_dir: Path, spec_file: Any) -> BuilderRef:
    """Check ``text`` (``"models.py:build"``) and resolve its file against ``base_dir`` (the spec's folder)."""
    if not isinstance(text, str):
        raise SpecError(spec_file, FIELD, f"{text!r} has the wrong type; allowed: a string {_ALLOWED_REF}")
    file_part, sep, function = text.rpartition(":")
    if not sep or not file_part or not function.isidentifier():
        raise SpecError(spec_file, FIELD, f"{text!r} is not of the form FILE.py:FUNCTION; allowed: {_ALLOWED_REF}")
    if not file_part.endswith(".py"):
        raise SpecError(spec_file, FIELD, f"{text!r} names {file_part!r}, not a .py file; allowed: {_ALLOWED_REF}")
    path = Path(file_part).expanduser()
    path = (path if path.is_absolute() else Path(base_dir) / path).resolve()
    if not path.exists():
        raise SpecError(spec_file, FIELD, f"{text!r}: file {str(path)!r} does not exist; allowed: {_ALLOWED_REF}")
    if not path.is_file():
        raise SpecError(spec_file, FIELD, f"{text!r}: {str(path)!r} is not a regular file; allowed: a .py file")
    return BuilderRef(path=path, function=function)


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """The builder's folder first on ``sys.path`` (it may import its siblings), and no ``__pycache__``
    written into the user's folder (``nnstudy validate`` writes nothing)."""
    entry, no_bytecode = str(folder), sys.dont_write_bytecode
    sys.path.insert(0, entry)
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = no_bytecode
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _user_error(exc: BaseException, user_file: Path | None, fallback: Path | str, when: str) -> BuilderError:
    """A :class:`BuilderError` at the deepest traceback frame inside ``user_file``."""
    if isinstance(exc, SyntaxError) and exc.filename:  # the file that failed to compile, maybe a sibling
        return BuilderError(exc.filename, exc.lineno, f"{type(exc).__name__}: {exc.msg} ({when})")
    line: int | None = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if user_file is not None and _same_file(frame.filename, user_file):
            line = frame.lineno
    return BuilderError(user_file or fallback, line, f"{_one_line(exc)} ({when})")


def _same_file(name: str, path: Path) -> bool:
    try:
        return name == str(path) or Path(name).resolve() == path
    except OSError:
        return False


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return f"_nnstudy_builder_{digest}_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"


def _import(path: Path) -> ModuleType:
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BuilderError(path, None, "cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and inspect look the module up by name
    try:
        with _on_sys_path(path.parent):
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise _user_error(exc, path, path, "while importing the builder") from exc
    return module


def _n_args(fn: Callable[..., Any]) -> int:
    """How many arguments to pass (1: ``fn(hp)``, 2: ``fn(hp, info)``); 0 if ``fn`` cannot take either."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 1
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if any(p.kind == p.KEYWORD_ONLY and p.default is p.empty for p in params) or len(required) > 2:
        return 0
    if len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params):
        return 2
    return len(positional)


def load_builder(ref: BuilderRef, spec_file: Any) -> Callable[..., Any]:
    """Import ``ref.path`` and return its function ``ref.function``, checked to take ``(hp)`` or ``(hp, info)``."""
    module = _import(ref.path)
    fn = getattr(module, ref.function, None)
    text = f"{ref.path.name}:{ref.function}"
    if fn is None:
        defined = sorted(n for n, v in vars(module).items()
                         if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_"))
        raise SpecError(spec_file, FIELD, f"{text!r}: {str(ref.path)!r} defines no {ref.function!r}"
                        f"{did_you_mean(ref.function, defined)}; allowed: "
                        + (", ".join(defined) if defined else "a function the file defines (it defines none)"))
    if not callable(fn):
        raise SpecError(spec_file, FIELD, f"{text!r} is a {type(fn).__name__}, not a function; "
                        "allowed: a function build(hp) or build(hp, info)")
    if _n_args(fn) == 0:
        line = getattr(getattr(fn, "__code__", None), "co_firstlineno", None)
        raise BuilderError(ref.path, line, f"{ref.function}{inspect.signature(fn)} cannot be called as "
                           f"{ref.function}(hp) or {ref.function}(hp, info); allowed: one or two positional parameters")
    return fn  # type: ignore[no-any-return]


def _source_file(fn: Callable[..., Any]) -> Path | None:
    code = getattr(inspect.unwrap(fn), "__code__", None)
    name = code.co_filename if code is not None else getattr(sys.modules.get(fn.__module__), "__file__", None)
    return Path(name).resolve() if name else None


def _describe(obj: Any) -> str:
    if obj is None:
        return "None"
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if hasattr(obj, "layers") and hasattr(obj, "compile"):
        return f"a {type(obj).__name__} model ({kind})"
    text = repr(obj)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({kind})"


def call_builder(fn: Callable[..., Any], hp: HyperParameters, info: ModelInfo) -> keras.Model:
    """Run ``fn(hp)`` or ``fn(hp, info)`` (by its signature) and check it returned a ``keras.Sequential``.

    An exception in the user's code becomes a :class:`BuilderError` at the deepest line of the
    builder's file; nnstudy's own errors and ``optuna.TrialPruned`` pass through unchanged.
    """
    import keras
    import optuna

    user_file = _source_file(fn)
    label = getattr(fn, "__name__", repr(fn))
    args: tuple[Any, ...] = (hp, info) if _n_args(fn) == 2 else (hp,)
    try:
        with _on_sys_path(user_file.parent) if user_file else contextlib.nullcontext():
            model = fn(*args)
    except (NnstudyError, optuna.TrialPruned):
        raise
    except (Exception, SystemExit) as exc:
        raise _user_error(exc, user_file, label, f"in {label}()") from exc
    if not isinstance(model, keras.Sequential):
        line = getattr(getattr(fn, "__code__", None), "co_firstlineno", None)
        raise BuilderError(user_file or label, line, f"{label}() returned {_describe(model)}; "
                           "allowed: a keras.Sequential model, compiled or not")
    return model


def is_compiled(model: Any) -> bool:
    """Whether ``model.compile(...)`` has been called (Keras 3: ``model.compiled``; else an optimizer is set)."""
    compiled = getattr(model, "compiled", None)
    if isinstance(compiled, bool):
        return compiled
    return getattr(model, "optimizer", None) is not None
