"""README and CLI stay true to each other; the CLI starts without the heavy frameworks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnstudy.cli import cli

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def _readme_commands() -> list[str]:
    block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_starts_with_exactly_two_commands() -> None:
    first, second = _readme_commands()
    assert "nnstudy run studies/pass_fail.toml" in first
    assert "pytest" in second


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test_command = _readme_commands()
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_and_is_documented(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    command = cli.commands[name]
    assert command.help and len(command.help) > 20
    assert f"nnstudy {name}" in README


def test_every_spec_in_studies_validates() -> None:
    for spec in sorted((ROOT / "studies").glob("*.toml")):
        result = CliRunner().invoke(cli, ["validate", str(spec)])
        assert result.exit_code == 0, (spec, result.output)
        assert f"`{spec.name}`" in README  # and is listed in the README's table


def test_help_does_not_import_tensorflow_mlflow_or_optuna() -> None:
    code = ("import sys; from nnstudy.cli import cli; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _imports_of(path: Path) -> set[str]:
    """The nnstudy modules a module imports (top level and inside functions; not TYPE_CHECKING blocks)."""
    import ast

    tree = ast.parse(path.read_text())
    guarded = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nnstudy"):
            found.add(node.module if node.module != "nnstudy" else f"nnstudy.{node.names[0].name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nnstudy.")}
    return found - {"nnstudy"}


def test_no_import_cycles_between_modules() -> None:
    modules = {f"nnstudy.{p.stem}": _imports_of(p) for p in (ROOT / "nnstudy").glob("*.py") if p.stem != "__init__"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for dep in modules.get(start, set()):
            if dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})):
                return True
        return False

    cycles = sorted(m for m in modules if reaches(m, m, {m}))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_only_contract_spells_the_keys_linking_trials_and_runs() -> None:
    import re

    key = re.compile(r'"(nnstudy\.[a-z_]+|mlflow_pending|mlflow_parent_run_id|mlflow\.parentRunId)"'
                     r'|user_attrs(?:\.get\(|\[)"[a-z_]+"|set_(?:trial_)?user_attr\([^,]*"[a-z_]+"')
    modules = {f"nnstudy.{p.stem}" for p in (ROOT / "nnstudy").glob("*.py")}  # module names are not keys
    offenders = {p.name: [k for k in key.findall(p.read_text()) if k not in modules]
                 for p in (ROOT / "nnstudy").glob("*.py") if p.name != "contract.py"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_reading_a_study_does_not_import_keras_or_tensorflow() -> None:
    code = ("import sys; import nnstudy.api, nnstudy.records, nnstudy.report, nnstudy.sync, nnstudy.progress; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_readme_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = README.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = block.replace('"studies/pass_fail.toml"', repr(str(ROOT / "studies" / "pass_fail.toml")))
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    frame = namespace["frame"]
    assert len(frame) == 3 and {"number", "value", "diagnosis"} <= set(frame.columns)  # type: ignore[attr-defined]
    assert (tmp_path / "mlruns" / "optuna.db").exists()


def test_modules_import_only_from_the_rows_above_them_in_the_readme() -> None:
    block = README.split("### Architecture", 1)[1].split("```\n", 2)[1]
    rows = [[w.removesuffix(".py") for w in line.split() if w.endswith(".py")] for line in block.splitlines()]
    row_of = {f"nnstudy.{m}": i for i, names in enumerate(rows) for m in names}
    modules = {p.stem for p in (ROOT / "nnstudy").glob("*.py")} - {"__init__"}
    assert {f"nnstudy.{m}" for m in modules} == set(row_of), "every module is in the README's architecture"
    wrong = {m: sorted(d for d in _imports_of(ROOT / "nnstudy" / f"{m.split('.')[1]}.py") if row_of[d] > row_of[m])
             for m in row_of}
    assert {m: d for m, d in wrong.items() if d} == {}
