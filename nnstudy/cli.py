"""The ``nnstudy`` command line: parses arguments, calls the library, turns errors into messages.

Exit codes: 0 success, 2 bad input (spec, data, arguments, store), 1 anything else,
130 interrupted (finished trials kept).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from nnstudy.errors import NnstudyError


def _quiet_frameworks() -> None:
    """Silence start-up noise of TensorFlow and Optuna; must run before TensorFlow is imported.

    TensorFlow's C++ core prints its oneDNN notice before its log level is read, so stderr is
    pointed at /dev/null while it is imported (an import error still raises normally).
    """
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    warnings.filterwarnings("ignore", message=".*experimental.*")
    if os.environ["KERAS_BACKEND"] == "tensorflow" and "tensorflow" not in sys.modules:
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
                try:
                    import tensorflow  # noqa: F401
                finally:
                    os.dup2(saved, 2)
        finally:
            os.close(saved)


class _Group(click.Group):
    """Turns nnstudy errors into one-line messages with the right exit code (the one boundary)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NnstudyError as err:
            exc = click.ClickException(str(err))
            exc.exit_code = err.exit_code
            raise exc from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nnstudy")
def cli() -> None:
    """Hyperparameter studies for Keras models: Optuna searches, MLflow records every run."""


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
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), help="Defaults to [study].sampler.")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), help="Defaults to [study].pruner.")
@click.option("--enqueue", "enqueue_file", type=click.Path(path_type=Path),
              help="JSON list of parameter dicts to try first.")
@click.option("--no-progress", is_flag=True, help="Hide the live progress display.")
def run(spec: Path, n_trials: int | None, timeout: float | None, study_name: str | None, storage: str | None,
        tracking_uri: str | None, seed: int | None, sampler: str | None, pruner: str | None,
        enqueue_file: Path | None, no_progress: bool) -> None:
    """Run a study from SPEC (a TOML file), or add trials to it if it exists."""
    from nnstudy.spec import load_spec

    study_spec = load_spec(spec, overrides=_study_overrides(
        n_trials=n_trials, timeout=timeout, study_name=study_name, seed=seed, sampler=sampler, pruner=pruner))
    _quiet_frameworks()
    from rich.console import Console

    from nnstudy.progress import leaderboard
    from nnstudy.runner import load_enqueue_file, run_study

    extra = load_enqueue_file(enqueue_file, study_spec) if enqueue_file else []
    signal.signal(signal.SIGTERM, _raise_interrupt)
    outcome = run_study(study_spec, storage=storage, tracking_uri=tracking_uri, extra_enqueue=extra,
                        show_progress=not no_progress)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(leaderboard(outcome.study))
    best = outcome.best_trial
    if best is not None:
        console.print(f"best: trial {best.number}, {study_spec.study.metric} = {best.value:.4f} "
                      f"at epoch {best.user_attrs.get('best_epoch')}")
    console.print(f"MLflow UI: {outcome.store.ui_command()}")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=True, path_type=Path))
def validate(spec: Path) -> None:
    """Check SPEC and its data without running anything or writing any file."""
    from nnstudy.data import prepare
    from nnstudy.spec import load_spec

    study_spec = load_spec(spec)
    data = prepare(study_spec)
    summary = {"study": study_spec.name, "direction": study_spec.direction, "metric": study_spec.study.metric,
               "searched": study_spec.space.searched, "data": data.summary()}
    click.echo(f"{spec}: ok")
    click.echo(json.dumps(summary, indent=2))


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="nnstudy")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
