"""The offline demo: the real pipeline over recorded real versions, readable output."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from monitor.cli import cli


def test_the_demo_finds_the_recorded_changes_and_prints_a_trial_page(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "serving 14 real trials (offline)" in out
    assert "Cycle 1 (first sight, recorded as the baseline): Checked 14 of 14 trials" in out
    assert "Cycle 2 (next recorded versions): Checked 14 of 14 trials: 13 changed" in out
    section = out[out.index("### NCT05935098") : out.index("### NCT06330064")]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    assert lines[0] == "- **major** Overall status: ACTIVE_NOT_RECRUITING → TERMINATED"
    assert "- **major** Enrollment: 263 → 99 (ACTUAL)" in lines
    assert lines[-1].startswith("- _bookkeeping:_ Last update posted: 2025-06-25 → 2026-03-13")
    assert "### NCT05289492" not in out  # its only refetch changed nothing but versionHolder
    assert "## Recent Field Changes (last 30 days)" in out
    assert "- `status.overallStatus` — changed: ACTIVE_NOT_RECRUITING → TERMINATED" in out
    assert (tmp_path / "demo.db").exists()
    again = CliRunner().invoke(
        cli,
        [
            "changes",
            "--config",
            str(tmp_path / "config.toml"),
            "--significance",
            "major",
            "--format",
            "json",
        ],
    )
    assert again.exit_code == 0, again.output
    assert '"field": "status.overallStatus"' in again.output
