"""One error hierarchy for nnstudy.

Two kinds of failure are kept apart (as Keras Tuner does):

* :class:`UserInputError` and its subclasses — the configuration, the data or the
  arguments are wrong. Raised *before* anything is written; the CLI turns them into one
  line and exit code 2.
* :class:`TrialFailed` — one trial failed (diverged, out of memory, ...). The trial is
  recorded as FAIL with its reason and the study goes on.

Anything else is a bug or an environment problem and exits with code 1.
"""

from __future__ import annotations

import errno
from pathlib import Path


class NnstudyError(Exception):
    """Base class of every error nnstudy raises on purpose."""

    exit_code = 1


class UserInputError(NnstudyError):
    """Bad input from the user: spec, data, arguments or store location. Exit code 2."""

    exit_code = 2


class SpecError(UserInputError):
    """A study spec that does not validate.

    The message always names the file, the field, the offending value and what is allowed.
    """

    def __init__(self, file: str | Path | None, field: str, problem: str) -> None:
        self.file = str(file) if file is not None else "<spec>"
        self.field = field
        self.problem = problem
        where = f"{self.file}: {field}" if field else self.file
        super().__init__(f"{where}: {problem}")


class ModelTooLarge(SpecError):
    """The search space allows a model with more layers or weights than ``[model].max_layers`` /
    ``max_params``: refused before anything is allocated."""


class DataError(UserInputError):
    """A data set that cannot be used (missing file, bad column, single class, ...)."""

    def __init__(self, source: str | Path, problem: str, *, column: str | None = None) -> None:
        self.source = str(source)
        self.column = column
        where = f"{self.source}: column {column!r}" if column else self.source
        super().__init__(f"{where}: {problem}")


class StoreError(UserInputError):
    """A storage or tracking URI that cannot be used (unknown scheme, unreachable, read-only)."""


class DiskFull(StoreError):
    """The disk holding the store is full (ENOSPC): the study stops, what was written stays consistent."""


class StudyNotFoundError(UserInputError):
    """The study asked for does not exist in the given storage."""


class TrialFailed(NnstudyError):
    """One trial failed for a known reason; the study records it and goes on."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class StudyInterrupted(NnstudyError):
    """The study was stopped by a signal (Ctrl-C, SIGTERM); finished trials are kept."""

    exit_code = 130


def is_out_of_memory(err: BaseException) -> bool:
    """MemoryError, TensorFlow's ResourceExhaustedError, or a backend's 'out of memory' error."""
    if isinstance(err, MemoryError):
        return True
    name = type(err).__name__
    text = str(err).lower()
    return name == "ResourceExhaustedError" or "resource_exhausted" in text or "out of memory" in text


def error_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the errors it was raised from or while handling (Optuna and SQLAlchemy wrap the
    first one in others), each once."""
    chain: list[BaseException] = []
    stack: list[BaseException | None] = [err]
    while stack:
        e = stack.pop()
        if e is not None and all(e is not seen for seen in chain):
            chain.append(e)
            stack += [e.__cause__, e.__context__]
    return chain


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT, or SQLite's "database or disk is full", anywhere in :func:`error_chain`."""
    for e in error_chain(err):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e).lower()
        if "database or disk is full" in text or "no space left on device" in text:
            return True
    return False
