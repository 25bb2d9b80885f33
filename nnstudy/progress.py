"""The live display of a running study (stderr) and the leaderboard printed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import optuna
from rich.box import HEAVY_HEAD
from rich.cells import cell_len, chop_cells, set_cell_size
from rich.console import Console, ConsoleOptions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from nnstudy.contract import TrialRecord
from nnstudy.pareto import best_trials, first_value, front, is_multi, objective_names, sort_key

if TYPE_CHECKING:
    import pandas as pd


class StudyProgress:
    """Trial i of N, best so far and the epoch of the running trial."""

    def __init__(self, n_trials: int, max_epochs: int, metric: str, *, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self.metric = metric
        self.max_epochs = max_epochs
        self.best: float | None = None
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=self.console, transient=False,
            disable=not enabled,
        )
        self._task = self._progress.add_task("trials", total=n_trials, status="starting")

    def __enter__(self) -> StudyProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def _best_text(self) -> str:
        return f"best {self.metric}={self.best:.4g}" if self.best is not None else "best -"

    def on_epoch(self, trial_number: int, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get(self.metric)
        now = f"{self.metric}={value:.4g}" if value is not None else ""
        self._progress.update(self._task, status=f"{self._best_text()} | trial {trial_number} "
                              f"epoch {epoch}/{self.max_epochs} {now}")

    def show(self, study: optuna.Study, done: int, *, running: int) -> None:
        """Progress of several worker processes, read from the shared storage."""
        self.best = _best_value(study)
        self._progress.update(self._task, completed=done,
                              status=f"{self._best_text()} | {running} worker(s) running")

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.best = _best_value(study)
        self._progress.update(self._task, advance=1, status=f"{self._best_text()} | trial {trial.number} "
                              f"{trial.state.name.lower()}")


def _best_value(study: optuna.Study) -> float | None:
    """The best value of the study metric so far (with several objectives: the best on the Pareto front)."""
    trials = best_trials(study)
    return first_value(min(trials, key=sort_key(study))) if trials else None


def leaderboard(study: optuna.Study, *, top: int = 5) -> Table:
    """The top finished trials (value, params, best epoch, state, run id) as a rich table; with several
    objectives, the trials of the Pareto front with a column per objective."""
    multi = is_multi(study)
    done = front(study) if multi else [t for t in study.get_trials(deepcopy=False)
                                       if t.state == optuna.trial.TrialState.COMPLETE]
    done.sort(key=sort_key(study))
    measures = objective_names(study, "value")[1:] if multi else []
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    caption = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    title = (f"study {study.study_name!r}: Pareto front, {min(top, len(done))} of {len(done)} trials" if multi else
             f"study {study.study_name!r}: top {min(top, len(done))} of {len(done)} complete trials")
    table = Table(title=title, caption=caption)
    names = sorted({k for t in done[:top] for k in t.params})
    for col in ("#", "trial", "value", *measures, "best ep", "stop ep", *names):
        table.add_column(_SHORT.get(col, col), justify="right" if col not in ("optimizer", "activation") else "left")
    table.add_column("mlflow run", no_wrap=True)
    for rank, t in enumerate(done[:top], start=1):
        rec = TrialRecord.from_trial(t, study.user_attrs)
        params = [_fmt(t.params.get(k, "")) for k in names]
        others = [f"{v:.6g}" for v in (rec.values or ())[1:len(measures) + 1]]
        table.add_row(str(rank), str(t.number), f"{rec.value:.4f}", *others, _fmt(rec.best_epoch),
                      _fmt(rec.stopped_epoch), *params, _fmt(rec.run_id))
    return table


_SHORT = {"learning_rate": "lr", "batch_size": "batch", "activation": "act", "optimizer": "opt"}


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def frame_table(frame: pd.DataFrame, *, title: str) -> FrameTable:
    """A data frame as a table for the terminal (missing values blank, floats to 4 significant digits)."""
    rows = [["" if _missing(v) else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row]
            for row in frame.itertuples(index=False)]
    return FrameTable(title, [str(col) for col in frame.columns], rows)


class FrameTable:
    """Rows of text drawn as rich draws a default ``Table`` (a heavy head, cells folded to fit the width),
    laid out in one pass: a rich ``Table`` measures and wraps every cell on its own, which takes seconds
    for the thousand rows of a long study (``nnstudy trials``)."""

    def __init__(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        self.title = title
        self.header = header
        self.rows = rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        box = HEAVY_HEAD.substitute(options)
        widths = _fit([max(map(_cell_width, column)) for column in zip(self.header, *self.rows)], options.max_width)
        padded = [w + 2 for w in widths]
        total = sum(padded) + len(padded) + 1
        yield from console.render(Text(self.title, style="table.title", justify="center"),
                                  options.update(width=min(total, options.max_width)))
        yield from (Segment(box.get_top(padded)), Segment.line())
        header_style = console.get_style("table.header")
        yield from _row_lines(self.header, widths, (box.head_left, box.head_vertical, box.head_right), header_style,
                              bottom=True)
        yield from (Segment(box.get_row(padded, level="head")), Segment.line())
        for row in self.rows:
            yield from _row_lines(row, widths, (box.mid_left, box.mid_vertical, box.mid_right), None)
        yield from (Segment(box.get_bottom(padded)), Segment.line())


def _cell_width(text: str) -> int:
    return max((len(line) if line.isascii() else cell_len(line) for line in text.split("\n")), default=0)


def _fit(widths: list[int], max_width: int) -> list[int]:
    """Column widths (without padding) shrunk, the widest first, until the table fits ``max_width``."""
    widths = [max(w, 1) for w in widths]
    excess = sum(widths) + 3 * len(widths) + 1 - max_width
    while excess > 0 and max(widths) > 1:
        widths[widths.index(max(widths))] -= 1
        excess -= 1
    return widths


def _fold(text: str, width: int) -> list[str]:
    """A cell's lines, each cut into pieces of ``width`` cells (rich's ``overflow="fold"``), padded."""
    out: list[str] = []
    for line in text.split("\n"):
        if line.isascii():
            out += [line[i:i + width].ljust(width) for i in range(0, max(len(line), 1), width)]
        else:
            out += [set_cell_size(piece, width) for piece in chop_cells(line, width) or [""]]
    return out


def _row_lines(cells: list[str], widths: list[int], edges: tuple[str, str, str], style: Style | None, *,
               bottom: bool = False) -> Iterator[Segment]:
    """The lines of one row; ``bottom``: its cells' text aligned to the bottom (rich's header)."""
    left, vertical, right = edges
    folded = [_fold(cell, width) for cell, width in zip(cells, widths)]
    height = max((len(lines) for lines in folded), default=1)
    folded = [([" " * w] * (height - len(lines)) + lines if bottom else lines + [" " * w] * (height - len(lines)))
              for lines, w in zip(folded, widths)]
    between = " " + vertical + " "
    for k in range(height):
        if style is None:  # one segment per line: a thousand rows' cells each a segment cost rich a second
            yield Segment(left + " " + between.join(lines[k] for lines in folded) + " " + right)
        else:
            yield Segment(left + " ")
            for i, lines in enumerate(folded):
                if i:
                    yield Segment(between)
                yield Segment(lines[k], style)
            yield Segment(" " + right)
        yield Segment.line()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
