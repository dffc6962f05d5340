"""Project-level checks: the README quick start and CI stay in sync, every command has --help."""

from __future__ import annotations

import re

from click.testing import CliRunner

from esrkit.cli.main import COMMANDS, cli
from tests.conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("## Using it", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick)


def test_readme_quickstart_has_two_commands_and_ci_runs_the_test_one() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "esrkit demo" in demo and "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the test command in .ci/run must be the README's, character for character"


def test_every_command_has_help() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        res = runner.invoke(cli, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)
        assert "Usage" in res.output


def test_no_pickle_in_the_package() -> None:
    for path in (REPO / "esrkit").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, path
        assert "torch.load(" not in text, path
