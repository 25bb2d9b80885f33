"""How a study searches: the sampler that proposes configurations and the pruner that stops
unpromising trials early. Both are made from the spec; knows nothing of Keras or MLflow."""

from __future__ import annotations

from typing import Any

import optuna

from nnstudy.spec import StudySpec


def make_sampler(spec: StudySpec, *, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler (``tpe``, ``random``, ``grid`` or ``nsga2``), seeded with ``[study].seed + offset``.
    TPE and NSGA-II search several objectives too (TPE as multi-objective TPE)."""
    seed = spec.study.seed + offset
    if spec.study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.study.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if spec.study.sampler == "grid":
        return optuna.samplers.GridSampler(spec.space.grid(spec.path), seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


class ProcessSampler(optuna.samplers.BaseSampler):
    """The spec's sampler, seeded when this process gets its first trial: ``seed + that trial's number``.

    Trial numbers are unique across processes, so workers that open a study at the same moment
    propose different configurations, while a lone process gets the same sequence every time
    (a resumed random search does not repeat itself either).
    """

    def __init__(self, spec: StudySpec) -> None:
        self._spec = spec
        self._inner: optuna.samplers.BaseSampler | None = None

    def _sampler(self, number: int = 0) -> optuna.samplers.BaseSampler:
        if self._inner is None:
            self._inner = make_sampler(self._spec, offset=number)
        return self._inner

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._sampler(trial.number).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return self._sampler(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        return self._sampler(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._sampler(trial.number).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    state: optuna.trial.TrialState, values: Any) -> None:
        self._sampler(trial.number).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler().reseed_rng()


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """``median`` (after ``pruner_startup_trials`` trials, from epoch ``pruner_warmup_epochs``),
    ``percentile`` (the same, but outside the best ``pruner_percentile`` %), ``asha`` (successive
    halving from epoch 1), ``hyperband`` (1..max_epochs, times ``repeats``; both keep 1/``pruner_reduction_factor``
    at each rung) or ``none``."""
    s = spec.study
    warmup = min(s.pruner_warmup_epochs, spec.train.max_epochs - 1)
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials, n_warmup_steps=warmup)
    if s.pruner == "percentile":
        return optuna.pruners.PercentilePruner(s.pruner_percentile, n_startup_trials=s.pruner_startup_trials,
                                               n_warmup_steps=warmup)
    if s.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=s.pruner_reduction_factor)
    if s.pruner == "hyperband":
        # seed repeats report at steps k * max_epochs + epoch (nnstudy.repeats): the resource is every epoch of each
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.train.max_epochs * spec.study.repeats,
                                              reduction_factor=s.pruner_reduction_factor)
    return optuna.pruners.NopPruner()
