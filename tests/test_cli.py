"""The command line contract: ids, exit codes, formats, clean errors."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from monitor.cli import cli
from monitor.standin import StandIn


@pytest.fixture
def config_file(api: StandIn, tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[source]\nbase_url = "{api.base_url}"\npace = 0\nbackoff_initial = 0\n'
        'max_attempts = 2\n\n[storage]\ndatabase = "monitor.db"\n\n[logging]\nlevel = "warning"\n'
    )
    return path


def run(config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args[:1], "--config", str(config_file), *args[1:]])


def test_add_upper_cases_ids_and_reads_a_file(config_file: Path, tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("NCT05009069\nnct05123482, NCT05280470\n")
    result = run(config_file, "add", "nct05935098", "--file", str(ids))
    assert result.exit_code == 0, result.output
    listed = json.loads(run(config_file, "list", "--format", "json").output)
    assert [t["nct_id"] for t in listed] == [
        "NCT05009069",
        "NCT05123482",
        "NCT05280470",
        "NCT05935098",
    ]


def test_a_bad_id_exits_2_and_adds_nothing(config_file: Path) -> None:
    result = run(config_file, "add", "NCT05935098", "NCT123", "hello")
    assert result.exit_code == 2
    assert "not a ClinicalTrials.gov id: 'NCT123', 'hello'" in result.output
    assert "Traceback" not in result.output
    assert json.loads(run(config_file, "list", "--format", "json").output) == []


def test_check_prints_a_one_line_summary_and_changes_lists_them_as_json(
    config_file: Path, api: StandIn
) -> None:
    run(config_file, "add", "NCT05935098", "NCT05289492")
    first = run(config_file, "check")
    assert first.exit_code == 0, first.output
    assert re.fullmatch(
        r"Checked 2 of 2 trials: 0 changed, 2 new, 0 failed, 0 not found; 1 request in "
        r"[\d.]+s\n",
        first.output,
    )
    api.advance("NCT05935098")
    api.advance("NCT05289492")
    assert "1 changed" in run(config_file, "check").output
    rows = json.loads(run(config_file, "changes", "--format", "json").output)
    assert {"nct_id", "field", "change", "old", "new", "detected_at"} <= set(rows[0])
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["detected_at"]) for r in rows)
    real = [(r["field"], r["old"], r["new"]) for r in rows if not r["baseline"]]
    assert ("status.overallStatus", "ACTIVE_NOT_RECRUITING", "TERMINATED") in real
    assert all(r["nct_id"] == "NCT05935098" for r in rows if not r["baseline"])
    only = json.loads(
        run(
            config_file, "changes", "NCT05935098", "--field", "status.overall*", "--format", "json"
        ).output
    )
    assert [(r["field"], r["change"]) for r in only] == [
        ("status.overallStatus", "added"),
        ("status.overallStatus", "changed"),
    ]
    assert run(config_file, "changes", "--since", "2999-01-01").output.startswith("No changes")
    assert run(config_file, "changes", "--since", "last week").exit_code == 2


def _two_versions_seen(config_file: Path, api: StandIn) -> None:
    """NCT05935098 checked, then checked again after its real next version (terminated)."""
    run(config_file, "add", "NCT05935098")
    run(config_file, "check")
    api.advance("NCT05935098")
    run(config_file, "check")


def test_show_renders_the_seed_style_page_with_recent_field_changes(
    config_file: Path, api: StandIn
) -> None:
    _two_versions_seen(config_file, api)
    page = run(config_file, "show", "nct05935098").output
    assert page.startswith("---\ntitle: ")
    assert "\nnct_id: NCT05935098\n" in page
    for heading in (
        "## Key Facts",
        "## Brief Summary",
        "## Eligibility",
        "## Arms",
        "## Primary Outcomes",
        "## Locations (",
        "## Recent Field Changes (last 30 days)",
    ):
        assert heading in page
    assert re.search(
        r"^- `status\.overallStatus` — changed: ACTIVE_NOT_RECRUITING → TERMINATED "
        r"_\(\d{4}-\d\d-\d\d\)_$",
        page,
        re.MULTILINE,
    )
    recent = page.split("## Recent Field Changes (last 30 days)\n\n", 1)[1].splitlines()
    assert recent[0].startswith("- `status.overallStatus` — changed:")
    baseline = [bool(re.search(r"— added _\(\d{4}-\d\d-\d\d\)_$", line)) for line in recent]
    first_baseline = baseline.index(True)
    assert all("changed:" not in line for line in recent[first_baseline:])
    as_json = json.loads(run(config_file, "show", "NCT05935098", "--format", "json").output)
    assert as_json["record"]["protocolSection"]["statusModule"]["overallStatus"] == "TERMINATED"


def test_history_lists_versions_and_the_groups_that_changed(
    config_file: Path, api: StandIn
) -> None:
    _two_versions_seen(config_file, api)
    lines = run(config_file, "history", "NCT05935098").output.splitlines()
    assert len(lines) == 4
    assert "(first seen)" in lines[2]
    assert "design, identification, status" in lines[3]


def test_an_unknown_trial_or_config_key_is_one_clean_message(
    config_file: Path, tmp_path: Path
) -> None:
    unknown = run(config_file, "show", "NCT00000001")
    assert unknown.exit_code == 2
    assert "NCT00000001 is not watched" in unknown.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[source]\nbatchsize = 3\n")
    result = run(bad, "list")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {bad}: unknown key source.batchsize; known keys: base_url, batch_size, "
        "timeout, pace, max_attempts, backoff_initial, backoff_max, user_agent\n"
    )


def test_check_against_an_unreachable_registry_reports_failures_and_exits_0(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[source]\nbase_url = "http://127.0.0.1:9/api/v2"\npace = 0\nbackoff_initial = 0\n'
        'max_attempts = 1\ntimeout = "1s"\n[logging]\nlevel = "error"\n'
    )
    run(path, "add", "NCT05935098")
    result = run(path, "check")
    assert result.exit_code == 0
    assert "0 changed, 0 new, 1 failed" in result.output
    listed = json.loads(run(path, "list", "--format", "json").output)
    assert listed[0]["state"] == "new"


def test_python_dash_m_monitor_is_the_same_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "--help"], capture_output=True, text=True, check=True
    )
    assert "Watch ClinicalTrials.gov trials" in result.stdout
    for command in ("add", "remove", "list", "check", "changes", "show", "history", "demo"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE)


def _check_stderr(config_file: Path, on_terminal: bool) -> str:
    """Run `check` in a real process with stderr on a pseudo-terminal or a pipe."""
    subprocess.run(
        [sys.executable, "-m", "monitor", "add", "--config", str(config_file), "NCT05935098"],
        check=True,
        capture_output=True,
    )
    command = [sys.executable, "-m", "monitor", "check", "--config", str(config_file)]
    if not on_terminal:
        return subprocess.run(command, capture_output=True, text=True, timeout=60).stderr
    leader, follower = pty.openpty()
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower) as process:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_check_shows_a_progress_bar_only_on_a_terminal(config_file: Path) -> None:
    assert "Checking trials" in _check_stderr(config_file, on_terminal=True)
    assert "Checking trials" not in _check_stderr(config_file, on_terminal=False)


def test_notify_channels_prints_each_channel_docstring_as_help() -> None:
    from monitor.channels import CHANNELS

    output = CliRunner().invoke(cli, ["notify", "channels"]).output
    for kind, channel in CHANNELS.items():
        assert f"{kind}\n" in output
        assert (channel.__doc__ or "").strip().splitlines()[0] in output
