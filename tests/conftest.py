"""Shared pytest fixtures.

Fixtures of the fast unit tests (space, spec, data, store, bad input) come first; add new
fixtures below them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# --------------------------------------------------------------------------- unit-test fixtures


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write ``text`` to ``tmp_path / name`` (folders created) and return the path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def no_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset ``MLFLOW_TRACKING_URI`` so store defaults do not depend on the caller's shell."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# --------------------------------------------------------------------------- other fixtures
