"""The live display of a running study (stderr) and the leaderboard printed at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

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


def frame_table(frame: pd.DataFrame, *, title: str) -> Table:
    """A data frame as a rich table (missing values blank, floats to 4 significant digits)."""
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*("" if _missing(v) else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row))
    return table


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
