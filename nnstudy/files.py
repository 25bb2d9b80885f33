"""Opening the user's files safely: only regular files are read.

A FIFO would block its reader forever, a device could be endless, a directory or a socket is
no file at all: each is refused at once, before anything opens it, with a message naming the
option or field it came from. A symlink loop is named as one.
"""

from __future__ import annotations

import errno
import stat
from pathlib import Path
from typing import Any

from nnstudy.errors import DataError, SpecError, UserInputError


def file_problem(path: Path, allowed: str) -> tuple[str, str] | None:
    """``None`` for a regular file (symlinks followed), else ``(kind, message)`` with kind ``missing``
    or ``other`` and a message ending in what is ``allowed``."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing", f"no such file; allowed: {allowed}"
    except OSError as err:
        why = "is a symlink loop" if err.errno == errno.ELOOP else f"cannot be read ({err.strerror})"
        return "other", f"{why}; allowed: {allowed}"
    if stat.S_ISREG(mode):
        return None
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    return "other", f"is {kind}, which is never read; allowed: {allowed}"


def regular_file(path: Path, *, field: str, spec_file: Any = None, allowed: str = "a regular file") -> Path:
    """Return ``path`` if it is a regular file, else raise a one-line error.

    Args:
        field: what named the file: ``"[data].source"`` (with ``spec_file``), ``"--input"``, ...
        spec_file: the spec that named it (a missing file is then a :class:`SpecError` on ``field``).
        allowed: what the message says is allowed.
    """
    found = file_problem(path, allowed)
    if found is None:
        return path
    kind, problem = found
    if kind == "missing" and spec_file is not None:
        raise SpecError(spec_file, field, f"{str(path)!r}: {problem}")
    if kind == "missing":
        raise UserInputError(f"{field} {str(path)!r}: {problem}")
    raise DataError(path, f"{field}: {problem}" if field else problem)
