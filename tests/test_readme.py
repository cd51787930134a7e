"""The README's commands are real: the two opening commands, and every usage example."""

from __future__ import annotations

import re
import shlex
import socket
import time
from pathlib import Path
from typing import Any

import pytest
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


def test_every_trial_monitor_example_in_the_readme_runs(
    api: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[source]\nbase_url = "{api.base_url}"\npace = 0\n[storage]\ndatabase = "m.db"\n'
        '[logging]\nlevel = "warning"\n[smtp]\nfrom = "monitor@example.org"\n'
    )
    real_lookup = socket.getaddrinfo

    def offline_dns(host: str, *args: Any, **kwargs: Any) -> Any:
        """This machine has no DNS: give the README's public example host a public address."""
        if host == "hooks.example.org":
            return real_lookup("93.184.215.14", *args, **kwargs)
        return real_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", offline_dns)
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
        documented = re.search(r"\(exit (\d+):", line)
        result = runner.invoke(cli, args)
        expected = int(documented.group(1)) if documented else 0
        assert result.exit_code == expected, f"{line}\n{result.output}"


def test_the_readme_webhook_receiver_accepts_a_real_signature_once() -> None:
    from monitor.channels import sign

    (code,) = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    verify_request = namespace["verify_request"]
    body = b'{"trial": {"nct_id": "NCT05935098"}}'
    stamp = str(int(time.time()))
    headers = {
        "X-Trial-Monitor-Timestamp": stamp,
        "X-Trial-Monitor-Signature": sign("s3cret", stamp, body),
        "Idempotency-Key": "k1",
    }
    seen: set[str] = set()
    assert verify_request("s3cret", headers, body, seen)
    assert not verify_request("s3cret", headers, body, seen)
    assert not verify_request("s3cret", headers | {"Idempotency-Key": "k2"}, body + b" ", seen)
    assert not verify_request("other", headers | {"Idempotency-Key": "k3"}, body, seen)
