"""Only regular files are read: a FIFO, a folder, a device or a symlink loop is refused at once, for
every file a user names (spec, data source, --enqueue, predict --input), before anything is written."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnstudy.cli import cli
from nnstudy.errors import DataError, SpecError, UserInputError
from nnstudy.files import file_problem, regular_file


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _within(seconds: float, func: Callable[[], object]) -> object:
    """Run ``func`` in a thread; fail if it is still running (blocked on a FIFO) after ``seconds``."""
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(func()), daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert not worker.is_alive(), "blocked reading a special file"
    return out[0]


def test_kinds_of_files(tmp_path: Path) -> None:
    (tmp_path / "ok.csv").write_text("a\n1\n")
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    assert file_problem(tmp_path / "ok.csv", "x") is None
    assert file_problem(tmp_path / "nope.csv", "x") == ("missing", "no such file; allowed: x")
    assert file_problem(tmp_path, "x") == ("other", "is a directory, which is never read; allowed: x")
    assert file_problem(_fifo(tmp_path / "f.csv"), "x") == ("other", "is a FIFO, which is never read; allowed: x")
    assert file_problem(loop, "x") == ("other", "is a symlink loop; allowed: x")
    assert file_problem(Path("/dev/zero"), "x") == ("other", "is a device, which is never read; allowed: x")


def test_regular_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"spec\.toml: \[data\]\.source: '.*nope\.csv': no such file"):
        regular_file(tmp_path / "nope.csv", field="[data].source", spec_file="spec.toml")
    with pytest.raises(UserInputError, match=r"--input '.*nope\.csv': no such file; allowed: a table"):
        regular_file(tmp_path / "nope.csv", field="--input", allowed="a table")
    with pytest.raises(DataError, match=r"--input: is a FIFO"):
        regular_file(_fifo(tmp_path / "f.csv"), field="--input")


@pytest.mark.parametrize("target", ["spec", "data", "enqueue"])
def test_a_fifo_anywhere_is_exit_2_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = tmp_path / "s.toml"
    args = ["run", str(spec), "--no-progress"]
    if target == "spec":
        _fifo(spec)
    else:
        source = "rows.csv" if target == "data" else "pass_fail"
        spec.write_text(f'[data]\nsource = "{source}"\ntarget = "passed"\n' if target == "data" else
                        '[study]\nn_trials = 1\n')
        if target == "data":
            _fifo(tmp_path / "rows.csv")
        else:
            args += ["--enqueue", str(_fifo(tmp_path / "queue.json"))]
    for command in (args, ["validate", str(spec)]) if target != "enqueue" else (args,):
        before = sorted(p.name for p in tmp_path.iterdir())
        result = _within(30, lambda c=command: CliRunner().invoke(cli, c))  # type: ignore[misc]
        assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
        assert "is a FIFO, which is never read" in result.output  # type: ignore[attr-defined]
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
