"""The systemd unit must load: ``systemd-analyze verify`` on a copy pointing at this venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[1] / "systemd" / "trial-monitor.service"
INSTALLED = "/opt/trial-monitor/venv/bin/trial-monitor"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd to run this)")
    script = Path(sys.executable).with_name("trial-monitor")
    assert script.exists(), f"{script}: install the package into the venv first"
    text = UNIT.read_text()
    assert INSTALLED in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED, str(script)))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_unit_runs_the_daemon_the_documented_way() -> None:
    lines = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert lines["Type"] == "notify"
    assert lines["ExecStart"] == f"{INSTALLED} run --config /etc/trial-monitor/config.toml"
    assert lines["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert (lines["DynamicUser"], lines["StateDirectory"]) == ("yes", "trial-monitor")
    assert lines["Restart"] == "on-failure"
