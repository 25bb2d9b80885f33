"""Configurations tried first: [[enqueue]] and --enqueue FILE.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from nnstudy.enqueue import enqueue, load_enqueue_file
from nnstudy.errors import SpecError
from nnstudy.spec import StudySpec


def test_enqueued_configurations_are_asked_first_in_order(tiny_spec: Callable[..., StudySpec]) -> None:
    spec = tiny_spec()
    study = optuna.create_study()
    configs = [{"learning_rate": 0.05, "optimizer": "sgd"}, {"learning_rate": 0.002, "optimizer": "adam"}]
    enqueue(study, configs)
    asked = [spec.space.suggest(study.ask()) for _ in configs]
    assert [{k: p[k] for k in ("learning_rate", "optimizer")} for p in asked] == configs


def test_enqueueing_again_skips_what_is_already_queued(tiny_spec: Callable[..., StudySpec]) -> None:
    study = optuna.create_study()
    configs = [{"learning_rate": 0.05, "optimizer": "sgd"}]
    enqueue(study, configs)
    enqueue(study, configs)
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1


def test_enqueue_file_is_read_and_checked(write_file: Callable[[str, str], Path],
                                          tiny_spec: Callable[..., StudySpec]) -> None:
    configs = [{"learning_rate": 0.01, "optimizer": "adam"}, {"optimizer": "sgd"}]
    path = write_file("first.json", json.dumps(configs))
    assert load_enqueue_file(path, tiny_spec()) == configs


@pytest.mark.parametrize(("text", "words"), [
    (None, "no such file"),
    ("[{", "not valid JSON"),
    ('{"learning_rate": 0.01}', "a JSON list of parameter objects"),
    ("[1, 2]", "a JSON list of parameter objects"),
])
def test_enqueue_file_errors_name_the_file_and_the_option(write_file: Callable[[str, str], Path], tmp_path: Path,
                                                           tiny_spec: Callable[..., StudySpec], text: str | None,
                                                           words: str) -> None:
    path = write_file("bad.json", text) if text is not None else tmp_path / "missing.json"
    with pytest.raises(SpecError, match=words) as err:
        load_enqueue_file(path, tiny_spec())
    assert str(err.value).startswith(f"{path}: --enqueue: ")


def test_enqueue_file_values_outside_the_space_are_rejected(write_file: Callable[[str, str], Path],
                                                            tiny_spec: Callable[..., StudySpec]) -> None:
    path = write_file("bad.json", json.dumps([{"optimizer": "adam"}, {"optimizer": "lbfgs"}]))
    with pytest.raises(SpecError, match=r"\[1\]") as err:
        load_enqueue_file(path, tiny_spec())
    assert "lbfgs" in str(err.value) and "allowed" in str(err.value)
