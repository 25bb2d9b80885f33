"""Study-level report files: Optuna's plots, learning curves of the best trials, the trial table.

``write_report`` writes every plot twice: interactive HTML (plotly; the plotly.js library is
written once beside them as ``plotly.min.js`` so the pages work offline) and a static PNG
(matplotlib, Agg backend: no display, no browser). A plot that cannot be drawn (too few
trials, one searched parameter, ...) is replaced by ``<name>.skipped.txt`` saying why.
Learning curves are read from the trials' MLflow child runs (metrics ``loss`` and
``val_loss``, step = 1-based epoch) and labelled with ``nnstudy.diagnosis.diagnose``.
"""

from __future__ import annotations

import json
import math
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

import optuna
import pandas as pd
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial, TrialState

from nnstudy.diagnosis import Diagnosis, Label, diagnose
from nnstudy.contract import TrialRecord

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: trials whose curves are worth a diagnosis (RUNNING/WAITING ones are not finished)
DIAGNOSED_STATES = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
#: the columns of ``trials_frame`` around the parameter columns
LEAD_COLUMNS = ("number", "state", "value")
TAIL_COLUMNS = ("best_epoch", "stopped_epoch", "duration_s", "diagnosis", "fail_reason", "mlflow_run_id")

Curves = tuple[list[float], list[float]]


def read_curves(client: MlflowClient, run_id: str) -> Curves:
    """Per-epoch ``loss`` and ``val_loss`` of one run, index 0 = epoch 1.

    An epoch missing between logged ones becomes NaN: the tracker drops non-finite values,
    so a gap means the loss was NaN or infinite there.
    """
    out: list[list[float]] = []
    for name in ("loss", "val_loss"):
        by_step = {m.step: m.value for m in client.get_metric_history(run_id, name) if m.step >= 1}
        out.append([by_step.get(step, math.nan) for step in range(1, max(by_step, default=0) + 1)])
    return out[0], out[1]


@dataclass
class _CurveReader:
    """Reads each run's curves at most once during one call (no global cache)."""

    client: MlflowClient | None
    study_attrs: dict[str, Any] = field(default_factory=dict)
    seen: dict[str, Curves | None] = field(default_factory=dict)

    def curves(self, trial: FrozenTrial) -> Curves | None:
        run_id = TrialRecord.from_trial(trial, self.study_attrs).run_id
        if self.client is None or not run_id:
            return None
        if run_id not in self.seen:
            try:
                self.seen[run_id] = read_curves(self.client, str(run_id))
            except MlflowException:  # the run was deleted from MLflow
                self.seen[run_id] = None
        return self.seen[run_id]

    def diagnosis(self, trial: FrozenTrial) -> Diagnosis | None:
        if trial.state not in DIAGNOSED_STATES:
            return None
        rec = TrialRecord.from_trial(trial, self.study_attrs)
        if rec.diagnosis is not None:  # recorded by the objective when the trial ended
            return Diagnosis(cast(Label, rec.diagnosis), rec.diagnosis_epoch, rec.diagnosis_detail)
        if rec.fail_reason == "diverged":  # its last, non-finite epochs were never logged
            return Diagnosis("diverged", rec.diverged_at, f"loss became NaN/infinite or exploded at epoch "
                             f"{rec.diverged_at}: the learning rate is too high")
        curves = self.curves(trial)
        if curves is None or not curves[0]:
            return None
        return diagnose(*curves, best_epoch=rec.best_epoch)


def _frame(study: optuna.Study, reader: _CurveReader) -> pd.DataFrame:
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    fixed = {*LEAD_COLUMNS, *TAIL_COLUMNS}
    columns = {k: f"param_{k}" if k in fixed else k for k in names}
    rows = []
    for t in trials:
        found = reader.diagnosis(t)
        rec = TrialRecord.from_trial(t, reader.study_attrs)
        rows.append({"number": t.number, "state": t.state.name, "value": t.value,
                     **{columns[k]: t.params.get(k) for k in names},
                     "best_epoch": rec.best_epoch, "stopped_epoch": rec.stopped_epoch,
                     "duration_s": rec.duration_s, "diagnosis": found.label if found else None,
                     "fail_reason": rec.fail_reason, "mlflow_run_id": rec.run_id})
    return pd.DataFrame(rows, columns=[*LEAD_COLUMNS, *columns.values(), *TAIL_COLUMNS])


def trials_frame(study: optuna.Study, client: MlflowClient | None = None) -> pd.DataFrame:
    """One row per trial: number, state, value, each parameter (a column per name; ``param_<name>``
    if it clashes with a fixed column), best_epoch, stopped_epoch, duration_s, diagnosis,
    fail_reason, mlflow_run_id.

    ``diagnosis`` is read from MLflow (two calls per COMPLETE/FAIL/PRUNED trial) when ``client``
    is given; without it only diverged trials get one.
    """
    return _frame(study, _CurveReader(client, study.user_attrs))


def _sorted_complete(study: optuna.Study) -> list[FrozenTrial]:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return sorted(done, key=lambda t: float(t.value or 0.0), reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)


def _varied_params(trials: list[FrozenTrial]) -> list[str]:
    values: dict[str, set[str]] = {}
    for t in trials:
        for k, v in t.params.items():
            values.setdefault(k, set()).add(repr(v))
    return sorted(k for k, seen in values.items() if len(seen) > 1)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _curve_title(trial: FrozenTrial, metric: str, found: Diagnosis | None) -> tuple[str, str]:
    head = f"trial {trial.number}: {metric}={_short(trial.value)} | {found.label if found else 'no curves'}"
    return head, " ".join(f"{k}={_short(v)}" for k, v in sorted(trial.params.items()))


def _marks(trial: FrozenTrial, loss: list[float], val: list[float]) -> list[tuple[str, int, float, str, str]]:
    """(label, epoch, y, colour, line style) for the stopping point, then the best epoch (drawn last)."""
    curve = val if val else loss
    out: list[tuple[str, int, float, str, str]] = []
    rec = TrialRecord.from_trial(trial)
    best, stop = rec.best_epoch, rec.stopped_epoch or len(loss)
    if isinstance(best, int) and 1 <= best <= len(curve):
        out.append((f"best epoch {best}", best, curve[best - 1], "green", "dash"))
    if isinstance(stop, int) and 1 <= stop <= len(curve):
        what = "early stop" if rec.early_stopped else "stopped"
        out.insert(0, (f"{what} at epoch {stop}", stop, curve[stop - 1], "red", "dot"))
    return out


def _learning_curves_png(path: Path, rows: list[tuple[FrozenTrial, Curves, Diagnosis | None]], metric: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 3.4 * len(rows)), squeeze=False)
    for ax, (trial, (loss, val), found) in zip(axes[:, 0], rows):
        ax.plot(range(1, len(loss) + 1), loss, label="training loss", color="tab:blue")
        if val:
            ax.plot(range(1, len(val) + 1), val, label="validation loss", color="tab:orange")
        for label, epoch, y, colour, style in _marks(trial, loss, val):
            best = style == "dash"  # drawn above the stopping mark when both fall on one epoch
            ax.axvline(epoch, color=colour, linestyle="--" if best else ":", label=label, zorder=3 if best else 2)
            ax.plot([epoch], [y], marker="*" if best else "X", color=colour, markersize=14 if best else 9,
                    zorder=5 if best else 4)
        if found is not None and found.label == "overfitting" and found.epoch:
            ax.axvspan(found.epoch, max(len(val), found.epoch), color="red", alpha=0.07,
                       label=f"overfitting from epoch {found.epoch}")
        head, params = _curve_title(trial, metric, found)
        ax.set_title(head + "\n" + textwrap.fill(params, 110), fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _learning_curves_html(path: Path, rows: list[tuple[FrozenTrial, Curves, Diagnosis | None]], metric: str) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = ["<br>".join(_curve_title(t, metric, found)) for t, _, found in rows]
    fig = make_subplots(rows=len(rows), cols=1, subplot_titles=titles, vertical_spacing=90 / (340 * len(rows)))
    for i, (trial, (loss, val), found) in enumerate(rows, start=1):
        for name, ys, colour in (("training loss", loss, "#1f77b4"), ("validation loss", val, "#ff7f0e")):
            fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, name=name, mode="lines",
                                     line={"color": colour}, legendgroup=name, showlegend=i == 1), row=i, col=1)
        for label, epoch, y, colour, style in _marks(trial, loss, val):
            fig.add_vline(x=epoch, line_dash=style, line_color=colour, row=i, col=1)
            fig.add_trace(go.Scatter(x=[epoch], y=[y], name=label, mode="markers", showlegend=False,
                                     marker={"color": colour, "size": 11, "symbol": "star" if style == "dash" else "x"}),
                          row=i, col=1)
        if found is not None and found.label == "overfitting" and found.epoch:
            fig.add_vrect(x0=found.epoch, x1=max(len(val), found.epoch), fillcolor="red", opacity=0.07,
                          line_width=0, row=i, col=1)
        fig.update_xaxes(title_text="epoch", row=i, col=1)
        fig.update_yaxes(title_text="loss", row=i, col=1)
    fig.update_annotations(font_size=11)
    fig.update_layout(height=340 * len(rows) + 40, title_text="learning curves of the best trials")
    fig.write_html(path, include_plotlyjs="directory")


def _figure_of(axes: Any) -> Any:
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def write_report(study: optuna.Study, out_dir: Path, *, client: MlflowClient, metric: str, top: int = 5) -> list[Path]:
    """Write the report files of ``study`` into ``out_dir`` (created) and return their paths.

    Files: ``trials.csv``, ``best_params.json``, and ``<plot>.html`` + ``<plot>.png`` for
    optimization_history, param_importances, parallel_coordinate, slice and learning_curves
    (the ``top`` best complete trials), with ``plotly.min.js`` beside the pages. A file that
    cannot be made is replaced by ``<name>.skipped.txt`` giving the reason.
    """
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context():  # optuna's plots switch the global style to ggplot: undo it afterwards
        return _write_all(study, out_dir, _CurveReader(client, study.user_attrs), metric, top)


def _write_all(study: optuna.Study, out_dir: Path, reader: _CurveReader, metric: str, top: int) -> list[Path]:
    import matplotlib.pyplot as plt
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl

    written: list[Path] = []

    def skip(name: str, reason: str) -> None:
        path = out_dir / f"{name}.skipped.txt"
        path.write_text(reason + "\n", encoding="utf-8")
        written.append(path)

    _frame(study, reader).to_csv(out_dir / "trials.csv", index=False)
    written.append(out_dir / "trials.csv")
    done = _sorted_complete(study)
    if done:
        best = done[0]
        info = {"study": study.study_name, "metric": metric, "direction": study.direction.name.lower(),
                "trial": best.number, "value": best.value, "params": best.params,
                "best_epoch": TrialRecord.from_trial(best).best_epoch,
                "mlflow_run_id": TrialRecord.from_trial(best, study.user_attrs).run_id}
        (out_dir / "best_params.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        written.append(out_dir / "best_params.json")
    else:
        skip("best_params", "no complete trial yet")

    varied = _varied_params(done)
    plots: list[tuple[str, Callable[..., Any], Callable[..., Any], str | None]] = [
        ("optimization_history", vis.plot_optimization_history, vis_mpl.plot_optimization_history,
         None if done else "no complete trial yet"),
        ("param_importances", vis.plot_param_importances, vis_mpl.plot_param_importances,
         None if len(done) >= 2 and len(varied) >= 2 else
         f"needs at least 2 complete trials and 2 parameters that vary (has {len(done)} and {len(varied)})"),
        ("parallel_coordinate", vis.plot_parallel_coordinate, vis_mpl.plot_parallel_coordinate,
         None if done and varied else "needs a complete trial and a parameter that varies"),
        ("slice", vis.plot_slice, vis_mpl.plot_slice, None if done and varied else "needs a complete trial and a parameter that varies"),
    ]
    for name, interactive, static, reason in plots:
        if reason is not None:
            skip(name, f"{name} skipped: {reason}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # matplotlib on one-valued axes of tiny studies
                interactive(study, target_name=metric).write_html(out_dir / f"{name}.html", include_plotlyjs="directory")
                fig = _figure_of(static(study, target_name=metric))
                fig.savefig(out_dir / f"{name}.png", dpi=90, bbox_inches="tight")
                plt.close(fig)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # optuna refuses degenerate studies
            skip(name, f"{name} skipped: {type(err).__name__}: {err}")
            continue
        written += [out_dir / f"{name}.html", out_dir / f"{name}.png"]

    rows = []
    for trial in done[:top]:
        curves = reader.curves(trial)
        if curves is not None and curves[0]:
            rows.append((trial, curves, reader.diagnosis(trial)))
    if rows:
        _learning_curves_png(out_dir / "learning_curves.png", rows, metric)
        _learning_curves_html(out_dir / "learning_curves.html", rows, metric)
        written += [out_dir / "learning_curves.png", out_dir / "learning_curves.html"]
    else:
        skip("learning_curves", "no complete trial with loss curves in MLflow")
    if (out_dir / "plotly.min.js").exists():
        written.append(out_dir / "plotly.min.js")
    return written
