"""Sampler and pruner made from the spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest

from nnstudy.sampling import ProcessSampler, make_pruner, make_sampler
from nnstudy.spec import StudySpec

SEARCH = {"learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}, "units": [8, 16, 32, 64]}


def _first_params(sampler: optuna.samplers.BaseSampler, spec: StudySpec, done: int) -> dict[str, Any]:
    """The configuration ``sampler`` proposes for trial number ``done`` of a study with ``done`` trials."""
    study = optuna.create_study(sampler=sampler)
    for _ in range(done):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    trial = study.ask()
    assert trial.number == done
    return spec.space.suggest(trial)


@pytest.mark.parametrize(("name", "kind"), [("tpe", optuna.samplers.TPESampler),
                                            ("random", optuna.samplers.RandomSampler),
                                            ("grid", optuna.samplers.GridSampler)])
def test_make_sampler_follows_the_spec(tiny_spec: Callable[..., StudySpec], name: str, kind: type) -> None:
    spec = tiny_spec(study={"sampler": name}, search={"learning_rate": [0.01, 0.1], "optimizer": "adam"})
    assert isinstance(make_sampler(spec), kind)


def test_make_sampler_is_seeded_with_the_study_seed_plus_offset(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"sampler": "random", "seed": 5}, search=SEARCH)
    assert _first_params(make_sampler(spec), spec, 0) == _first_params(make_sampler(spec), spec, 0)
    assert _first_params(make_sampler(spec, offset=3), spec, 0) == _first_params(
        optuna.samplers.RandomSampler(seed=8), spec, 0)
    assert _first_params(make_sampler(spec, offset=1), spec, 0) != _first_params(make_sampler(spec), spec, 0)


@pytest.mark.parametrize("done", [0, 3])
def test_process_sampler_seeds_with_the_first_trial_number(tiny_spec: Callable[..., StudySpec], done: int) -> None:
    spec = tiny_spec(study={"sampler": "random", "seed": 5}, search=SEARCH)
    mine = _first_params(ProcessSampler(spec), spec, done)
    assert mine == _first_params(optuna.samplers.RandomSampler(seed=5 + done), spec, done)


def test_process_samplers_starting_at_other_trials_propose_other_configurations(
        tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"sampler": "random"}, search=SEARCH)
    proposals = [_first_params(ProcessSampler(spec), spec, done)["learning_rate"] for done in range(4)]
    assert len(set(proposals)) == 4


def test_process_sampler_keeps_its_seed_for_later_trials(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"sampler": "random"}, search=SEARCH)
    a, b = optuna.create_study(sampler=ProcessSampler(spec)), optuna.create_study(sampler=make_sampler(spec))
    for study in (a, b):
        study.optimize(lambda t: spec.space.suggest(t)["learning_rate"], n_trials=4)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


def test_median_pruner_honours_startup_and_warmup(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"pruner": "median", "pruner_startup_trials": 7, "pruner_warmup_epochs": 3},
                     train={"max_epochs": 20})
    pruner = make_pruner(spec)
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    assert (pruner._n_startup_trials, pruner._n_warmup_steps, pruner._percentile) == (7, 3, 50.0)


def test_warmup_is_capped_below_max_epochs(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"pruner": "median", "pruner_warmup_epochs": 10}, train={"max_epochs": 4})
    assert make_pruner(spec)._n_warmup_steps == 3


def test_percentile_pruner_honours_the_percentile(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec(study={"pruner": "percentile", "pruner_percentile": 10.0, "pruner_startup_trials": 2,
                            "pruner_warmup_epochs": 1}, train={"max_epochs": 20})
    pruner = make_pruner(spec)
    assert type(pruner) is optuna.pruners.PercentilePruner
    assert (pruner._percentile, pruner._n_startup_trials, pruner._n_warmup_steps) == (10.0, 2, 1)


def test_asha_and_hyperband_honour_the_reduction_factor(tiny_spec: Callable[..., StudySpec]) -> None:
    asha = make_pruner(tiny_spec(study={"pruner": "asha", "pruner_reduction_factor": 4}))
    assert isinstance(asha, optuna.pruners.SuccessiveHalvingPruner)
    assert (asha._min_resource, asha._reduction_factor) == (1, 4)
    band = make_pruner(tiny_spec(study={"pruner": "hyperband", "pruner_reduction_factor": 2},
                                 train={"max_epochs": 30}))
    assert isinstance(band, optuna.pruners.HyperbandPruner)
    assert (band._min_resource, band._max_resource, band._reduction_factor) == (1, 30, 2)


def test_pruner_none_never_prunes(tiny_spec: Callable[..., StudySpec]) -> None:
    assert isinstance(make_pruner(tiny_spec(study={"pruner": "none"})), optuna.pruners.NopPruner)


@pytest.mark.parametrize("warmup", [2, 4])
def test_median_pruner_prunes_a_bad_trial_after_its_warmup_epochs(tiny_spec: Callable[..., StudySpec],
                                                                  warmup: int) -> None:
    spec = tiny_spec(study={"pruner": "median", "pruner_startup_trials": 2, "pruner_warmup_epochs": warmup},
                     train={"max_epochs": 10})
    study = optuna.create_study(pruner=make_pruner(spec))
    for _ in range(2):
        good = study.ask()
        for epoch in range(1, 6):
            good.report(1.0 / epoch, epoch)
        study.tell(good, 0.2)
    bad = study.ask()
    pruned_at = None
    for epoch in range(1, 6):
        bad.report(10.0, epoch)
        if bad.should_prune():
            pruned_at = epoch
            break
    assert pruned_at == warmup  # README: "epochs a trial always runs"; pruned at the end of the last one
