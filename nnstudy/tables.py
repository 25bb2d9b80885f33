"""Reading the user's tables: CSV (delimiter sniffed, UTF-8) and Parquet files, rejecting what
cannot be a training table, plus the raw table of a spec's ``[data]`` section."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd

from nnstudy.datasets import BUILTIN_TARGETS, builtin_frame
from nnstudy.errors import DataError
from nnstudy.files import regular_file
from nnstudy.spec import DataSection


def load_frame(section: DataSection, base_dir: Path, spec_file: Any = None) -> tuple[pd.DataFrame, str, str]:
    """Load the raw table. Returns ``(frame, target column, source label)``."""
    if section.is_builtin:
        frame = builtin_frame(section.source, section.n_samples, section.seed)
        target = section.target or BUILTIN_TARGETS[section.source]
        return frame, target, section.source
    path = resolve_source(section.source, base_dir)
    return (read_table(path, spec_file, delimiter=section.delimiter, decimal=section.decimal), str(section.target),
            str(path))


def resolve_source(source: str, base_dir: Path) -> Path:
    """A file source: absolute, or relative to the spec's folder."""
    path = Path(source)
    return path if path.is_absolute() else base_dir / path


def check_regular_file(path: Path, spec_file: Any = None) -> None:
    """The file of ``[data].source`` is a regular file (see :func:`nnstudy.files.regular_file`)."""
    regular_file(path, field="[data].source", spec_file=spec_file,
                 allowed=f"a built-in set ({', '.join(BUILTIN_TARGETS)}, digits_images) or a .csv/.parquet/.npz file "
                 "relative to the spec")


def read_table(path: Path, spec_file: Any = None, *, delimiter: str | None = None, decimal: str = ".") -> pd.DataFrame:
    """Read a CSV or Parquet file, rejecting what cannot be a training table.

    ``delimiter`` defaults to the one sniffed from the file; ``decimal`` (default ``.``) is the CSV's
    decimal mark (``,`` in much of Europe).
    """
    check_regular_file(path, spec_file)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for a bad file
            raise DataError(path, f"cannot be read as Parquet: {err}") from None
    elif suffix in (".csv", ".tsv", ".txt"):
        frame = _read_csv(path, delimiter, decimal)
    else:
        raise DataError(path, f"unknown file type {suffix!r}; allowed: .csv, .tsv, .txt, .parquet")
    if frame.columns.duplicated().any():
        dup = frame.columns[frame.columns.duplicated()][0]
        raise DataError(path, "duplicate column name; allowed: unique column names", column=str(dup))
    if len(frame) == 0:
        raise DataError(path, "has a header but no rows; allowed: at least one data row")
    for col in frame.columns:
        if frame[col].dtype == object:
            values = frame[col].dropna()
            nested = values.map(lambda v: not isinstance(v, (str, bytes, bool, int, float))).any()
            if nested:
                kind = type(values[values.map(lambda v: not isinstance(v, (str, bytes, bool, int, float)))].iloc[0])
                raise DataError(path, f"holds {kind.__name__} values (lists, structs or arrays) in cells; allowed: "
                                "one number or text per cell (flatten the column first)", column=str(col))
    return frame


def _read_csv(path: Path, delimiter: str | None, decimal: str) -> pd.DataFrame:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(path, "is not UTF-8 text; allowed: a UTF-8 CSV file") from None
    if not text.strip():
        raise DataError(path, "is empty; allowed: a CSV file with a header row and data rows")
    sample = text[:65536]
    if delimiter is None:
        try:
            dialect = csv.Sniffer().sniff(sample.splitlines()[0] if "\n" not in sample.strip() else sample,
                                          delimiters=",;\t| ")
            delimiter = dialect.delimiter
        except csv.Error:
            delimiter = ","
    header = next(csv.reader([sample.splitlines()[0]], delimiter=delimiter))
    names = [h.strip() for h in header]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise DataError(path, "duplicate column name; allowed: unique column names", column=dups[0])
    try:
        return pd.read_csv(path, sep=delimiter, decimal=decimal, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(path, f"cannot be parsed as CSV: {err}") from None
