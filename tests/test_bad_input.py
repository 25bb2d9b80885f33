"""The bad-input corpus: every malformed spec, data file, --enqueue file or CLI argument under
``tests/corpus/`` must end the real CLI with exit code 2 and a one-line message that names the
file, the field (or column) and the offending value -- before any file or folder is created.

Each case runs ``nnstudy run`` (and, when it needs no extra argument or environment, also
``nnstudy validate``) through ``click.testing.CliRunner`` in an empty temporary working directory.
Paths in ``args`` may use ``{corpus}`` for the corpus folder.

A case that exposes a library bug is marked ``xfail(strict=True)`` with the bug in ``bug``:
the suite stays green while the bug is visible, and turns red once it is fixed (drop the mark).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from nnstudy.cli import cli

CORPUS = Path(__file__).parent / "corpus"
# the library's task inference warns on an infinite target before rejecting it
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
SPEC = "spec"  # Case.names default: the spec file's name must be in the message

ALLOWED = "allowed"
VALID = "valid_study.toml"  # a valid spec, for cases that break an argument or the environment
DEAD_HTTP = "http://127.0.0.1:9"  # port 9 (discard) is closed: connection refused at once
DEAD_POSTGRES = "postgresql://nnstudy@127.0.0.1:9/optuna"


@dataclass(frozen=True)
class Case:
    id: str
    spec: str  # corpus-relative spec path (may not exist: the "no such file" case)
    expect: tuple[str, ...]  # substrings of the "Error: ..." line
    args: tuple[str, ...] = ()  # extra `nnstudy run` arguments
    env: tuple[tuple[str, str], ...] = ()
    names: str | None = SPEC  # the file the message must name: SPEC, a corpus-relative path, or None
    bug: str | None = None  # a known library bug: the case is xfail(strict=True)


def _data(name: str) -> str:
    return f"data/{name}"


CASES: list[Case] = [
    # ------------------------------------------------------------------ the spec file itself
    Case("toml-broken", "broken_toml.toml", ("not valid TOML", "line 1")),
    Case("toml-duplicate-key", "duplicate_key.toml", ("not valid TOML", "line 3")),
    Case("toml-not-utf8", "not_utf8.toml", ("not a UTF-8 text file", ALLOWED)),
    Case("spec-is-a-directory", "spec_is_a_directory.toml", ("is a directory", ALLOWED)),
    Case("spec-missing", "no_such_spec.toml", ("no such file",)),
    # ------------------------------------------------------------------ unknown sections and keys
    Case("unknown-section-serach", "unknown_section_serach.toml",
         ("[serach]", "unknown section", "did you mean 'search'", ALLOWED, "[search]")),
    Case("unknown-key-n_trial", "unknown_key_n_trial.toml",
         ("[study].n_trial", "unknown key", "did you mean 'n_trials'", ALLOWED)),
    Case("unknown-key-tagret", "unknown_key_tagret.toml", ("[data].tagret", "did you mean 'target'", ALLOWED)),
    Case("unknown-key-max_epoch", "unknown_key_max_epoch.toml",
         ("[train].max_epoch", "did you mean 'max_epochs'", ALLOWED)),
    Case("unknown-search-parameter", "unknown_search_parameter.toml",
         ("[search].learnig_rate", "unknown parameter", "did you mean 'learning_rate'", ALLOWED)),
    Case("unknown-range-key", "unknown_range_key.toml", ("[search].units.hihg", "did you mean 'high'", ALLOWED)),
    Case("unknown-top-level-key-path", "unknown_top_level_key_path.toml", ("[path]", "unknown section", ALLOWED)),
    Case("study-not-a-table", "study_not_a_table.toml", ("[study]", "'fast'", ALLOWED)),
    Case("study-not-a-table-with-override", "study_not_a_table.toml", ("[study]", "'fast'", ALLOWED),
         args=("--n-trials", "3")),
    Case("enqueue-not-an-array", "enqueue_not_an_array.toml", ("[[enqueue]]", "array of tables", ALLOWED)),
    Case("enqueue-entries-not-tables", "enqueue_entries_not_tables.toml", ("[[enqueue]]", "[1, 2] is not an array of tables", ALLOWED)),
    # ------------------------------------------------------------------ wrong types
    Case("type-n_trials-string", "type_n_trials_string.toml", ("[study].n_trials", "'ten'", "allowed: an integer")),
    Case("type-max_epochs-float", "type_max_epochs_float.toml", ("[train].max_epochs", "10.5", "allowed: an integer")),
    Case("type-restore_best_weights-string", "type_restore_best_weights_string.toml",
         ("[train].restore_best_weights", "'yes'", "allowed: a boolean")),
    Case("type-exclude-string", "type_exclude_string.toml", ("[data].exclude", "'lectures'", "allowed: a list")),
    Case("type-study-name-int", "type_study_name_int.toml", ("[study].name", "5", "allowed: a string")),
    Case("type-batch_size-string", "type_batch_size_string.toml",
         ("[search].batch_size", "'32'", "wrong type", "allowed: an integer")),
    Case("type-learning_rate-bool", "type_learning_rate_bool.toml",
         ("[search].learning_rate", "True", "allowed: a number")),
    Case("type-units-float-choice", "type_units_float_choice.toml", ("[search].units[1]", "32.5", "allowed: an integer")),
    Case("type-depth-float-high", "type_depth_float_high.toml", ("[search].depth.high", "2.5", "allowed: an integer")),
    Case("range-for-a-string-parameter", "range_for_a_string_parameter.toml",
         ("[search].optimizer", "{'low': 1, 'high': 2}", ALLOWED)),
    Case("range-without-high", "range_without_high.toml", ("[search].units", "{'low': 8}", "'high'", ALLOWED)),
    # ------------------------------------------------------------------ ranges
    Case("range-low-greater-than-high", "range_low_greater_than_high.toml",
         ("[search].dropout", "low = 0.5", "high = 0.1", "allowed: low <= high")),
    Case("range-log-low-zero", "range_log_low_zero.toml", ("[search].depth.low", "0 with log = true", ALLOWED)),
    Case("range-log-low-negative", "range_log_low_negative.toml",
         ("[search].learning_rate.low", "-1.0", "allowed: a number > 0")),
    Case("range-log-not-bool", "range_log_not_bool.toml", ("[search].units.log", "'yes'", "allowed: true or false")),
    Case("range-step-zero", "range_step_zero.toml", ("[search].units.step", "0", "allowed: an integer > 0")),
    Case("range-step-negative", "range_step_negative.toml", ("[search].dropout.step", "-0.1", "allowed: a number > 0")),
    Case("range-step-with-log", "range_step_with_log.toml", ("[search].learning_rate.step", "log = true", ALLOWED)),
    Case("range-step-nan", "range_step_nan.toml", ("[search].dropout.step", "nan", ALLOWED)),
    Case("grid-range-step-nan", "grid_range_step_nan.toml", ("[search].dropout.step", "nan", ALLOWED)),
    Case("range-bound-nan", "range_bound_nan.toml", ("[search].learning_rate.low", "nan", "allowed: a finite number")),
    Case("learning-rate-huge-integer", "learning_rate_huge_integer.toml", ("[search].learning_rate", ALLOWED)),
    Case("grid-continuous-range", "grid_continuous_range.toml",
         ("[search].learning_rate", "sampler = 'grid'", ALLOWED)),
    # ------------------------------------------------------------------ choices and names
    Case("empty-choice-list", "empty_choice_list.toml", ("[search].units", "[]", "allowed: at least one value")),
    Case("unknown-optimizer", "unknown_optimizer.toml",
         ("[search].optimizer[1]", "'adamm'", "did you mean 'adam'", "allowed: one of sgd")),
    Case("unknown-activation", "unknown_activation.toml",
         ("[search].activation", "'rellu'", "did you mean 'relu'", "allowed: one of relu")),
    Case("unknown-sampler", "unknown_sampler.toml", ("[study].sampler", "'cmaes'", "allowed: 'tpe', 'random', 'grid' or 'nsga2'")),
    Case("unknown-pruner", "unknown_pruner.toml", ("[study].pruner", "'successive_halving'", ALLOWED, "'hyperband'")),
    Case("unknown-metric", "unknown_metric.toml",
         ("[study].metric", "'val_acc'", "did you mean 'val_accuracy'", ALLOWED)),
    Case("unknown-task", "unknown_task.toml", ("[data].task", "'clustering'", ALLOWED, "'regression'")),
    Case("unknown-missing-policy", "unknown_missing_policy.toml", ("[data].missing", "'zero'", ALLOWED, "'drop'")),
    Case("unknown-keep-models", "unknown_keep_models.toml", ("[study].keep_models", "'some'", ALLOWED)),
    Case("unknown-direction", "unknown_direction.toml", ("[study].direction", "'max'", ALLOWED, "'maximize'")),
    # ------------------------------------------------------------------ metric, task and direction
    Case("metric-accuracy-with-regression-task", "metric_accuracy_with_regression_task.toml",
         ("[study].metric", "'val_accuracy'", "regression", "allowed: loss, mae")),
    Case("metric-mae-on-pass_fail", "metric_mae_on_pass_fail.toml",
         ("[study].metric", "'val_mae'", "binary task (data pass_fail)", "allowed: loss, accuracy")),
    Case("metric-accuracy-on-grades", "metric_accuracy_on_grades.toml",
         ("[study].metric", "'val_accuracy'", "regression task (data grades)", ALLOWED)),
    Case("metric-accuracy-on-regression-csv", "metric_accuracy_on_regression_csv.toml",
         ("[study].metric", "'accuracy'", "regression_target.csv", ALLOWED)),
    Case("direction-contradicts-metric", "direction_contradicts_metric.toml",
         ("[study].direction", "'minimize'", "'val_accuracy'", "allowed: 'maximize'")),
    # ------------------------------------------------------------------ several objectives (a Pareto front)
    Case("objectives-unknown", "objectives_unknown.toml",
         ("[study].objectives", "'n_param'", "did you mean 'n_params'", ALLOWED, "latency_ms")),
    Case("objectives-measure-first", "objectives_measure_first.toml",
         ("[study].objectives", "'latency_ms' comes first", ALLOWED, "a per-epoch metric first")),
    Case("objectives-with-pruner", "objectives_with_pruner.toml",
         ("[study].pruner", "'median'", "Optuna cannot prune", "allowed: 'none'")),
    Case("objectives-with-grid", "objectives_with_grid.toml", ("[study].sampler", "'grid'", ALLOWED, "'nsga2'")),
    Case("objectives-cli-pruner", "objectives_valid_study.toml", ("[study].pruner", "'hyperband'", "allowed: 'none'"),
         args=("--pruner", "hyperband")),
    Case("objectives-directions-contradict", "objectives_directions_contradict.toml",
         ("[study].directions", "['maximize', 'maximize']", "allowed: ['maximize', 'minimize']")),
    Case("objectives-with-register_as", "objectives_with_register_as.toml",
         ("[study].register_as", "Pareto front", "--trial N")),
    # ------------------------------------------------------------------ numbers out of range
    Case("n_trials-zero", "n_trials_zero.toml", ("[study].n_trials", "0 is not allowed", "allowed: greater than 0")),
    Case("n_trials-negative", "n_trials_negative.toml", ("[study].n_trials", "-5", ALLOWED)),
    Case("timeout-zero", "timeout_zero.toml", ("[study].timeout", "0 is not allowed", ALLOWED)),
    Case("seed-negative", "seed_negative.toml", ("[study].seed", "-1", ALLOWED)),
    Case("seed-too-large", "seed_too_large.toml", ("[study].seed", "4294967296", ALLOWED)),
    Case("repeats-zero", "repeats_zero.toml", ("[study].repeats", "0 is not allowed", "greater than or equal to 1")),
    Case("repeats-too-large", "repeats_too_large.toml", ("[study].repeats", "1000000", "less than or equal to 100")),
    Case("repeats-float", "repeats_float.toml", ("[study].repeats", "2.5", "allowed: an integer")),
    Case("aggregate-unknown", "aggregate_unknown.toml",
         ("[study].aggregate", "'best'", "allowed: 'mean', 'median' or 'worst'")),
    Case("max_epochs-zero", "max_epochs_zero.toml", ("[train].max_epochs", "0 is not allowed", ALLOWED)),
    Case("max_epochs-negative", "max_epochs_negative.toml", ("[train].max_epochs", "-10", ALLOWED)),
    Case("max_epochs-too-large", "max_epochs_too_large.toml", ("[train].max_epochs", "1000000", ALLOWED)),
    Case("patience-zero", "patience_zero.toml", ("[train].early_stopping_patience", "0 is not allowed", ALLOWED)),
    Case("patience-negative", "patience_negative.toml", ("[train].early_stopping_patience", "-3", ALLOWED)),
    Case("checkpoint_every-zero", "checkpoint_every_zero.toml",
         ("[train].checkpoint_every", "0 is not allowed", "allowed: greater than or equal to 1")),
    Case("checkpoint_every-negative", "checkpoint_every_negative.toml", ("[train].checkpoint_every", "-5", ALLOWED)),
    Case("min_delta-negative", "min_delta_negative.toml", ("[train].min_delta", "-0.1", ALLOWED)),
    Case("system_metrics_interval-below-a-second", "system_metrics_interval_below_a_second.toml",
         ("[train].system_metrics_interval", "0.5 is not allowed", "allowed: greater than or equal to 1")),
    Case("system_metrics_interval-over-an-hour", "system_metrics_interval_over_an_hour.toml",
         ("[train].system_metrics_interval", "7200", "allowed: less than or equal to 3600")),
    Case("system_metrics_interval-nan", "system_metrics_interval_nan.toml",
         ("[train].system_metrics_interval", "nan", "allowed: a finite number")),
    Case("system_metrics-not-a-boolean", "system_metrics_not_a_boolean.toml",
         ("[train].system_metrics", "'off'", "allowed: a boolean")),
    Case("n_samples-too-small", "n_samples_too_small.toml", ("[data].n_samples", "10", ALLOWED)),
    Case("study-name-empty", "study_name_empty.toml", ("[study].name", "''", ALLOWED)),
    Case("batch_size-zero", "batch_size_zero.toml", ("[search].batch_size", "0", "allowed: an integer >= 1")),
    Case("batch_size-negative-choice", "batch_size_negative_choice.toml", ("[search].batch_size[1]", "-8", ALLOWED)),
    Case("batch_size-range-low-zero", "batch_size_range_low_zero.toml", ("[search].batch_size.low", "0", ALLOWED)),
    Case("units-zero", "units_zero.toml", ("[search].units", "0", "allowed: an integer >= 1")),
    Case("depth-negative", "depth_negative.toml", ("[search].depth", "-1", "allowed: an integer >= 0")),
    Case("learning_rate-zero", "learning_rate_zero.toml", ("[search].learning_rate", "0", "allowed: a number > 0")),
    Case("learning_rate-inf", "learning_rate_inf.toml", ("[search].learning_rate", "inf", "allowed: a finite number")),
    Case("dropout-one", "dropout_one.toml", ("[search].dropout", "1.0", "allowed: a rate in [0, 1)")),
    Case("dropout-negative", "dropout_negative.toml", ("[search].dropout", "-0.1", "allowed: a rate in [0, 1)")),
    Case("dropout-range-high-one", "dropout_range_high_one.toml", ("[search].dropout.high", "1.0", ALLOWED)),
    # ------------------------------------------------------------------ fractions
    Case("validation_fraction-zero", "validation_fraction_zero.toml", ("[data].validation_fraction", "0", ALLOWED)),
    Case("validation_fraction-one", "validation_fraction_one.toml", ("[data].validation_fraction", "1.0", ALLOWED)),
    Case("test_fraction-negative", "test_fraction_negative.toml", ("[data].test_fraction", "-0.1", ALLOWED)),
    Case("fractions-sum-too-large", "fractions_sum_too_large.toml",
         ("[data].test_fraction", "validation_fraction + test_fraction = 1", "allowed: a sum of at most 0.8")),
    Case("fractions-leave-no-training-rows", "fractions_leave_no_training_rows.toml",
         ("5 rows are too few", "validation_fraction = 0.4", "test_fraction = 0.4", ALLOWED),
         names=_data("five_rows.csv")),
    # ------------------------------------------------------------------ [[enqueue]] in the spec
    Case("enqueue-outside-range", "enqueue_outside_range.toml",
         ("[[enqueue]][0].learning_rate", "0.5", "outside the search space", "allowed: 0.0001 <= value <= 0.1")),
    Case("enqueue-not-a-choice", "enqueue_not_a_choice.toml",
         ("[[enqueue]][1].optimizer", "'rmsprop'", "outside the search space", "allowed: 'adam', 'sgd'")),
    Case("enqueue-differs-from-fixed", "enqueue_differs_from_fixed.toml",
         ("[[enqueue]][0].units", "64", "allowed: 32 (fixed)")),
    Case("enqueue-unknown-parameter", "enqueue_unknown_parameter.toml",
         ("[[enqueue]][0].learningrate", "did you mean 'learning_rate'", ALLOWED)),
    Case("enqueue-wrong-type", "enqueue_wrong_type.toml", ("[[enqueue]][0].batch_size", "'big'", "allowed: an integer")),
    Case("enqueue-off-step", "enqueue_off_step.toml", ("[[enqueue]][0].units", "9", ALLOWED)),
    # ------------------------------------------------------------------ data
    Case("data-file-missing", "data_file_missing.toml",
         ("[data].source", "does_not_exist.csv", "no such file", ALLOWED)),
    Case("data-directory", "data_directory.toml", ("is a directory", ALLOWED), names=_data("a_directory.csv")),
    Case("data-empty-csv", "data_empty_csv.toml", ("is empty", ALLOWED), names=_data("empty.csv")),
    Case("data-blank-csv", "data_blank_csv.toml", ("is empty", ALLOWED), names=_data("blank_lines.csv")),
    Case("data-header-only", "data_header_only.toml", ("has a header but no rows", ALLOWED),
         names=_data("header_only.csv")),
    Case("data-target-not-found", "data_target_not_found.toml",
         ("column 'pased'", "target column not found", "did you mean 'passed'", ALLOWED),
         names=_data("pass_fail_small.csv")),
    Case("data-builtin-target-not-found", "data_builtin_target_not_found.toml",
         ("[data].target", "'grade'", "not a column", ALLOWED)),
    Case("data-file-without-target", "data_file_without_target.toml",
         ("[data].target", "missing", "'data/pass_fail_small.csv'", ALLOWED)),
    Case("data-single-class", "data_single_class.toml", ("column 'result'", "single class 'pass'", ALLOWED),
         names=_data("single_class.csv")),
    Case("data-regression-text-target", "data_regression_text_target.toml",
         ("column 'grade'", "needs a numeric target", "'A'", ALLOWED), names=_data("text_target.csv")),
    Case("data-regression-bool-target", "data_regression_bool_target.toml",
         ("column 'passed'", "numeric target", ALLOWED), names=_data("bool_target.csv")),
    Case("data-nan-feature", "data_nan_feature.toml", ("column 'hours'", "2 row(s) have missing values", ALLOWED),
         names=_data("nan_feature.csv")),
    Case("data-inf-feature", "data_inf_feature.toml", ("column 'hours'", "infinite values", ALLOWED),
         names=_data("inf_feature.csv")),
    Case("data-duplicate-columns", "data_duplicate_columns.toml", ("column 'hours'", "duplicate column name", ALLOWED),
         names=_data("duplicate_columns.csv")),
    Case("data-unknown-file-type", "data_unknown_file_type.toml", ("unknown file type '.xlsx'", ALLOWED),
         names=_data("table.xlsx")),
    Case("data-not-parquet", "data_not_parquet.toml", ("cannot be read as Parquet",), names=_data("not_really.parquet")),
    Case("data-parquet-without-rows", "data_parquet_without_rows.toml", ("has a header but no rows", ALLOWED),
         names=_data("no_rows.parquet")),
    Case("data-not-utf8-csv", "data_not_utf8_csv.toml", ("not UTF-8", ALLOWED), names=_data("latin1.csv")),
    Case("data-ragged-csv", "data_ragged_csv.toml", ("cannot be parsed as CSV", "line 5"), names=_data("ragged.csv")),
    Case("data-missing-target-values", "data_missing_target_values.toml",
         ("column 'passed'", "2 row(s) have no target value", ALLOWED), names=_data("missing_target.csv")),
    Case("data-exclude-unknown-column", "data_exclude_unknown_column.toml",
         ("[data].exclude", "'nosuch'", "allowed: lectures, hours, passed")),
    Case("data-exclude-every-feature", "data_exclude_every_feature.toml", ("no feature columns left", "[data].exclude"),
         names=_data("pass_fail_small.csv")),
    Case("data-only-target-column", "data_only_target_column.toml", ("no feature columns left",),
         names=_data("only_target.csv")),
    Case("data-too-many-categories", "data_too_many_categories.toml",
         ("column 'student'", "60 distinct values", "allowed: at most 50"), names=_data("many_categories.csv")),
    Case("data-binary-with-three-classes", "data_binary_with_three_classes.toml",
         ("column 'level'", "task = 'binary'", "3 classes", "allowed: exactly 2"), names=_data("three_classes.csv")),
    Case("data-mean-on-text-column", "data_mean_on_text_column.toml",
         ("column 'color'", "cannot be imputed with 'mean'", ALLOWED), names=_data("text_gap.csv")),
    Case("data-drop-leaves-no-rows", "data_drop_leaves_no_rows.toml", ("no rows left",),
         names=_data("every_row_has_a_gap.csv")),
    Case("data-infinite-regression-target", "data_infinite_regression_target.toml",
         ("column 'grade'", "infinite target values", ALLOWED), names=_data("inf_target.csv")),
    # ------------------------------------------------------------------ [model] layers and the built-in MLP's size
    Case("layer-unknown-type", "models/layer_unknown_type.toml",
         ("[model].layers[0].type", "'Dense2'", "did you mean 'Dense'", ALLOWED)),
    Case("layer-lambda-refused", "models/layer_lambda_refused.toml",
         ("[model].layers[0].type", "'Lambda' is refused", "arbitrary Python code")),
    Case("layer-input-layer-refused", "models/layer_input_layer.toml",
         ("[model].layers[0].type", "'InputLayer' is refused", "nnstudy adds")),
    Case("layer-unknown-argument", "models/layer_unknown_argument.toml",
         ("[model].layers[0].unit", "unknown argument of Dense", "did you mean 'units'", "allowed: units, activation")),
    Case("layer-wrong-value-type", "models/layer_wrong_value_type.toml",
         ("[model].layers[0]", "Dense cannot be made", "units=many", ALLOWED)),
    Case("layer-conv-on-table", "models/layer_conv_on_table.toml",
         ("[model].layers[0]", "Conv2D does not fit its input of shape (None, 2)")),
    Case("layer-flatten-missing", "models/layer_flatten_missing.toml",
         ("[model].layers", "output has shape (None, 8, 8, 10)", "add a Flatten", "allowed: (None, 10)")),
    Case("layer-unknown-reference", "models/layer_unknown_reference.toml",
         ("[model].layers", "'$filterz' refers to no [search] parameter", "did you mean 'filters'", ALLOWED)),
    Case("layer-unused-custom-parameter", "models/layer_unused_custom_parameter.toml",
         ("[search].kernel", "used by no layer", ALLOWED)),
    Case("layer-custom-parameter-without-model", "models/custom_parameter_without_model.toml",
         ("[search].filters", "unknown parameter", "[model] layers", ALLOWED)),
    Case("layers-and-builder", "models/layers_and_builder.toml", ("[model].builder", "both layers and builder", ALLOWED)),
    Case("layers-not-a-list", "models/layers_not_a_list.toml", ("[model].layers", "'Dense'", "allowed: a list")),
    Case("layer-without-type", "models/layer_without_type.toml", ("[model].layers[0]", "lacks 'type'", ALLOWED)),
    Case("layer-bad-regularizer-key", "models/layer_bad_regularizer_key.toml",
         ("[model].layers[0].kernel_regularizer.l3", "unknown key", "allowed: l1, l2")),
    Case("layer-too-many-weights", "models/layer_too_many_weights.toml",
         ("[model].layers[1]", "10,000,400,000 weights", "limit of 50,000,000", ALLOWED)),
    Case("layer-repeat-huge", "models/layer_repeat_huge.toml",
         ("[model].layers", "100,000 layers", "limit of 500", ALLOWED)),
    Case("layer-repeat-negative", "models/layer_repeat_negative.toml",
         ("[model].layers[0].repeat", "-1 is not allowed", ALLOWED)),
    Case("layer-repeat-float-reference", "models/layer_repeat_float_reference.toml",
         ("[model].layers[0].repeat", "0.2 is not allowed", "allowed: an integer >= 0")),
    Case("layer-serialized-class", "models/layer_serialized_class.toml",
         ("[model].layers[0].kernel_initializer.class_name", "serialization tables are refused", ALLOWED)),
    Case("model-unknown-key", "models/model_unknown_key.toml", ("[model].layer", "did you mean 'layers'", ALLOWED)),
    Case("mlp-too-deep", "models/mlp_too_deep.toml", ("[search].depth", "depth 1000", "limit of 500", ALLOWED)),
    Case("mlp-too-many-weights", "models/mlp_too_many_weights.toml",
         ("[search].units", "200000 units", "limit of 50,000,000", ALLOWED)),
    # ------------------------------------------------------------------ [model].builder
    Case("builder-bad-reference", "models/builder_bad_reference.toml",
         ("[model].builder", "'good.py'", "FILE.py:FUNCTION", ALLOWED)),
    Case("builder-missing-file", "models/builder_missing_file.toml",
         ("[model].builder", "nope.py", "does not exist", ALLOWED)),
    Case("builder-missing-function", "models/builder_missing_function.toml",
         ("[model].builder", "no 'biuld'", "did you mean 'build'", ALLOWED)),
    Case("builder-syntax-error", "models/builder_syntax_error.toml", ("syntax_error.py:3", "SyntaxError"),
         names="builders/syntax_error.py"),
    Case("builder-raises-at-import", "models/builder_raises_at_import.toml",
         ("raises_at_import.py:3", "ZeroDivisionError", "while importing the builder"),
         names="builders/raises_at_import.py"),
    Case("builder-raises-in-build", "models/builder_raises_in_build.toml",
         ("raises_in_build.py:6", "RuntimeError: no model with", "in build()"), names="builders/raises_in_build.py"),
    Case("builder-returns-functional", "models/builder_returns_functional.toml",
         ("returns_functional.py", "returned a Functional model", "allowed: a keras.Sequential"),
         names="builders/returns_functional.py"),
    Case("builder-output-mismatch", "models/builder_output_mismatch.toml",
         ("[model].builder", "output has shape (None, 3)", "allowed: (None, 1) for a binary task")),
    Case("builder-with-grid", "models/builder_with_grid.toml", ("[study].sampler", "'grid' with a [model].builder",
                                                                ALLOWED)),
    Case("builder-with-custom-search", "models/builder_with_custom_search.toml",
         ("[search].units", "not searched with a [model].builder", "allowed: learning_rate, optimizer, batch_size")),
    Case("builder-unbuilt-conv-on-table", "models/builder_unbuilt_conv_on_table.toml",
         ("[model].builder", "cannot be built on the data's inputs of shape (None, 2)")),
    Case("builder-name-mlflow-refuses", "models/builder_name_mlflow_refuses.toml",
         ("bad_name.py:5", "'units[0]' cannot be an MLflow parameter", ALLOWED), names="builders/bad_name.py"),
    # ------------------------------------------------------------------ arrays (.npz) and images
    Case("npz-missing-file", "models/npz_missing_file.toml", ("[data].source", "nope.npz", "no such file", ALLOWED)),
    Case("npz-missing-key", "models/npz_missing_key.toml", ("[data].x", "no array 'pixels'", "allowed: the keys present")),
    Case("npz-length-mismatch", "models/npz_length_mismatch.toml", ("'y' has 50 labels but x has 60 samples", ALLOWED),
         names=_data("length_mismatch.npz")),
    Case("npz-object-array", "models/npz_object_array.toml", ("object arrays are not allowed", ALLOWED),
         names=_data("object_array.npz")),
    Case("npz-not-a-zip", "models/npz_not_a_zip.toml", ("not a valid .npz archive", "not a zip archive", ALLOWED),
         names=_data("not_a_zip.npz")),
    Case("npz-nan-inputs", "models/npz_nan_inputs.toml", ("1 NaN or infinite value", "sample 3", ALLOWED),
         names=_data("nan_inputs.npz")),
    Case("npz-one-hot-labels", "models/npz_one_hot_labels.toml", ("shape (60, 2)", "not one-hot", ALLOWED),
         names=_data("one_hot.npz")),
    Case("npz-flat-inputs", "models/npz_flat_inputs.toml", ("shape (60,)", "at least one feature", ALLOWED),
         names=_data("flat_x.npz")),
    Case("npz-with-target", "models/npz_with_target.toml", ("[data].target", "leave target out", ALLOWED)),
    Case("table-scale-unit", "models/table_scale_unit.toml", ("[data].scale", "'unit'", "allowed: 'standard'")),
    # ------------------------------------------------------------------ names that would become paths; empty and odd specs
    Case("name-parent-dir", "name_parent_dir.toml", ("[study].name", "'../outside'", "not a study name", ALLOWED)),
    Case("name-absolute-path", "name_absolute_path.toml", ("[study].name", "'/tmp/evil'", ALLOWED)),
    Case("name-too-long", "name_too_long.toml", ("[study].name", "not a study name", "1 to 100", ALLOWED)),
    Case("name-newline", "name_newline.toml", ("[study].name", "'two\\nlines'", ALLOWED)),
    Case("cli-study-name-parent-dir", VALID, ("[study].name", "'../../x'", ALLOWED), args=("--study-name", "../../x")),
    Case("empty-spec", "empty_spec.toml", ("is empty", ALLOWED)),
    Case("min-delta-infinite", "min_delta_infinite.toml", ("[train].min_delta", "inf", "allowed: a finite number")),
    Case("range-int-step-larger-than-range", "range_int_step_larger_than_range.toml",
         ("[search].units.step", "5 does not divide the range 1..3", ALLOWED)),
    Case("range-float-step-not-dividing", "range_float_step_not_dividing.toml",
         ("[search].dropout.step", "0.2 does not divide the range 0.0..0.5", ALLOWED)),
    Case("choice-duplicate", "choice_duplicate.toml",
         ("[search].optimizer", "'adam' is listed more than once", "allowed: distinct choices")),
    Case("data-constant-regression-target", "data_constant_regression_target.toml",
         ("column 'grade'", "same target value 70", ALLOWED), names=_data("constant_target.csv")),
    Case("data-parquet-list-column", "data_parquet_list_column.toml",
         ("column 'marks'", "lists, structs or arrays", ALLOWED), names=_data("list_column.parquet")),
    Case("data-decimal-comma", "data_decimal_comma.toml",
         ("column 'hours'", "decimal comma", '[data].decimal = ","', '[data].delimiter = ";"'),
         names=_data("decimal_comma.csv")),
    Case("data-unknown-delimiter", "unknown_delimiter.toml", ("[data].delimiter", "':'", ALLOWED)),
    Case("backend-not-installed", "backend_not_installed.toml",
         ("[train].backend", "'torch'", "not installed", 'pip install "nnstudy[torch]"')),
    Case("cli-backend-not-installed", VALID, ("--backend", "'torch'", "not installed", 'pip install "nnstudy[torch]"'),
         args=("--backend", "torch"), names=None),
    Case("cli-gpus-not-a-gpu", VALID, ("--gpus abc", "'abc' is not a GPU", ALLOWED), args=("--gpus", "abc"),
         names=None),
    Case("storage-a-folder", VALID, ("--storage", "a_folder.db", "a directory", ALLOWED),
         args=("--storage", "sqlite:///{corpus}/store/a_folder.db"), names=None),
    Case("storage-not-a-database", VALID, ("--storage", "not_a_database.db", "not a SQLite database", ALLOWED),
         args=("--storage", "sqlite:///{corpus}/store/not_a_database.db"), names=None),
    Case("storage-same-file-as-tracking", VALID, ("--storage and --tracking-uri both name", ALLOWED),
         args=("--storage", "sqlite:///mlruns/mlflow.db"), names=None),
    # ------------------------------------------------------------------ store URIs and the tracking server
    Case("storage-redis", VALID, ("--storage", "'redis://localhost:6379/0'", "unknown scheme redis://",
                                  "allowed: sqlite://"), args=("--storage", "redis://localhost:6379/0"), names=None),
    Case("storage-sqlite-two-slashes", VALID, ("--storage", "'sqlite://optuna.db'", "three slashes"),
         args=("--storage", "sqlite://optuna.db"), names=None),
    Case("storage-no-scheme", VALID, ("--storage", "'optuna.db'", "unknown scheme (none)", ALLOWED),
         args=("--storage", "optuna.db"), names=None),
    Case("storage-postgres-unavailable", VALID, ("--storage", DEAD_POSTGRES),
         args=("--storage", DEAD_POSTGRES), names=None),
    Case("tracking-redis", VALID, ("--tracking-uri", "'redis://localhost:6379/0'", "unknown scheme redis://",
                                   "allowed: sqlite://"), args=("--tracking-uri", "redis://localhost:6379/0"), names=None),
    Case("tracking-file-scheme", VALID, ("--tracking-uri", "'file:///tmp/mlruns'", "unknown scheme file://", ALLOWED),
         args=("--tracking-uri", "file:///tmp/mlruns"), names=None),
    Case("tracking-unreachable", VALID, ("MLflow tracking server", DEAD_HTTP, "unreachable"),
         args=("--tracking-uri", DEAD_HTTP), names=None),
    Case("tracking-unreachable-from-env", VALID, ("MLflow tracking server", DEAD_HTTP, "unreachable"),
         env=(("MLFLOW_TRACKING_URI", DEAD_HTTP),), names=None),
    Case("tracking-unknown-scheme-from-env", VALID, ("'redis://localhost'", "unknown scheme redis://", ALLOWED),
         env=(("MLFLOW_TRACKING_URI", "redis://localhost"),), names=None),
    Case("tracking-postgres-unavailable", VALID, ("--tracking-uri", DEAD_POSTGRES),
         args=("--tracking-uri", DEAD_POSTGRES), names=None),
    # ------------------------------------------------------------------ other CLI arguments
    Case("cli-n-trials-zero", VALID, ("[study].n_trials", "0 is not allowed", ALLOWED), args=("--n-trials", "0")),
    Case("cli-seed-negative", VALID, ("[study].seed", "-1", ALLOWED), args=("--seed", "-1")),
    Case("cli-timeout-negative", VALID, ("[study].timeout", "-5.0", ALLOWED), args=("--timeout", "-5")),
    Case("cli-study-name-empty", VALID, ("[study].name", "''", ALLOWED), args=("--study-name", "")),
    Case("cli-sampler-grid-on-continuous-range", VALID, ("[search].learning_rate", "sampler = 'grid'", ALLOWED),
         args=("--sampler", "grid")),
    Case("cli-sampler-unknown", VALID, ("--sampler", "'cmaes'", "'tpe', 'random', 'grid'"),
         args=("--sampler", "cmaes"), names=None),
    Case("cli-n-trials-not-an-integer", VALID, ("--n-trials", "'ten'", "not a valid integer"),
         args=("--n-trials", "ten"), names=None),
    Case("cli-workers-zero", VALID, ("--workers", "'0'", "allowed: auto or an integer >= 1"),
         args=("--workers", "0"), names=None),
    Case("cli-workers-a-word", VALID, ("--workers", "'many'", "allowed: auto or an integer >= 1"),
         args=("--workers", "many"), names=None),
    Case("env-workers-negative", VALID, ("--workers", "'-2'", "allowed: auto or an integer >= 1"),
         env=(("NNSTUDY_WORKERS", "-2"),), names=None),
    # the workers start before the data is read (they import Keras meanwhile): stopped, nothing written
    Case("data-header-only-with-workers", "data_header_only.toml", ("has a header but no rows", ALLOWED),
         args=("--workers", "2"), names=_data("header_only.csv")),
    # ------------------------------------------------------------------ --enqueue files
    Case("enqueue-file-not-json", VALID, ("--enqueue", "not valid JSON", ALLOWED),
         args=("--enqueue", "{corpus}/enqueue/not_json.json"), names="enqueue/not_json.json"),
    Case("enqueue-file-object-not-list", VALID, ("--enqueue", "allowed: a JSON list of parameter objects"),
         args=("--enqueue", "{corpus}/enqueue/object_not_list.json"), names="enqueue/object_not_list.json"),
    Case("enqueue-file-list-of-numbers", VALID, ("--enqueue", "allowed: a JSON list of parameter objects"),
         args=("--enqueue", "{corpus}/enqueue/list_of_numbers.json"), names="enqueue/list_of_numbers.json"),
    Case("enqueue-file-missing", VALID, ("--enqueue", "no such file"),
         args=("--enqueue", "{corpus}/enqueue/does_not_exist.json"), names="enqueue/does_not_exist.json"),
    Case("enqueue-file-directory", VALID, ("--enqueue", "is a directory, which is never read", ALLOWED),
         args=("--enqueue", "{corpus}/enqueue/a_directory.json"), names="enqueue/a_directory.json"),
    Case("enqueue-file-not-utf8", VALID, ("--enqueue", "not valid JSON", ALLOWED),
         args=("--enqueue", "{corpus}/enqueue/not_utf8.json"), names="enqueue/not_utf8.json"),
    Case("enqueue-file-outside-space", VALID,
         ("[0].learning_rate", "0.5", "outside the search space", "allowed: 0.0001 <= value <= 0.1"),
         args=("--enqueue", "{corpus}/enqueue/outside_space.json"), names="enqueue/outside_space.json"),
    Case("enqueue-file-unknown-parameter", VALID, ("[0].optimiser", "did you mean 'optimizer'", ALLOWED),
         args=("--enqueue", "{corpus}/enqueue/unknown_parameter.json"), names="enqueue/unknown_parameter.json"),
    Case("enqueue-file-wrong-type", VALID, ("[0].batch_size", "'big'", "allowed: an integer"),
         args=("--enqueue", "{corpus}/enqueue/wrong_type.json"), names="enqueue/wrong_type.json"),
    Case("enqueue-file-nan", VALID, ("[0].learning_rate", "nan", "allowed: a finite number"),
         args=("--enqueue", "{corpus}/enqueue/nan_value.json"), names="enqueue/nan_value.json"),
    Case("enqueue-file-huge-integer", VALID, ("[0].learning_rate", ALLOWED),
         args=("--enqueue", "{corpus}/enqueue/huge_integer.json"), names="enqueue/huge_integer.json"),
]


def _params(command: str) -> list[Any]:
    cases = CASES if command == "run" else [c for c in CASES if not c.args and not c.env]
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=f"bug: {c.bug}")] if c.bug else [])
            for c in cases]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def empty_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, no MLFLOW_TRACKING_URI, and a guard that stops a study from running.

    A case the library wrongly accepts would otherwise train models: the guard makes it fail
    (exit 1) at the first MLflow experiment instead -- after the stores were created, so the
    "nothing created" check still sees them.
    """
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from nnstudy import runtime

    runtime.configure(import_keras=True)  # TensorFlow is imported by the runner below; quietly, as the CLI does
    import nnstudy.tracking

    def guard(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("bad input was accepted: the study went on to create its MLflow experiment")

    monkeypatch.setattr(nnstudy.tracking.Tracker, "experiment", guard)
    return workdir


def _check(result: Result, case: Case, workdir: Path, before: set[str]) -> None:
    output = result.output
    if not isinstance(result.exception, SystemExit) and result.exc_info is not None:
        detail = "".join(traceback.format_exception(*result.exc_info))
        pytest.fail(f"exit {result.exit_code}, uncaught {result.exception!r}\n{detail}\noutput: {output!r}")
    assert "Traceback" not in output
    assert result.exit_code == 2, f"exit {result.exit_code}, output: {output!r}"
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, f"expected one 'Error: ' line, got {output!r}"
    message = errors[0]
    if case.names is not None:
        name = Path(case.spec if case.names == SPEC else case.names).name
        assert name in message, f"the message does not name {name}: {message!r}"
    missing = [s for s in case.expect if s not in message]
    assert not missing, f"{missing} not in {message!r}"
    created = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    assert created == [], f"created in the working dir: {created}; message: {message!r}"
    assert _tree(CORPUS) == before, "the corpus folder changed"


def _invoke(command: str, case: Case, monkeypatch: pytest.MonkeyPatch) -> Result:
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    spec = str(CORPUS / case.spec)
    extra = [a.replace("{corpus}", str(CORPUS)) for a in case.args]
    args = [command, spec, *extra, "--no-progress"] if command == "run" else [command, spec]
    return CliRunner().invoke(cli, args)


@pytest.mark.parametrize("case", _params("run"))
def test_run_rejects_bad_input(case: Case, empty_workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _tree(CORPUS)
    _check(_invoke("run", case, monkeypatch), case, empty_workdir, before)


@pytest.mark.parametrize("case", _params("validate"))
def test_validate_rejects_bad_input(case: Case, empty_workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _tree(CORPUS)
    _check(_invoke("validate", case, monkeypatch), case, empty_workdir, before)


# --------------------------------------------------------------------------- the corpus itself


def test_corpus_has_at_least_55_file_backed_cases() -> None:
    file_backed = {c.id for c in CASES if (CORPUS / c.spec).exists() and
                   (c.spec != VALID or any("{corpus}" in a for a in c.args))}
    assert len(file_backed) >= 55
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


def test_every_corpus_spec_is_used_by_a_case() -> None:
    used = {c.spec for c in CASES}
    specs = {str(p.relative_to(CORPUS)) for pattern in ("*.toml", "models/*.toml") for p in CORPUS.glob(pattern)}
    assert specs - used == set()


def test_every_corpus_data_enqueue_and_builder_file_is_used() -> None:
    text = "\n".join((CORPUS / c.spec).read_text(encoding="utf-8", errors="replace")
                     for c in CASES if (CORPUS / c.spec).is_file())
    text += "\n".join(a for c in CASES for a in c.args) + "\n".join(name for name, _ in READ_ONLY_STORES)
    unused = [p.name for folder in ("data", "enqueue", "builders", "store") for p in (CORPUS / folder).iterdir()
              if p.name not in text]
    assert unused == []


def test_model_and_array_corpus_has_at_least_30_cases() -> None:
    assert len([c for c in CASES if c.spec.startswith("models/")]) >= 30


def test_the_valid_spec_used_by_argument_cases_is_valid(empty_workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(CORPUS / VALID)])
    assert result.exit_code == 0, result.output
    assert list(empty_workdir.iterdir()) == []



# --------------------------------------------------------------------------- commands that only read

#: store files under corpus/store/ given to the commands that only read, and what they must say
READ_ONLY_STORES = [("empty.db", "the file is empty"), ("not_a_database.db", "not a SQLite database"),
                    ("a_folder.db", "a directory")]


@pytest.mark.parametrize("command", [["trials"], ["best"], ["report", "--out", "rep"], ["sync"],
                                     ["predict", "--input", "rows.csv"]])
@pytest.mark.parametrize(("storage", "expect"), READ_ONLY_STORES)
def test_read_only_commands_never_write_a_store(empty_workdir: Path, command: list[str], storage: str,
                                                expect: str) -> None:
    store = CORPUS / "store" / storage
    before = _tree(CORPUS)
    stamp = store.stat().st_mtime_ns, (store.stat().st_size if store.is_file() else None)
    result = CliRunner().invoke(cli, [*command, "--storage", f"sqlite:///{store}",
                                      "--tracking-uri", f"sqlite:///{empty_workdir / 'mlflow.db'}"])
    assert result.exit_code == 2, result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert "--storage" in error and expect in error and "not an nnstudy/Optuna storage" in error
    assert (store.stat().st_mtime_ns, store.stat().st_size if store.is_file() else None) == stamp
    assert _tree(CORPUS) == before and list(empty_workdir.iterdir()) == []
