"""Reading the user's tables: CSV dialects, Parquet, and what cannot be a training table."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from nnstudy.errors import DataError, SpecError
from nnstudy.spec import DataSection
from nnstudy.tables import check_regular_file, load_frame, read_table, resolve_source


def test_builtin_source_with_its_default_target(tmp_path: Path) -> None:
    frame, target, source = load_frame(DataSection(source="grades", n_samples=60, seed=3), tmp_path)
    assert (target, source, len(frame)) == ("grade", "grades", 60)
    _, other, _ = load_frame(DataSection(source="grades", n_samples=60, target="hours"), tmp_path)
    assert other == "hours"


def test_file_source_resolves_against_the_spec_folder(write_file: Callable[[str, str], Path], tmp_path: Path) -> None:
    path = write_file("data/rows.csv", "a,y\n1,0\n2,1\n")
    frame, target, source = load_frame(DataSection(source="data/rows.csv", target="y"), tmp_path)
    assert (list(frame.columns), target, source) == (["a", "y"], "y", str(path))
    assert resolve_source(str(path), Path("/elsewhere")) == path


@pytest.mark.parametrize(("name", "text"), [
    ("semi.csv", "a;b;y\n1;2;0\n3;4;1\n"),
    ("tabs.tsv", "a\tb\ty\n1\t2\t0\n3\t4\t1\n"),
    ("pipes.txt", "a|b|y\n1|2|0\n3|4|1\n"),
    ("spaced.csv", "a, b, y\n1, 2, 0\n3, 4, 1\n"),
    ("bom.csv", "\ufeffa,b,y\n1,2,0\n3,4,1\n"),
])
def test_csv_dialects_read_the_same_table(write_file: Callable[[str, str], Path], name: str, text: str) -> None:
    frame = read_table(write_file(name, text))
    pd.testing.assert_frame_equal(frame, pd.DataFrame({"a": [1, 3], "b": [2, 4], "y": [0, 1]}))


def test_parquet_round_trip(tmp_path: Path) -> None:
    expected = pd.DataFrame({"x": [1.5, 2.5], "kind": ["a", "b"]})
    expected.to_parquet(tmp_path / "rows.pq", index=False)
    pd.testing.assert_frame_equal(read_table(tmp_path / "rows.pq"), expected)


def test_a_missing_file_is_a_spec_error_naming_the_source(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"spec\.toml: \[data\]\.source: '.*nope\.csv': no such file; allowed"):
        read_table(tmp_path / "nope.csv", "spec.toml")


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(DataError, read_table, fifo).value),
                              daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert "is a FIFO, which is never read" in str(outcome[0])


def test_a_symlink_loop_is_a_data_error(tmp_path: Path) -> None:
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="a symlink loop"):
        check_regular_file(loop)
