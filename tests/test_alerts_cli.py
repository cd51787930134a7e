"""The alert commands end to end: subscribe, subscriptions, notify, outbox, changes levels."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from monitor.cli import cli
from monitor.standin import StandIn
from monitor.storage import Store
from tests.receivers import Receiver, receiver

TRIAL = "NCT05935098"


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as server:
        yield server


@pytest.fixture
def config_file(api: StandIn, tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[source]\nbase_url = "{api.base_url}"\npace = 0\nmax_attempts = 2\n\n'
        '[storage]\ndatabase = "monitor.db"\n\n[logging]\nlevel = "warning"\n\n'
        '[notify]\nallow_private_targets = true\ntimeout = "2s"\n\n'
        '[smtp]\nhost = "127.0.0.1"\nport = 2525\nsecurity = "none"\nfrom = "alerts@example.org"\n'
    )
    return path


def run(config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--config", str(config_file)])


def ok(config_file: Path, *args: str) -> str:
    result = run(config_file, *args)
    assert result.exit_code == 0, result.output
    return result.output


def _subscription_count(config_file: Path) -> int:
    with Store(config_file.parent / "monitor.db") as store:
        return store.db.table("subscriptions").count


@pytest.fixture
def watched(config_file: Path) -> Path:
    ok(config_file, "add", TRIAL)
    return config_file


@pytest.mark.parametrize(
    "args",
    [
        ["--email", "not-an-address", "--trial", TRIAL],
        ["--webhook", "ftp://example.org/in", "--trial", TRIAL],
        ["--apprise", "nosuchservice://token", "--all"],
        ["--email", "a@example.org", "--trial", "NCT00000001"],
        ["--email", "a@example.org", "--trial", "bogus"],
        ["--email", "a@example.org", "--all", "--field", "nosuch.*"],
        ["--email", "a@example.org", "--all", "--min-significance", "huge"],
        ["--email", "a@example.org", "--all", "--digest", "hourly"],
        ["--email", "a@example.org"],
        ["--email", "a@example.org", "--all", "--trial", TRIAL],
        ["--all"],
        ["--email", "a@example.org", "--webhook", "https://example.org/in", "--all"],
    ],
)
def test_bad_subscribe_input_exits_2_and_stores_nothing(watched: Path, args: list[str]) -> None:
    result = run(watched, "subscribe", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert _subscription_count(watched) == 0


def test_webhook_secret_is_printed_once_and_never_listed(watched: Path, hook: Receiver) -> None:
    out = ok(
        watched,
        "subscribe",
        "--webhook",
        f"{hook.url}/in?token=abc123",
        "--trial",
        TRIAL,
        "--field",
        "locations.*",
        "--field",
        "status.*",
        "--min-significance",
        "major",
        "--name",
        "sites",
    )
    sub_id = re.search(r"Subscription (\d+) created", out)
    secret = re.search(r"(whsec_\S+)", out)
    assert sub_id is not None
    assert secret is not None
    for fmt in ("table", "json"):
        listed = ok(watched, "subscriptions", "--format", fmt)
        assert secret.group(1) not in listed
        assert "abc123" not in listed
        assert "sites" in listed
    [entry] = json.loads(ok(watched, "subscriptions", "--format", "json"))
    assert entry["fields"] == ["locations.*", "status.*"]
    assert entry["id"] == int(sub_id.group(1))
    email = ok(watched, "subscribe", "--email", "a@example.org", "--all")
    assert "whsec_" not in email


def test_notify_test_deliver_and_outbox(
    watched: Path, api: StandIn, hook: Receiver, tmp_path: Path
) -> None:
    ok(watched, "subscribe", "--webhook", f"{hook.url}/in", "--trial", TRIAL)
    ok(watched, "check")
    assert "empty" in ok(watched, "outbox")
    assert "Sent a test alert" in ok(watched, "notify", "test", "1")
    [test] = hook.requests
    assert test.headers["Idempotency-Key"].startswith("test-")
    api.advance(TRIAL)
    ok(watched, "check")
    queued = json.loads(ok(watched, "outbox", "--format", "json"))
    assert [(r["nct_id"], r["state"], r["subscription_id"]) for r in queued] == [
        (TRIAL, "pending", 1)
    ]
    assert "Sent 1 alert," in ok(watched, "notify", "deliver")
    assert hook.keys()[1] == queued[0]["idempotency_key"]
    assert "empty" in ok(watched, "outbox")
    assert "No failed alerts." in ok(watched, "outbox", "--failed")
    hook.status = 500
    failed = run(watched, "notify", "test", "1")
    assert failed.exit_code == 1
    assert "HTTP 500" in failed.output
    assert "Traceback" not in failed.output
    assert run(watched, "notify", "test", "99").exit_code == 2
    assert run(watched, "unsubscribe", "99").exit_code == 2
    assert "Removed subscription 1." in ok(watched, "unsubscribe", "1")


def test_a_failed_alert_is_listed_by_outbox_failed(
    watched: Path, api: StandIn, hook: Receiver
) -> None:
    ok(watched, "subscribe", "--webhook", f"{hook.url}/gone", "--all")
    ok(watched, "check")
    api.advance(TRIAL)
    ok(watched, "check")
    hook.status = 410
    assert "1 failed" in ok(watched, "notify", "deliver")
    table = ok(watched, "outbox", "--failed")
    assert TRIAL in table
    assert "HTTP 410" in table
    [row] = json.loads(ok(watched, "outbox", "--failed", "--format", "json"))
    assert row["state"] == "failed"


def test_changes_carry_significance_and_filter_by_it(watched: Path, api: StandIn) -> None:
    ok(watched, "check")
    api.advance(TRIAL)
    ok(watched, "check")
    rows = [r for r in json.loads(ok(watched, "changes", "--format", "json")) if not r["baseline"]]
    levels = {r["field"]: r["significance"] for r in rows}
    assert levels["status.overallStatus"] == "major"
    assert levels["status.lastUpdatePostDate"] == "admin"
    assert levels["identification.organization"] == "minor"
    major = json.loads(ok(watched, "changes", "--significance", "major", "--format", "json"))
    assert major
    assert {r["significance"] for r in major} == {"major"}
    assert "status.lastUpdatePostDate" not in {r["field"] for r in major}
    table = ok(watched, "changes", "--significance", "minor", "--field", "status.*")
    assert "level" in table.splitlines()[0]
    assert "admin" not in table
    assert run(watched, "changes", "--significance", "huge").exit_code == 2
