"""Configurations to try first: ``[[enqueue]]`` tables of the spec and ``--enqueue FILE.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna

from nnstudy.errors import SpecError
from nnstudy.files import file_problem
from nnstudy.spec import StudySpec


def enqueue(study: optuna.Study, configs: list[dict[str, Any]]) -> None:
    """Queue configurations to try first (skipped when the study already tried them)."""
    for params in configs:
        study.enqueue_trial(params, skip_if_exists=True)


def load_enqueue_file(path: str | Path, spec: StudySpec) -> list[dict[str, Any]]:
    """Read ``--enqueue FILE.json`` (a JSON list of parameter dicts) and check it against the space."""
    path = Path(path)
    found = file_problem(path, "a JSON file with a list of parameter objects")
    if found is not None:
        raise SpecError(path, "--enqueue", found[1])
    try:
        configs = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SpecError(path, "--enqueue", f"not valid JSON: {err}; allowed: a JSON list of parameter "
                        "objects") from None
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise SpecError(path, "--enqueue", "allowed: a JSON list of parameter objects, e.g. "
                        '[{"learning_rate": 0.001, "optimizer": "adam"}]')
    space = spec.space
    for i, params in enumerate(configs):
        space.check_params(params, path, f"[{i}]")
    return configs
