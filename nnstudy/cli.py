"""The ``nnstudy`` command line: parses arguments, calls the library, turns errors into messages.

Exit codes: 0 success, 2 bad input (spec, data, arguments, store), 1 anything else,
130 interrupted (finished trials kept).
"""

from __future__ import annotations

import json
import threading
import sys
from pathlib import Path
from typing import Any

import click

from nnstudy.errors import NnstudyError


class _Failure(click.ClickException):
    """A library error as a one-line message with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance


class _Group(click.Group):
    """Turns nnstudy errors into one-line messages with the right exit code (the one boundary)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NnstudyError as err:
            raise _Failure(str(err), err.exit_code) from None
        except KeyboardInterrupt:  # before anything was written (click would call it "Aborted!", exit 1)
            raise _Failure("interrupted", 130) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nnstudy")
def cli() -> None:
    """Hyperparameter studies for Keras models: Optuna searches, MLflow records every run."""


class _Workers(click.ParamType):  # type: ignore[type-arg]
    """``--workers``: ``auto`` or an integer >= 1."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r}: allowed: auto or an integer >= 1", param, ctx)


def _study_overrides(**values: Any) -> dict[str, dict[str, Any]]:
    study = {k: v for k, v in values.items() if v is not None}
    if "study_name" in study:
        study["name"] = study.pop("study_name")
    return {"study": study}


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--n-trials", type=int, help="Trials to add in this run. Defaults to [study].n_trials.")
@click.option("--timeout", type=float, help="Stop starting new trials after this many seconds.")
@click.option("--study-name", help="Study name. Defaults to [study].name, else the spec file's name.")
@click.option("--storage", help="Optuna storage URL. Defaults to sqlite:///mlruns/optuna.db.")
@click.option("--tracking-uri", help="MLflow tracking URI. Defaults to $MLFLOW_TRACKING_URI, else "
              "sqlite:///mlruns/mlflow.db.")
@click.option("--seed", type=int, help="Study seed. Defaults to [study].seed.")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid", "nsga2"]), help="Defaults to [study].sampler.")
@click.option("--pruner", type=click.Choice(["median", "percentile", "asha", "hyperband", "none"]),
              help="Defaults to [study].pruner.")
@click.option("--enqueue", "enqueue_file", type=click.Path(path_type=Path),
              help="JSON list of parameter dicts to try first.")
@click.option("--workers", type=_Workers(), default="auto", show_default=True, envvar="NNSTUDY_WORKERS",
              help="Worker processes on this machine, sharing the cores (the trial count stays exact); auto: one "
                   "per core (at most one per trial), or 1 where there is a GPU or a single core.")
@click.option("--gpus", help="GPUs to place workers on, e.g. 0,1 or all (CUDA_VISIBLE_DEVICES per worker).")
@click.option("--trials-per-gpu", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes sharing each GPU.")
@click.option("--backend", type=click.Choice(["tensorflow", "jax", "torch"]),
              help="Keras backend. Defaults to [train].backend (tensorflow).")
@click.option("--no-progress", is_flag=True, help="Hide the live progress display.")
def run(spec: Path, n_trials: int | None, timeout: float | None, study_name: str | None, storage: str | None,
        tracking_uri: str | None, seed: int | None, sampler: str | None, pruner: str | None,
        enqueue_file: Path | None, workers: int | str, gpus: str | None, trials_per_gpu: int, backend: str | None,
        no_progress: bool) -> None:
    """Run a study from SPEC (a TOML file), or add trials to it if it exists.

    Several `nnstudy run` processes, on one machine or many, may share a study through the same
    --storage and --tracking-uri: the study and its parent run are created once.
    """
    from nnstudy.interrupts import GATE

    if threading.current_thread() is threading.main_thread():  # (the CLI may be driven from a thread, in tests)
        GATE.install()  # Ctrl-C / SIGTERM: KeyboardInterrupt only where no record is half-written
    try:
        _run(spec, n_trials, timeout, study_name, storage, tracking_uri, seed, sampler, pruner, enqueue_file, workers,
             gpus, trials_per_gpu, backend, no_progress)
    finally:
        if GATE.signum is None:  # (interrupted: keep ignoring further signals until the process has exited)
            GATE.restore()


def _run(spec: Path, n_trials: int | None, timeout: float | None, study_name: str | None, storage: str | None,
         tracking_uri: str | None, seed: int | None, sampler: str | None, pruner: str | None,
         enqueue_file: Path | None, workers: int | str, gpus: str | None, trials_per_gpu: int, backend: str | None,
         no_progress: bool) -> None:
    from nnstudy.spec import load_spec

    from nnstudy.schemas import SchemaTemplates

    overrides = _study_overrides(n_trials=n_trials, timeout=timeout, study_name=study_name, seed=seed,
                                 sampler=sampler, pruner=pruner)
    if backend:
        overrides["train"] = {"backend": backend}
    schemas = SchemaTemplates.start(storage, tracking_uri)  # a new store's schemas, made while TensorFlow loads
    try:
        _choose_backend(spec, backend, import_keras=True)
        study_spec = load_spec(spec, overrides=overrides)
        from nnstudy.api import run_study
        from nnstudy.enqueue import load_enqueue_file

        extra = load_enqueue_file(enqueue_file, study_spec) if enqueue_file else []
        outcome = run_study(study_spec, storage=storage, tracking_uri=tracking_uri, extra_enqueue=extra,
                            show_progress=not no_progress, workers=workers,
                            gpus=[g.strip() for g in gpus.split(",") if g.strip()] if gpus else None,
                            trials_per_gpu=trials_per_gpu, schemas=schemas)
    finally:
        if schemas is not None:
            schemas.discard()
    from nnstudy.contract import TrialRecord
    from nnstudy.progress import leaderboard

    console = _console(160)
    console.print(leaderboard(outcome.study))
    if outcome.best_trial is not None:
        best_trial = TrialRecord.from_trial(outcome.best_trial)
        spread = f" (repeats: {best_trial.spread[0]:.4f} ± {best_trial.spread[1]:.4f}, n={len(best_trial.repeat_values)})" \
            if best_trial.spread else ""
        console.print(f"best: trial {best_trial.number}, {study_spec.study.metric} = {best_trial.value:.4f}{spread} "
                      f"at epoch {best_trial.best_epoch}")
    elif study_spec.multi_objective and outcome.front:
        console.print(f"Pareto front of {', '.join(study_spec.objectives)}: trials "
                      f"{', '.join(str(t.number) for t in outcome.front)} (`nnstudy best` lists them)")
    if outcome.registered:
        console.print(f"registered trial {outcome.registered['trial']} as {outcome.registered['name']!r} version "
                      f"{outcome.registered['version']}: {outcome.registered['model_uri']}")
    console.print(f"MLflow UI: {outcome.store.ui_command()}")
    from nnstudy.servers import experiment_url

    console.print(f"  the study: {experiment_url('http://127.0.0.1:5000', outcome.experiment_id)}")


def _choose_backend(spec: Path, option: str | None, *, import_keras: bool = False) -> None:
    """Set the Keras backend (``--backend``, else the spec's ``[train].backend``) before anything imports
    Keras -- validating ``[model].layers`` does -- and refuse one that is not installed."""
    from nnstudy import runtime
    from nnstudy.spec import peek_backend

    chosen = option or peek_backend(spec) or "tensorflow"
    known = chosen in runtime.BACKEND_PACKAGES  # an unknown name is reported by the spec's validation
    runtime.configure(chosen if known else None, import_keras=import_keras,
                      backend_field="--backend" if option else f"{spec}: [train].backend")


def _console(width: int) -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else width)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=True, path_type=Path))
def validate(spec: Path) -> None:
    """Check SPEC and its data without running anything or writing any file."""
    from nnstudy import api
    from nnstudy.spec import load_spec

    _choose_backend(spec, None)
    loaded = load_spec(spec)
    summary = api.validate(loaded)
    click.echo(f"{spec}: ok")
    if loaded.checkpoint_warning:
        click.echo(f"warning: {loaded.checkpoint_warning}", err=True)
    click.echo(json.dumps(summary, indent=2))


def _store_options(func: Any) -> Any:
    """--study-name/--storage/--tracking-uri, shared by the commands that read a study."""
    func = click.option("--tracking-uri", help="MLflow tracking URI. Defaults to $MLFLOW_TRACKING_URI, else "
                        "sqlite:///mlruns/mlflow.db.")(func)
    func = click.option("--storage", help="Optuna storage URL. Defaults to sqlite:///mlruns/optuna.db.")(func)
    return click.option("--study-name", help="The study. Defaults to the only study in the storage.")(func)


def _records(study_name: str | None, storage: str | None, tracking_uri: str | None, *,
             import_keras: bool = False) -> Any:
    from nnstudy import api, runtime

    runtime.configure(import_keras=import_keras)
    return api.open_study(study_name, storage=storage, tracking_uri=tracking_uri)


@cli.command()
@_store_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON object (trial, value, params, run id, model_uri, reproduce command).")
def best(study_name: str | None, storage: str | None, tracking_uri: str | None, fmt: str) -> None:
    """Show the best trial: value, parameters, best epoch, run id, its model and how to reproduce it."""
    from nnstudy import api

    info = api.best(_records(study_name, storage, tracking_uri))
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    if "front" in info:  # several objectives: the Pareto front, one line per trial
        click.echo(f"study {info['study']!r}: Pareto front of {len(info['front'])} trial(s), "
                   + ", ".join(f"{n} ({d})" for n, d in zip(info["objectives"], info["directions"])))
        for t in info["front"]:
            values = ", ".join(f"{n}={v:.6g}" for n, v in t["values"].items())
            params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
            click.echo(f"trial {t['trial']}: {values} | best epoch {t['best_epoch']} | run {t['mlflow_run_id']} | "
                       f"model {t['model_uri'] or '-'} | {params}")
        click.echo(f"reproduce one: {info['front'][0]['reproduce']}  (register one: nnstudy register --trial N "
                   "--name NAME)")
        return
    command = info.pop("reproduce")
    click.echo(json.dumps(info, indent=2, ensure_ascii=False))  # a spread reads "0.41 ± 0.01"
    if info.get("close_call") and info["close_call"]["within_one_sd"]:  # seed repeats: the lead may be noise
        from nnstudy.report import close_call_text

        click.echo(close_call_text(info["trial"], info["close_call"]))
    click.echo(f"reproduce: {command}")


@cli.command()
@_store_options
@click.option("--name", required=True, help="Registered model name (letters, digits, '_', '-', '.').")
@click.option("--trial", "trial_number", type=int, help="Register this trial's model. Defaults to the best trial.")
def register(study_name: str | None, storage: str | None, tracking_uri: str | None, name: str,
             trial_number: int | None) -> None:
    """Register a trial's MLflow Model in the Model Registry and point the alias champion at it."""
    from nnstudy import api

    info = api.register(_records(study_name, storage, tracking_uri), name, trial=trial_number)
    click.echo(f"registered trial {info['trial']} of study {info['study']!r} as {info['name']!r} version "
               f"{info['version']} (alias {info['alias']}): {info['model_uri']}")
    click.echo(f"serve it: {info['serve']}")


@cli.command()
@_store_options
def sync(study_name: str | None, storage: str | None, tracking_uri: str | None) -> None:
    """Write MLflow records kept while the tracking server was unreachable (safe to repeat)."""
    from nnstudy import api

    records = _records(study_name, storage, tracking_uri)
    written = api.sync(records)
    click.echo(f"study {records.name!r}: wrote {len(written)} trial record(s) to {records.store.tracking_uri}"
               + (f" (trials {', '.join(map(str, written))})" if written else ""))


@cli.command()
@_store_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--sort", "sort_by", default="value", show_default=True,
              help="Column to sort by (best first for value); any column of the table.")
@click.option("--top", type=click.IntRange(min=1), help="Show only the first N rows.")
@click.option("--no-diagnosis", is_flag=True, help="Skip reading curves from MLflow for trials without one.")
def trials(study_name: str | None, storage: str | None, tracking_uri: str | None, fmt: str, sort_by: str,
           top: int | None, no_diagnosis: bool) -> None:
    """One row per trial: state, value, parameters, best and stopped epoch, duration, diagnosis, run id."""
    from nnstudy import api, runtime

    records = _records(study_name, storage, tracking_uri)
    runtime.freeze_imported("nnstudy.report", "nnstudy.progress")  # before a thousand trials are read
    frame = api.trials_frame(records, diagnosis=not no_diagnosis, sort=sort_by, top=top)
    if fmt == "csv":
        click.echo(frame.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(frame.to_json(orient="records", indent=2))
    else:
        from nnstudy.progress import frame_table

        _console(200).print(frame_table(frame, title=f"study {records.name!r}: {len(frame)} trial(s)"))


@cli.command()
@_store_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("nnstudy-report"),
              show_default=True, help="Folder for the report files.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="Trials whose learning curves are drawn.")
def report(study_name: str | None, storage: str | None, tracking_uri: str | None, out_dir: Path, top: int) -> None:
    """Write the study's plots (HTML and PNG), trials.csv and best_params.json to a folder."""
    from nnstudy import api, runtime
    from nnstudy.report import import_plotting

    records = _records(study_name, storage, tracking_uri)
    import_plotting()
    runtime.freeze_imported()  # before a thousand trials are read and drawn
    for path in api.report(records, out_dir, top=top):
        click.echo(str(path))


@cli.command()
@_store_options
@click.option("--trial", "trial_number", type=int, help="Trial number. Defaults to the best trial.")
@click.option("--run-id", help="MLflow run id of the trial (instead of --trial).")
@click.option("--tolerance", type=float, default=0.0, show_default=True,
              help="Largest allowed absolute difference of the study metric per epoch.")
def reproduce(study_name: str | None, storage: str | None, tracking_uri: str | None, trial_number: int | None,
              run_id: str | None, tolerance: float) -> None:
    """Re-train a trial with the same parameters, seed, split and epochs, and compare the curves."""
    if trial_number is not None and run_id is not None:
        raise click.UsageError("give --trial or --run-id, not both")
    from nnstudy import api

    from nnstudy import runtime

    records = _records(study_name, storage, tracking_uri)
    runtime.configure(records.backend(), import_keras=True, backend_field=f"study {records.name!r}: [train].backend")
    rep = api.reproduce(records, trial=trial_number, run_id=run_id)
    click.echo(f"trial {rep.trial_number}: original run {rep.original_run_id}, reproduction run {rep.run_id}")
    for key, (then, now) in sorted(rep.environment_diffs.items()):
        click.echo(f"differs: {key}: {then} -> {now}")
    if rep.note:
        click.echo(rep.note)
    click.echo(f"{'epoch':>5}  {'original':>12}  {'reproduced':>12}  {'abs diff':>10}")
    for epoch, a, b, d in rep.rows():
        click.echo(f"{epoch:>5}  {_num(a, '.6f'):>12}  {_num(b, '.6f'):>12}  {_num(d, '.3g'):>10}")
    for k, diff in sorted(rep.repeat_diffs.items()):  # seed repeats: every repeat's curve is compared
        click.echo(f"repeat {k}: max abs difference of {rep.metric}/repeat_{k}: {diff}")
    click.echo(f"max abs difference of {rep.metric}: {rep.max_abs_diff}")
    if not rep.within(tolerance):
        raise click.ClickException(f"not reproduced: max abs difference {rep.max_abs_diff} > tolerance {tolerance}")
    click.echo("reproduced within tolerance")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


@cli.command()
@_store_options
@click.option("--input", "input_file", required=True, type=click.Path(path_type=Path),
              help="CSV or Parquet file with the original feature columns, or a .npz with the array x.")
@click.option("--trial", "trial_number", type=int, help="Use this trial's model. Defaults to the best trial.")
@click.option("--output", type=click.Path(path_type=Path), help="Write predictions to this CSV (default: stdout).")
def predict(study_name: str | None, storage: str | None, tracking_uri: str | None, input_file: Path,
            trial_number: int | None, output: Path | None) -> None:
    """Predict with a trial's saved model on raw rows, giving the original class labels."""
    from nnstudy import api

    result = api.predict(_records(study_name, storage, tracking_uri, import_keras=True), input_file,
                         trial=trial_number)
    text = result.to_csv(index=False)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"{len(result)} predictions written to {output}", err=True)


def _serve(make: Any, study_name: str | None, storage: str | None, tracking_uri: str | None, host: str,
           port: int, what: str) -> None:
    from nnstudy.servers import LOCAL_HOSTS

    server = make(study_name, storage=storage, tracking_uri=tracking_uri, host=host, port=port)
    if isinstance(server, str):
        click.echo(f"the tracking server already serves the UI: {server}")
        return
    if host not in LOCAL_HOSTS:
        click.echo(f"warning: binding the {server.name} to {host} exposes {what} without authentication", err=True)
    click.echo(f"{server.name}: {server.url}  (Ctrl-C to stop)")
    sys.exit(server.run())


@cli.command()
@_store_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind. Public interfaces "
              "expose every run without authentication.")
@click.option("--port", type=int, default=5000, show_default=True, help="Port (0: a free one).")
def ui(study_name: str | None, storage: str | None, tracking_uri: str | None, host: str, port: int) -> None:
    """Start the MLflow UI on this study's store and print the study's link."""
    from nnstudy.servers import mlflow_ui

    _serve(mlflow_ui, study_name, storage, tracking_uri, host, port, "every run")


@cli.command()
@_store_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind. Public interfaces "
              "expose the study without authentication.")
@click.option("--port", type=int, default=0, help="Port. Defaults to a free one, printed.")
def dashboard(study_name: str | None, storage: str | None, tracking_uri: str | None, host: str, port: int) -> None:
    """Start optuna-dashboard on this study's Optuna storage (pip install "nnstudy[dashboard]")."""
    from nnstudy.servers import optuna_dashboard

    _serve(optuna_dashboard, study_name, storage, tracking_uri, host, port, "the study")


def main() -> None:
    """Console-script entry point.

    A command that loaded TensorFlow (run, reproduce, predict) ends with ``os._exit`` once its output is
    flushed: every record is committed by then, and the interpreter's teardown of TensorFlow, MLflow and
    SQLAlchemy took ~2 s of every such command while writing nothing."""
    try:
        cli.main(prog_name="nnstudy")
        code: Any = 0
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = 130
    except SystemExit as done:
        code = done.code
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    import logging
    import os

    from nnstudy.store import checkpoint_written

    checkpoint_written()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
