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
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from nnstudy.diagnosis import Diagnosis, Label, diagnose
from nnstudy.contract import STUDY_EXPERIMENT, TrialRecord
from nnstudy.pareto import directions, first_value, front, front_rows, is_multi, objective_names, sort_key

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: trials whose curves are worth a diagnosis (RUNNING/WAITING ones are not finished)
DIAGNOSED_STATES = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
#: the columns of ``trials_frame`` around the parameter columns
LEAD_COLUMNS = ("number", "state", "value")
TAIL_COLUMNS = ("best_epoch", "stopped_epoch", "duration_s", "diagnosis", "fail_reason", "mlflow_run_id")
#: columns after ``value`` when trials have seed repeats: "mean ± sd (n=K)" and the standard deviation
SPREAD_COLUMNS = ("spread", "value_sd")

Curves = tuple[list[float], list[float]]


def spread_text(rec: TrialRecord) -> str | None:
    """``0.4123 ± 0.0134 (n=3)``: the mean and standard deviation of a trial's repeats (None without)."""
    if rec.spread is None:
        return None
    mean, sd = rec.spread
    return f"{mean:.4g} ± {sd:.2g} (n={len(rec.repeat_values)})"


def close_call(best: TrialRecord, runner_up: TrialRecord | None) -> dict[str, Any] | None:
    """Seed repeats: the best trial's lead over the runner-up and whether it is within one standard
    deviation of the best trial's repeats (the ranking may then be noise); None without repeats."""
    if best.spread is None or runner_up is None or best.value is None or runner_up.value is None:
        return None
    lead, sd = abs(float(runner_up.value) - float(best.value)), best.spread[1]
    return {"runner_up": runner_up.number, "runner_up_value": runner_up.value, "runner_up_spread":
            spread_text(runner_up), "lead": lead, "sd": sd, "within_one_sd": lead <= sd}


def close_call_text(number: int, call: dict[str, Any]) -> str:
    """The warning line for a best trial whose lead is within one standard deviation."""
    return (f"note: trial {number} leads trial {call['runner_up']} by {call['lead']:.3g}, within one standard "
            f"deviation of its repeats ({call['sd']:.3g}): the ranking may be noise (more repeats tell)")


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
    """Reads each run's curves at most once during one call (no global cache). The MLflow client is
    asked of ``connect`` when curves are first needed: trials that recorded their diagnosis need none."""

    connect: Callable[[], MlflowClient] | None
    study_attrs: dict[str, Any] = field(default_factory=dict)
    seen: dict[str, Curves | None] = field(default_factory=dict)
    opened: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient | None:
        if self.opened is None and self.connect is not None:
            self.opened = self.connect()
        return self.opened

    def curves(self, trial: FrozenTrial) -> Curves | None:
        run_id = TrialRecord.from_trial(trial, self.study_attrs).run_id
        if self.connect is None or not run_id:
            return None
        if run_id not in self.seen:
            from mlflow.exceptions import MlflowException

            client = self.client
            assert client is not None
            try:
                self.seen[run_id] = read_curves(client, str(run_id))
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
    # several objectives: a column per other objective, and whether the trial is on the Pareto front
    measures = [*objective_names(study, "value")[1:], "pareto"] if is_multi(study) else []
    # seed repeats: the spread of each trial's repeats
    spreads = SPREAD_COLUMNS if any(TrialRecord.from_trial(t).spread for t in trials) else ()
    fixed = {*LEAD_COLUMNS, *TAIL_COLUMNS, *measures, *spreads}
    columns = {k: f"param_{k}" if k in fixed else k for k in names}
    on_front = {t.number for t in front(study)} if measures else set()
    rows = []
    for t in trials:
        found = reader.diagnosis(t)
        rec = TrialRecord.from_trial(t, reader.study_attrs)
        more = dict(zip(measures, [*(rec.values or [None] * len(measures))[1:], t.number in on_front])) \
            if measures else {}
        rows.append({"number": t.number, "state": t.state.name, "value": rec.value, **more,
                     **({"spread": spread_text(rec), "value_sd": rec.spread[1] if rec.spread else None}
                        if spreads else {}),
                     **{columns[k]: t.params.get(k) for k in names},
                     "best_epoch": rec.best_epoch, "stopped_epoch": rec.stopped_epoch,
                     "duration_s": rec.duration_s, "diagnosis": found.label if found else None,
                     "fail_reason": rec.fail_reason, "mlflow_run_id": rec.run_id})
    return pd.DataFrame(rows, columns=[*LEAD_COLUMNS, *spreads, *measures, *columns.values(), *TAIL_COLUMNS])


def trials_frame(study: optuna.Study, client: MlflowClient | None = None, *,
                 connect: Callable[[], MlflowClient] | None = None) -> pd.DataFrame:
    """One row per trial: number, state, value, each parameter (a column per name; ``param_<name>``
    if it clashes with a fixed column), best_epoch, stopped_epoch, duration_s, diagnosis,
    fail_reason, mlflow_run_id.

    A trial's ``diagnosis`` is the one recorded when it ended; a finished trial without one has it
    computed from its curves in MLflow (two calls per such trial) when ``client`` is given, or
    ``connect``, a function that opens the client the first time curves are needed (none: no MLflow
    import for a study whose trials all recorded theirs). Without either only diverged trials get one.
    """
    return _frame(study, _CurveReader(connect or ((lambda: client) if client is not None else None),
                                      study.user_attrs))


def _sorted_complete(study: optuna.Study) -> list[FrozenTrial]:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values is not None]
    return sorted(done, key=sort_key(study))


def _varied_params(trials: list[FrozenTrial]) -> list[str]:
    values: dict[str, set[str]] = {}
    for t in trials:
        for k, v in t.params.items():
            values.setdefault(k, set()).add(repr(v))
    return sorted(k for k, seen in values.items() if len(seen) > 1)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _spread_info(best: FrozenTrial, runner_up: FrozenTrial | None) -> dict[str, Any]:
    """best_params.json with seed repeats: the best trial's spread and its lead over the runner-up."""
    rec = TrialRecord.from_trial(best)
    if rec.spread is None:
        return {}
    call = close_call(rec, TrialRecord.from_trial(runner_up) if runner_up is not None else None)
    return {"spread": spread_text(rec), "mean": rec.spread[0], "sd": rec.spread[1],
            "repeat_values": list(rec.repeat_values), **({"close_call": call} if call else {}),
            **({"note": close_call_text(rec.number, call)} if call and call["within_one_sd"] else {})}


def _curve_title(trial: FrozenTrial, metric: str, found: Diagnosis | None) -> tuple[str, str]:
    text = spread_text(TrialRecord.from_trial(trial))  # seed repeats: the curves are the mean of the repeats
    shown = f", repeats {text}" if text else ""
    head = (f"trial {trial.number}: {metric}={_short(first_value(trial))}{shown} | "
            f"{found.label if found else 'no curves'}")
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


def import_plotting() -> None:
    """Import what the report draws with (seconds of a study's end otherwise): a process with a core to
    spare -- the parent while the last trials run -- calls this, so the report at the end only draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import optuna.importance  # noqa: F401
    import optuna.visualization  # noqa: F401
    import optuna.visualization.matplotlib  # noqa: F401
    import plotly.graph_objects  # noqa: F401


#: the depth of fANOVA's trees: Optuna's default (64) lets each tree grow a leaf per trial, and its
#: pure-Python marginal variances then cost ~20 s of CPU at 1000 trials (5 s at 200); 64 leaves at most
#: bound that near 1 s and rank parameters as the full depth does
FANOVA_MAX_DEPTH = 6


def _importance_once() -> optuna.importance.BaseImportanceEvaluator:
    """Optuna's default importance evaluator (fANOVA, trees of depth ``FANOVA_MAX_DEPTH``), computed once for
    both drawings of the param_importances plot (the HTML and the PNG): the forest is the slow part of the
    report. Made here, not at import: ``optuna.importance`` imports scikit-learn and SciPy (seconds), which
    ``nnstudy trials`` (this module's table) never needs."""
    import optuna.importance

    class ImportanceOnce(optuna.importance.BaseImportanceEvaluator):
        def __init__(self) -> None:
            self._evaluator = optuna.importance.FanovaImportanceEvaluator(max_depth=FANOVA_MAX_DEPTH, seed=0)
            self._done: dict[Any, dict[str, float]] = {}

        def evaluate(self, study: optuna.Study, params: list[str] | None = None, *,
                     target: Callable[[optuna.trial.FrozenTrial], float] | None = None) -> dict[str, float]:
            key = (tuple(params) if params is not None else None, target)
            if key not in self._done:
                self._done[key] = self._evaluator.evaluate(study, params, target=target)
            return dict(self._done[key])

    return ImportanceOnce()


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
        return _write_all(_Uncopied(study), out_dir, _CurveReader(lambda: client, study.user_attrs), metric, top)


class _Uncopied(optuna.Study):
    """The study as the report reads it: its trials are never deep-copied. Optuna's plots ask for
    ``study.trials`` (a deep copy of every trial) again and again -- the importance plot once per
    parameter -- which costs seconds at a thousand trials; they only read them."""

    def __init__(self, study: optuna.Study) -> None:
        super().__init__(study.study_name, study._storage, sampler=study.sampler, pruner=study.pruner)

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return super().get_trials(deepcopy=False, states=states)


#: the parallel-coordinate plot draws a line per trial: a long study's thousand lines take seconds to draw
#: and show nothing but a tangle, so it draws the best trials only, saying so in its title
PARALLEL_MAX_TRIALS = 100


class _Only(_Uncopied):
    """The study with only some of its trials (``numbers``), as a plot reads it."""

    def __init__(self, study: optuna.Study, numbers: set[int]) -> None:
        super().__init__(study)
        self._numbers = numbers

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return [t for t in super().get_trials(deepcopy=False, states=states) if t.number in self._numbers]


def _parallel_view(study: optuna.Study, done: list[FrozenTrial]) -> tuple[optuna.Study, str | None]:
    """The study the parallel-coordinate plot draws -- its best ``PARALLEL_MAX_TRIALS`` complete trials
    (``done``: best first) -- and the title that says so (None: every trial is drawn)."""
    if len(done) <= PARALLEL_MAX_TRIALS:
        return study, None
    best = _Only(study, {t.number for t in done[:PARALLEL_MAX_TRIALS]})
    return best, f"Parallel Coordinate Plot (the best {PARALLEL_MAX_TRIALS} of {len(done)} complete trials)"


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
    multi = is_multi(study)
    if multi:
        written += _pareto_files(study, out_dir, reader, metric)
    elif done:
        best = done[0]
        info = {"study": study.study_name, "metric": metric, "direction": directions(study)[0],
                "trial": best.number, "value": best.value, "params": best.params,
                "best_epoch": TrialRecord.from_trial(best).best_epoch,
                "mlflow_run_id": TrialRecord.from_trial(best, study.user_attrs).run_id}
        info.update(_spread_info(best, done[1] if len(done) > 1 else None))
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
    # several objectives: Optuna's plots show the first, the study metric
    target: dict[str, Any] = {"target": first_value} if multi else {}
    importance = _importance_once()
    parallel, parallel_title = _parallel_view(study, done)
    for name, interactive, static, reason in plots:
        options = {**target, **({"evaluator": importance} if name == "param_importances" else {})}
        if reason is not None:
            skip(name, f"{name} skipped: {reason}")
            continue
        drawn, title = (parallel, parallel_title) if name == "parallel_coordinate" else (study, None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # matplotlib on one-valued axes of tiny studies
                page = interactive(drawn, target_name=metric, **options)
                if title is not None:
                    page.update_layout(title_text=title)
                page.write_html(out_dir / f"{name}.html", include_plotlyjs="directory")
                axes = static(drawn, target_name=metric, **options)
                if title is not None:
                    axes.set_title(title, y=1.03)
                fig = _figure_of(axes)
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


#: where a run's link points when the tracking URI is not a server: the UI that `nnstudy ui` starts
DEFAULT_UI = "http://127.0.0.1:5000"


def run_url(client: MlflowClient | None, experiment_id: Any, run_id: str | None) -> str | None:
    """The MLflow UI page of a run: on the tracking server, else on the UI ``nnstudy ui`` starts."""
    if not run_id or experiment_id is None:
        return None
    uri = str(getattr(client, "tracking_uri", "") or "")
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def _pareto_files(study: optuna.Study, out_dir: Path, reader: _CurveReader, metric: str) -> list[Path]:
    """Several objectives: ``pareto_front.csv``/``.json`` (the front's trials, objective values, run ids and
    links) and the front drawn as ``pareto_front.html`` (plotly; a click on a point opens its run, a linked
    table below), ``pareto_front.svg`` (each point a link to its run) and ``pareto_front.png``."""
    names = objective_names(study, metric)
    trials = front(study)
    if not trials:
        path = out_dir / "pareto_front.skipped.txt"
        path.write_text("pareto_front skipped: no complete trial yet\n", encoding="utf-8")
        return [path]
    experiment = study.user_attrs.get(STUDY_EXPERIMENT)
    rows = [{**row, "run_url": run_url(reader.client, experiment, row["mlflow_run_id"])}
            for row in front_rows(study, trials, names)]
    pd.DataFrame(rows).to_csv(out_dir / "pareto_front.csv", index=False)
    info = {"study": study.study_name, "objectives": names, "directions": directions(study), "front": rows}
    (out_dir / "pareto_front.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    written = [out_dir / "pareto_front.csv", out_dir / "pareto_front.json"]
    done = _sorted_complete(study)
    points = [(t, first_value(t), list(t.values), run_url(reader.client, experiment,
                                                            TrialRecord.from_trial(t, reader.study_attrs).run_id))
              for t in done]
    on = {t.number for t in trials}
    try:
        _pareto_static(out_dir, points, on, names)
        written += [out_dir / "pareto_front.png", out_dir / "pareto_front.svg"]
        _pareto_html(out_dir / "pareto_front.html", study.study_name, points, on, names, rows)
        written.append(out_dir / "pareto_front.html")
    except (ValueError, RuntimeError) as err:  # a degenerate front cannot be drawn; the tables stand
        path = out_dir / "pareto_front.skipped.txt"
        path.write_text(f"pareto_front plot skipped: {type(err).__name__}: {err}\n", encoding="utf-8")
        written.append(path)
    return written


Point = tuple[FrozenTrial, Any, list[float], "str | None"]


def _pareto_static(out_dir: Path, points: list[Point], on: set[int], names: list[str]) -> None:
    """The front as PNG and SVG (matplotlib): the metric against each other objective, front trials
    labelled and joined; in the SVG every point links to its run."""
    import matplotlib.pyplot as plt

    measures = names[1:]
    fig, axes = plt.subplots(1, len(measures), figsize=(6.5 * len(measures), 4.8), squeeze=False)
    for i, (ax, measure) in enumerate(zip(axes[0], measures), start=1):
        for is_front, colour, size in ((False, "lightgray", 30), (True, "tab:red", 60)):
            chosen = [p for p in points if (p[0].number in on) == is_front]
            if not chosen:
                continue
            scatter = ax.scatter([p[2][i] for p in chosen], [p[2][0] for p in chosen], c=colour, s=size,
                                 edgecolors="black", linewidths=0.5, zorder=3 if is_front else 2,
                                 label="Pareto front" if is_front else "other complete trials")
            scatter.set_urls([p[3] for p in chosen])
            if is_front:
                line = sorted((p[2][i], p[2][0]) for p in chosen)
                ax.plot(*zip(*line), color="tab:red", linewidth=1, alpha=0.6, zorder=2)
                for p in chosen:
                    ax.annotate(f"trial {p[0].number}", (p[2][i], p[2][0]), textcoords="offset points",
                                xytext=(5, 5), fontsize=8, url=p[3])
        ax.set_xlabel(measure)
        ax.set_ylabel(names[0])
        ax.set_title(f"{names[0]} against {measure}", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("Pareto front (each point links to its MLflow run in the SVG)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "pareto_front.png", dpi=90)
    fig.savefig(out_dir / "pareto_front.svg")
    plt.close(fig)


def _pareto_html(path: Path, study_name: str, points: list[Point], on: set[int], names: list[str],
                 rows: list[dict[str, Any]]) -> None:
    """The front as an interactive page: a click on a point opens its run; below, the front's table with links."""
    import html

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    measures = names[1:]
    fig = make_subplots(rows=1, cols=len(measures), subplot_titles=[f"{names[0]} against {m}" for m in measures])
    for i, measure in enumerate(measures, start=1):
        for is_front, colour in ((False, "#c0c0c0"), (True, "#d62728")):
            chosen = sorted((p for p in points if (p[0].number in on) == is_front), key=lambda p: p[2][i])
            if not chosen:
                continue
            hover = ["<br>".join([f"trial {p[0].number}", *(f"{n}={v:.6g}" for n, v in zip(names, p[2])),
                                  *(f"{k}={_short(v)}" for k, v in sorted(p[0].params.items()))]) for p in chosen]
            fig.add_trace(go.Scatter(
                x=[p[2][i] for p in chosen], y=[p[2][0] for p in chosen], customdata=[p[3] or "" for p in chosen],
                text=hover, hoverinfo="text", mode="lines+markers+text" if is_front else "markers",
                textposition="top right", texttemplate=[f"trial {p[0].number}" for p in chosen] if is_front else None,
                name="Pareto front" if is_front else "other complete trials", legendgroup=str(is_front),
                showlegend=i == 1, marker={"color": colour, "size": 11 if is_front else 8,
                                           "line": {"width": 1, "color": "black"}},
                line={"color": colour, "shape": "hv"} if is_front else None), row=1, col=i)
        fig.update_xaxes(title_text=measure, row=1, col=i)
        fig.update_yaxes(title_text=names[0], row=1, col=i)
    fig.update_layout(title_text=f"study {study_name!r}: Pareto front (click a point to open its MLflow run)",
                      height=520, width=max(700, 620 * len(measures)))
    click = ("document.getElementById('{plot_id}').on('plotly_click', function(data) {"
             " var url = data.points[0].customdata; if (url) { window.open(url, '_blank'); } });")
    fig.write_html(path, include_plotlyjs="directory", post_script=click)
    head = ["trial", *names, "best_epoch", "MLflow run"]
    body = []
    for row in rows:
        url, run = row.get("run_url"), row.get("mlflow_run_id") or ""
        link = f'<a href="{html.escape(url)}">{html.escape(run)}</a>' if url else html.escape(run)
        cells = [str(row["trial"]), *(f"{row[n]:.6g}" for n in names), html.escape(str(row.get("best_epoch"))), link]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = ("<h3>Pareto front</h3><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">"
             "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(body) + "</table>")
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("</body>", table + "</body>", 1), encoding="utf-8")
