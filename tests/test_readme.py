"""The README's commands are real: the two opening commands, and every usage example."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from monitor.cli import cli
from monitor.standin import StandIn

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _blocks() -> list[list[str]]:
    return [
        [line for line in block.splitlines() if line.strip()]
        for block in re.findall(r"```sh\n(.*?)```", README, re.DOTALL)
    ]


def test_the_readme_opens_with_the_demo_and_the_command_ci_runs() -> None:
    setup, tests = _blocks()[0]
    install, demo = setup.rsplit(" && ", 1)
    assert demo == ".venv/bin/trial-monitor demo"
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci
    assert tests in ci.splitlines()


def test_every_trial_monitor_example_in_the_readme_runs(api: StandIn, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[source]\nbase_url = "{api.base_url}"\npace = 0\n[storage]\ndatabase = "m.db"\n'
        '[logging]\nlevel = "warning"\n'
    )
    examples = [
        line
        for block in _blocks()
        for line in block
        if line.startswith("trial-monitor ") and "# long-running" not in line
    ]
    assert len(examples) >= 7
    runner = CliRunner(env={"TRIAL_MONITOR_CONFIG": str(config)})
    for line in examples:
        args = shlex.split(line, comments=True)[1:]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, f"{line}\n{result.output}"
