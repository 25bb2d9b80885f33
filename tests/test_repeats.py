"""Seed repeats ([study].repeats): the aggregation, the mean curves, the running value the pruner sees,
and two real tiny studies (one through the CLI: trials, best, report and an exact reproduce)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from nnstudy.cli import cli
from nnstudy.contract import TrialRecord, trial_seed
from nnstudy.repeats import (aggregate, best_repeat, combine, mean_curves, repeat_seed, spread, step_of)
from nnstudy.report import close_call, spread_text
from nnstudy.spec import StudySpec, parse_spec
from conftest import TINY_SPEC
from nnstudy.training import TrainResult


def _result(val: list[float], *, best: int, test: float | None = None, diverged: int | None = None,
            model: Any = None) -> TrainResult:
    return TrainResult(history={"loss": [v + 0.1 for v in val], "val_loss": val}, best_epoch=best,
                       stopped_epoch=len(val), early_stopped=len(val) < 4, diverged_at=diverged,
                       stopped_by_hook=None, model=model, duration_s=1.0,
                       test_metrics={"test_loss": test} if test is not None else {})


def test_repeat_0_keeps_the_trial_seed_and_the_others_differ() -> None:
    seed = trial_seed(42, 3)
    seeds = [repeat_seed(seed, k) for k in range(5)]
    assert seeds[0] == seed and len(set(seeds)) == 5
    assert all(0 <= s < 2**31 - 1 for s in seeds)
    assert seeds == [repeat_seed(seed, k) for k in range(5)]  # derived, not drawn


@pytest.mark.parametrize(("how", "direction", "expected"), [
    ("mean", "minimize", 2.0), ("median", "minimize", 1.5), ("worst", "minimize", 4.0), ("worst", "maximize", 0.5),
])
def test_aggregate(how: str, direction: str, expected: float) -> None:
    assert aggregate([0.5, 4.0, 1.5], how, direction) == expected


def test_aggregate_of_a_non_finite_value_is_nan_and_unknown_aggregates_are_refused() -> None:
    assert math.isnan(aggregate([0.5, math.nan], "mean", "minimize"))
    assert math.isnan(aggregate([], "mean", "minimize"))
    with pytest.raises(ValueError, match="allowed: mean, median, worst"):
        aggregate([1.0], "best", "minimize")


def test_spread_is_mean_and_sample_standard_deviation() -> None:
    assert spread([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert spread([0.7]) == (0.7, 0.0)


def test_repeat_0_reports_at_its_epochs_and_later_repeats_after_every_epoch_of_the_earlier_ones() -> None:
    assert [step_of(0, e, 10) for e in (1, 10)] == [1, 10]
    assert [step_of(2, e, 10) for e in (1, 10)] == [21, 30]


def test_mean_curves_average_the_repeats_that_ran_each_epoch() -> None:
    curves = mean_curves([{"val_loss": [4.0, 2.0, 1.0]}, {"val_loss": [2.0, math.nan]}])
    assert curves == {"val_loss": [3.0, 2.0, 1.0]}


def test_combine_aggregates_values_keeps_the_best_repeats_model_and_means_test_metrics() -> None:
    runs = [_result([0.9, 0.6, 0.7], best=2, test=0.5, model="m0"),
            _result([0.8, 0.4, 0.5, 0.45], best=2, test=0.3, model="m1"),
            _result([0.7, 0.65], best=2, test=0.4, model="m2")]
    combined = combine(runs, metric="val_loss", how="mean", direction="minimize")
    assert combined.values("val_loss") == [0.6, 0.4, 0.65]
    assert combined.value("val_loss") == pytest.approx(0.55)
    assert combined.kept == 1 and combined.model == "m1"
    assert combined.history["val_loss"] == pytest.approx([0.8, 0.55, 0.6, 0.45])
    assert combined.best_epoch == 4  # where the mean curve is lowest
    assert combined.stopped_epoch == 4 and not combined.early_stopped
    assert combined.test_metrics == {"test_loss": pytest.approx(0.4)}
    assert combined.duration_s == 3.0
    assert combine(runs, metric="val_loss", how="worst", direction="minimize").value("val_loss") == 0.65


def test_combine_carries_the_divergence_of_the_repeat_that_ended_the_trial() -> None:
    runs = [_result([0.9, 0.6], best=2, test=0.5), _result([0.8, math.nan], best=1, diverged=2)]
    combined = combine(runs, metric="val_loss", how="mean", direction="minimize")
    assert combined.diverged_at == 2 and combined.test_metrics == {"test_loss": 0.5}
    assert best_repeat([math.nan, math.nan], "minimize") == 0
    assert best_repeat([0.2, 0.9], "maximize") == 1


def _record(number: int, value: float, values: tuple[float, ...]) -> TrialRecord:
    return TrialRecord(number=number, state="COMPLETE", value=value, params={}, repeat_values=values)


def test_spread_and_close_call_of_trial_records() -> None:
    best, runner_up = _record(3, 0.40, (0.38, 0.40, 0.42)), _record(5, 0.41, (0.41, 0.41, 0.41))
    assert best.spread == (pytest.approx(0.40), pytest.approx(0.02))
    assert spread_text(best) == "0.4 ± 0.02 (n=3)"
    call = close_call(best, runner_up)
    assert call is not None and call["within_one_sd"] and call["runner_up"] == 5
    assert call["lead"] == pytest.approx(0.01)
    far = close_call(best, _record(5, 0.50, (0.5, 0.5)))
    assert far is not None and not far["within_one_sd"]
    plain = _record(1, 0.4, ())
    assert plain.spread is None and spread_text(plain) is None and close_call(plain, runner_up) is None


def test_trial_record_reads_repeat_values_from_either_store() -> None:
    trial = optuna.trial.create_trial(params={}, distributions={}, value=0.5,
                                      user_attrs={"repeat_values": [0.4, None, 0.6]})
    assert TrialRecord.from_trial(trial).repeat_values == (0.4, 0.6)
    assert "repeat_values" not in TrialRecord.from_trial(trial).extra


def test_spec_takes_repeats_and_aggregate(tiny_spec: Callable[..., StudySpec]) -> None:
    assert (tiny_spec().study.repeats, tiny_spec().study.aggregate) == (1, "mean")
    spec = tiny_spec(study={"repeats": 3, "aggregate": "worst"})
    assert (spec.study.repeats, spec.study.aggregate) == (3, "worst")
    assert spec.to_dict()["study"]["repeats"] == 3  # logged with the study: reproduce reads it back


def test_hyperband_counts_every_epoch_of_every_repeat(tiny_spec: Callable[..., StudySpec]) -> None:
    from nnstudy.sampling import make_pruner

    plain = make_pruner(tiny_spec(study={"pruner": "hyperband"}, train={"max_epochs": 9}))
    repeated = make_pruner(tiny_spec(study={"pruner": "hyperband", "repeats": 3}, train={"max_epochs": 9}))
    assert (plain._max_resource, repeated._max_resource) == (9, 27)  # type: ignore[attr-defined]


class _PruneInRepeat1(optuna.pruners.BasePruner):
    """A real Optuna pruner that stops a trial at its first step after ``max_epochs`` (repeat 1, epoch 1)."""

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return (trial.last_step or 0) > self.max_epochs


@pytest.mark.slow
def test_a_repeat_that_diverges_or_is_pruned_ends_the_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nnstudy.sampling
    from nnstudy.runner import run_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nnstudy.sampling, "make_pruner", lambda spec: _PruneInRepeat1(spec.train.max_epochs))
    spec = parse_spec({**TINY_SPEC, "study": {**TINY_SPEC["study"], "name": "cut", "n_trials": 2, "repeats": 3},
                       "data": {"source": "grades", "n_samples": 120},
                       "search": {"learning_rate": [1e-2, 1e4], "optimizer": "sgd", "depth": 1, "units": 8},
                       "enqueue": [{"learning_rate": 1e4}, {"learning_rate": 1e-2}]})
    outcome = run_study(spec, show_progress=False)
    diverged, pruned = outcome.study.get_trials()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")

    assert diverged.state == optuna.trial.TrialState.FAIL and diverged.user_attrs["fail_reason"] == "diverged"
    run = client.get_run(diverged.user_attrs["mlflow_run_id"])
    assert run.data.metrics["stopped_in_repeat"] == 0 and "loss/repeat_1" not in run.data.metrics

    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned.user_attrs["pruned_at"] == 1
    run = client.get_run(pruned.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.metrics["stopped_in_repeat"] == 1
    assert "val_loss/repeat_2" not in run.data.metrics
    first = pruned.user_attrs["repeat_values"][0]
    zero, one = ({m.step: m.value for m in client.get_metric_history(run.info.run_id, f"val_loss/repeat_{k}")}
                 for k in (0, 1))
    # repeat 0 reports its epochs as a plain trial; repeat 1 the running mean: repeat 0's best value with its own
    assert sorted(pruned.intermediate_values) == [1, 2, 3]
    assert [pruned.intermediate_values[e] for e in (1, 2)] == pytest.approx([zero[1], zero[2]])
    assert first == pytest.approx(min(zero.values()))
    assert pruned.intermediate_values[3] == pytest.approx((first + one[1]) / 2)


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_repeated_study_shows_the_spread_and_reproduces_every_repeat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, e2e_spec: Callable[..., Path]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = e2e_spec("noisy", study={"n_trials": 2, "repeats": 2, "pruner": "none"},
                    train={"max_epochs": 2, "early_stopping_patience": 2})
    out = _cli("run", str(spec), "--no-progress")
    assert " ± " in out and "n=2" in out  # the end line: best value with its spread

    study = optuna.load_study(study_name="noisy", storage="sqlite:///mlruns/optuna.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        values = t.user_attrs["repeat_values"]
        assert len(values) == 2 and t.value == pytest.approx(sum(values) / 2)
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        metrics, params = run.data.metrics, run.data.params
        assert [metrics["best_val_loss/repeat_0"], metrics["best_val_loss/repeat_1"]] == values
        assert metrics["best_val_loss/mean"] == pytest.approx(t.value)
        assert metrics["best_val_loss/sd"] == pytest.approx(spread(values)[1])
        assert params["repeats"] == "2" and params["repeat_seeds"].split(",")[0] == params["seed"]
        curves = {k: [m.value for m in client.get_metric_history(run.info.run_id, k)]
                  for k in ("val_loss", "val_loss/repeat_0", "val_loss/repeat_1")}
        assert curves["val_loss"] == pytest.approx([(a + b) / 2 for a, b in
                                                    zip(curves["val_loss/repeat_0"], curves["val_loss/repeat_1"])])
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]  # repeat 1 reports after repeat 0's epochs

    rows = json.loads(_cli("trials", "--format", "json"))
    assert all(" ± " in r["spread"] and r["value_sd"] >= 0 for r in rows)
    best = json.loads(_cli("best", "--format", "json"))
    assert best["spread"] == rows[0]["spread"] and len(best["repeat_values"]) == 2
    call = best["close_call"]
    assert call["runner_up"] == rows[1]["number"] and isinstance(call["within_one_sd"], bool)
    text = _cli("best")
    assert ("within one standard deviation" in text) == call["within_one_sd"]

    _cli("report", "--out", "rep")
    report = json.loads((tmp_path / "rep" / "best_params.json").read_text())
    assert report["spread"] == best["spread"] and report["close_call"] == call
    assert "spread" in (tmp_path / "rep" / "trials.csv").read_text().splitlines()[0]

    reproduced = _cli("reproduce")
    assert "repeat 0: max abs difference of val_loss/repeat_0: 0.0" in reproduced
    assert "repeat 1: max abs difference of val_loss/repeat_1: 0.0" in reproduced
    assert "max abs difference of val_loss: 0.0" in reproduced
