"""Study specs: defaults, names, directions, overrides, validation and the to_dict round trip."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from nnstudy.errors import SpecError
from nnstudy.space import Choice, Fixed, Range
from nnstudy.spec import StudySpec, default_direction, load_spec, metric_names, parse_spec

FULL_SPEC = """
[study]
metric = "val_accuracy"
n_trials = 7
sampler = "random"
pruner = "hyperband"
seed = 3

[data]
source = "digits"
validation_fraction = 0.25
test_fraction = 0.1

[train]
max_epochs = 12
early_stopping_patience = 3

[search]
learning_rate = { low = 1e-4, high = 0.1, log = true }
optimizer = ["adam", "sgd"]
units = { low = 8, high = 64, step = 8 }
dropout = 0.25

[[enqueue]]
learning_rate = 0.001
optimizer = "adam"
"""


# --------------------------------------------------------------------------- defaults, name, direction


def test_empty_spec_takes_every_default() -> None:
    spec = parse_spec({})
    assert spec.study.metric == "val_loss" and spec.direction == "minimize"
    assert spec.study.n_trials == 20 and spec.study.sampler == "tpe" and spec.study.pruner == "median"
    assert spec.study.seed == 42 and spec.study.timeout is None
    assert spec.data.source == "pass_fail" and spec.data.is_builtin and spec.data.task == "auto"
    assert (spec.data.validation_fraction, spec.data.test_fraction) == (0.2, 0.2)
    assert spec.data.missing == "error" and spec.data.exclude == []
    assert spec.train.max_epochs == 100 and spec.train.early_stopping_patience == 10
    assert spec.train.restore_best_weights is True
    assert spec.space.searched == [] and spec.enqueue == []
    assert spec.name == "nnstudy" and spec.path is None


def test_name_defaults_to_the_spec_file_stem(write_file: Callable[[str, str], Path]) -> None:
    path = write_file("my_course_study.toml", "[study]\nn_trials = 2\n")
    spec = load_spec(path)
    assert spec.name == "my_course_study"
    assert spec.path == path.resolve()
    assert spec.base_dir == path.resolve().parent


def test_name_from_the_study_section_wins_over_the_file_stem(write_file: Callable[[str, str], Path]) -> None:
    spec = load_spec(write_file("file_name.toml", '[study]\nname = "given-name"\n'))
    assert spec.name == "given-name"


@pytest.mark.parametrize(("metric", "direction"), [
    ("val_loss", "minimize"), ("loss", "minimize"), ("val_mae", "minimize"), ("mae", "minimize"),
    ("val_accuracy", "maximize"), ("accuracy", "maximize"),
])
def test_direction_is_inferred_from_the_metric(metric: str, direction: str) -> None:
    task = "regression" if "mae" in metric else "auto"
    spec = parse_spec({"study": {"metric": metric}, "data": {"task": task}})
    assert spec.direction == direction == default_direction(metric)


def test_explicit_direction_matching_the_metric_is_accepted() -> None:
    assert parse_spec({"study": {"metric": "val_accuracy", "direction": "maximize"}}).direction == "maximize"


def test_direction_contradicting_the_metric_is_rejected() -> None:
    with pytest.raises(SpecError, match=r"\[study\]\.direction: 'maximize' with metric 'val_loss'; allowed: "
                                        r"'minimize'"):
        parse_spec({"study": {"direction": "maximize"}})


def test_metric_names_per_task() -> None:
    assert metric_names("binary") == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert metric_names("regression") == ["loss", "mae", "val_loss", "val_mae"]


# --------------------------------------------------------------------------- a full file


def test_full_spec_file_is_read_into_sections(write_file: Callable[[str, str], Path]) -> None:
    spec = load_spec(write_file("full.toml", FULL_SPEC))
    assert spec.study.metric == "val_accuracy" and spec.direction == "maximize"
    assert (spec.study.n_trials, spec.study.sampler, spec.study.pruner, spec.study.seed) == (7, "random",
                                                                                             "hyperband", 3)
    assert spec.data.source == "digits" and spec.data.validation_fraction == 0.25
    assert spec.train.max_epochs == 12 and spec.train.early_stopping_patience == 3
    dims = spec.space.dimensions
    assert dims["learning_rate"] == Range(1e-4, 0.1, log=True)
    assert dims["optimizer"] == Choice(("adam", "sgd"))
    assert dims["units"] == Range(8, 64, step=8)
    assert dims["dropout"] == Fixed(0.25)
    assert spec.space.searched == ["learning_rate", "optimizer", "units"]
    assert spec.enqueue == [{"learning_rate": 0.001, "optimizer": "adam"}]


def test_file_source_needs_a_target() -> None:
    with pytest.raises(SpecError, match=r"\[data\]\.target: missing for file source 'rows\.csv'; allowed"):
        parse_spec({"data": {"source": "rows.csv"}})
    spec = parse_spec({"data": {"source": "rows.csv", "target": "y"}})
    assert not spec.data.is_builtin and spec.data.target == "y"


def test_explicit_task_is_checked_against_the_metric() -> None:
    with pytest.raises(SpecError, match=r"\[study\]\.metric: 'val_accuracy' is not logged for a regression task"):
        parse_spec({"study": {"metric": "val_accuracy"}, "data": {"task": "regression"}})


def test_check_task_names_the_data_source() -> None:
    spec = parse_spec({"study": {"metric": "val_mae"}})  # task auto: not known until the data is loaded
    with pytest.raises(SpecError, match=r"'val_mae' is not logged for a binary task \(data pass_fail\); allowed"):
        spec.check_task("binary", source="pass_fail")
    spec.check_task("regression")


def test_enqueue_is_checked_against_the_space() -> None:
    with pytest.raises(SpecError, match=r"\[\[enqueue\]\]\[1\]\.units: 100 is outside the search space"):
        parse_spec({"search": {"units": {"low": 8, "high": 64}}, "enqueue": [{"units": 8}, {"units": 100}]})


def test_grid_sampler_is_checked_when_the_spec_is_parsed() -> None:
    with pytest.raises(SpecError, match=r"\[search\]\.dropout: a continuous range cannot be searched"):
        parse_spec({"study": {"sampler": "grid"}, "search": {"dropout": {"low": 0.0, "high": 0.5}}})
    spec = parse_spec({"study": {"sampler": "grid"}, "search": {"dropout": {"low": 0.0, "high": 0.5, "step": 0.25}}})
    assert spec.space.grid() == {"dropout": [0.0, 0.25, 0.5]}


def test_spec_is_frozen() -> None:
    spec = parse_spec({})
    with pytest.raises(Exception):  # pydantic raises ValidationError for assignment to a frozen model
        spec.study.n_trials = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- load_spec and overrides


def test_overrides_win_over_the_file(write_file: Callable[[str, str], Path]) -> None:
    path = write_file("s.toml", '[study]\nn_trials = 20\nsampler = "tpe"\nname = "from-file"\n')
    spec = load_spec(path, overrides={"study": {"n_trials": 3, "sampler": "random", "name": "from-cli"}})
    assert (spec.study.n_trials, spec.study.sampler, spec.name) == (3, "random", "from-cli")


def test_overrides_create_a_missing_section(write_file: Callable[[str, str], Path]) -> None:
    spec = load_spec(write_file("s.toml", ""), overrides={"study": {"seed": 7}})
    assert spec.study.seed == 7


def test_empty_overrides_change_nothing(write_file: Callable[[str, str], Path]) -> None:
    path = write_file("s.toml", "[study]\nn_trials = 4\n")
    assert load_spec(path, overrides={"study": {}}) == load_spec(path)


def test_overrides_are_validated(write_file: Callable[[str, str], Path]) -> None:
    path = write_file("s.toml", "[study]\nn_trials = 4\n")
    with pytest.raises(SpecError, match=r"s\.toml: \[study\]\.n_trials: 0 is not allowed; allowed: greater than 0"):
        load_spec(path, overrides={"study": {"n_trials": 0}})


def test_override_of_a_grid_sampler_checks_the_space(write_file: Callable[[str, str], Path]) -> None:
    path = write_file("s.toml", "[search]\nlearning_rate = { low = 1e-4, high = 1e-1, log = true }\n")
    load_spec(path)
    with pytest.raises(SpecError, match="sampler = 'grid'"):
        load_spec(path, overrides={"study": {"sampler": "grid"}})


def test_load_spec_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="nope.toml: no such file"):
        load_spec(tmp_path / "nope.toml")


def test_load_spec_of_broken_toml_names_the_line(write_file: Callable[[str, str], Path]) -> None:
    with pytest.raises(SpecError, match=r"broken\.toml: not valid TOML: .*line 2"):
        load_spec(write_file("broken.toml", "[study]\nn_trials = = 3\n"))


def test_relative_file_source_resolves_against_the_spec_folder(write_file: Callable[[str, str], Path],
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_file("specs/s.toml", '[data]\nsource = "rows.csv"\ntarget = "y"\n')
    monkeypatch.chdir(tmp_path)
    spec = load_spec(Path("specs/s.toml"))
    assert spec.base_dir == (tmp_path / "specs").resolve()


# --------------------------------------------------------------------------- to_dict round trip


def test_to_dict_resolves_name_and_direction(write_file: Callable[[str, str], Path]) -> None:
    data = load_spec(write_file("round.toml", FULL_SPEC)).to_dict()
    assert data["study"]["name"] == "round"
    assert data["study"]["direction"] == "maximize"
    assert "path" not in data
    assert data["search"]["units"] == {"low": 8, "high": 64, "log": False, "step": 8}
    assert data["search"]["activation"] == "relu"  # defaults are written out


def test_to_dict_parses_back_to_an_equal_spec(write_file: Callable[[str, str], Path]) -> None:
    spec = load_spec(write_file("round.toml", FULL_SPEC))
    again = parse_spec(spec.to_dict())
    assert again.space == spec.space
    assert (again.study, again.data, again.train) == (spec.study.model_copy(update={"name": "round",
                                                                                    "direction": "maximize"}),
                                                      spec.data, spec.train)
    assert again.enqueue == spec.enqueue
    assert again.name == spec.name and again.direction == spec.direction


def test_to_dict_survives_json(write_file: Callable[[str, str], Path]) -> None:
    spec = load_spec(write_file("round.toml", FULL_SPEC))
    again = parse_spec(json.loads(json.dumps(spec.to_dict())))
    assert again.space == spec.space
    assert again.to_dict() == spec.to_dict()


def test_default_spec_round_trips() -> None:
    spec = parse_spec({})
    assert isinstance(spec, StudySpec)
    assert parse_spec(spec.to_dict()).to_dict() == spec.to_dict()


# --------------------------------------------------------------------------- several objectives (Pareto)


def test_objectives_make_the_metric_and_turn_the_pruner_off() -> None:
    spec = parse_spec({"study": {"objectives": ["val_accuracy", "n_params", "latency_ms"]}})
    assert spec.study.metric == "val_accuracy" and spec.direction == "maximize"
    assert spec.multi_objective and spec.objectives == ["val_accuracy", "n_params", "latency_ms"]
    assert spec.directions == ["maximize", "minimize", "minimize"]
    assert spec.study.pruner == "none"
    again = parse_spec(spec.to_dict())  # as logged on the parent run, for reproduce
    assert again.objectives == spec.objectives and again.directions == spec.directions
    single = parse_spec({})
    assert not single.multi_objective and single.objectives == ["val_loss"] and single.directions == ["minimize"]


def test_objectives_accept_their_own_directions_and_the_nsga2_sampler() -> None:
    spec = parse_spec({"study": {"objectives": ["val_loss", "latency_ms"], "directions": ["minimize", "minimize"],
                                 "metric": "val_loss", "pruner": "none", "sampler": "nsga2"}})
    assert spec.study.sampler == "nsga2" and spec.directions == ["minimize", "minimize"]


@pytest.mark.parametrize(("study", "field", "says"), [
    ({"objectives": ["val_loss", "n_param"]}, "[study].objectives", "did you mean 'n_params'"),
    ({"objectives": ["val_loss", "val_accuracy"]}, "[study].objectives", "only the first objective"),
    ({"objectives": ["val_loss", "n_params", "n_params"]}, "[study].objectives", "twice"),
    ({"objectives": ["val_loss"]}, "[study].objectives", "fewer than two"),
    ({"objectives": ["n_params", "val_loss"]}, "[study].objectives", "'n_params' comes first"),
    ({"objectives": ["val_loss", "n_params"], "metric": "val_accuracy"}, "[study].metric", "not the first"),
    ({"objectives": ["val_loss", "n_params"], "pruner": "asha"}, "[study].pruner", "cannot prune"),
    ({"objectives": ["val_loss", "n_params"], "sampler": "grid"}, "[study].sampler", "'grid'"),
    ({"objectives": ["val_loss", "n_params"], "directions": ["minimize"]}, "[study].directions", "allowed"),
    ({"objectives": ["val_loss", "n_params"], "register_as": "m"}, "[study].register_as", "--trial N"),
    ({"directions": ["minimize"]}, "[study].directions", "without objectives"),
])
def test_bad_objectives_name_the_field(study: dict[str, object], field: str, says: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"study": study})
    assert field in str(err.value) and says in str(err.value) and "allowed" in str(err.value)


def test_checkpoint_every_is_off_by_default_and_at_least_one_epoch() -> None:
    assert parse_spec({}).train.checkpoint_every is None and parse_spec({}).train.checkpoint_warning is None
    assert parse_spec({"train": {"checkpoint_every": 5, "max_epochs": 20}}).train.checkpoint_warning is None
    warning = parse_spec({"train": {"checkpoint_every": 50, "max_epochs": 20}}).train.checkpoint_warning
    assert warning is not None and "checkpoint_every = 50" in warning and "max_epochs = 20" in warning  # allowed
    for bad in (0, -1):
        with pytest.raises(SpecError, match=r"\[train\]\.checkpoint_every.*allowed"):
            parse_spec({"train": {"checkpoint_every": bad}})


def test_checkpoint_every_with_seed_repeats_is_warned_about() -> None:
    """Trials with repeats write no checkpoint: the spec says so rather than staying silent."""
    assert parse_spec({"train": {"checkpoint_every": 5, "max_epochs": 20}}).checkpoint_warning is None
    assert parse_spec({"study": {"repeats": 3}}).checkpoint_warning is None
    warning = parse_spec({"study": {"repeats": 3}, "train": {"checkpoint_every": 5, "max_epochs": 20}}).checkpoint_warning
    assert warning is not None and "repeats = 3" in warning and "epoch 1" in warning


def test_system_metrics_are_on_by_default_every_second() -> None:
    assert parse_spec({}).train.system_metrics is True and parse_spec({}).train.system_metrics_interval == 1.0
    off = parse_spec({"train": {"system_metrics": False, "system_metrics_interval": 5}}).train
    assert off.system_metrics is False and off.system_metrics_interval == 5.0  # an integer is a number of seconds
    for bad in (0, 0.5, 3601):
        with pytest.raises(SpecError, match=r"\[train\]\.system_metrics_interval.*allowed"):
            parse_spec({"train": {"system_metrics_interval": bad}})
