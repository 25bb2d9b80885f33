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
