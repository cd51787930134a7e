"""Channels against real servers on 127.0.0.1: aiosmtpd for email, http.server for the rest."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from apprise.plugins.custom_json import NotifyJSON
from structlog.testing import capture_logs

from monitor.channels import (
    CHANNELS,
    Alert,
    AppriseChannel,
    Channel,
    DeliveryError,
    EmailChannel,
    WebhookChannel,
    alert_change,
    channel_class,
    channel_help,
    create_channel,
    fit_message,
    redact,
    register,
    resolve_target,
    sample_alert,
    verify,
)
from monitor.errors import NotifyError, UsageError
from monitor.model import Change
from tests import receivers
from tests.receivers import Mailbox, Receiver, free_port, smtp_server

SECRET = "whsec-test-0123456789"
DETECTED = datetime(2026, 5, 12, 7, 22, 31, tzinfo=UTC)


def make_alert(extra: int = 2, **overrides: Any) -> Alert:
    changes = [
        Change("status.lastUpdatePostDate", "changed", "2026-04-01", "2026-05-01"),
        Change("status.overallStatus", "changed", "RECRUITING", "SUSPENDED"),
    ] + [
        Change(f"outcomes.secondary.measure {i}", "added", None, {"measure": f"Measure {i}"})
        for i in range(extra)
    ]
    fields: dict[str, Any] = {
        "subscription_id": 7,
        "subscription_name": "CAR-T watch",
        "nct_id": "NCT06871644",
        "title": "CD7 CAR-T <cells> & friends",
        "changes": [alert_change(c, DETECTED) for c in changes],
        "idempotency_key": "sub7-NCT06871644-abc123",
        "unsubscribe": "trial-monitor unsubscribe 7",
    }
    fields.update(overrides)
    return Alert(**fields)


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server() as server:
        yield server.mailbox, server.port


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receivers.receiver() as server:
        yield server


def email_channel(
    port: int, target: str = "researcher@example.org", **settings: Any
) -> EmailChannel:
    base = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "alerts@example.org",
        "timeout": 5,
    }
    return EmailChannel(target, settings={**base, **settings})


# --------------------------------------------------------------------------- email


def test_email_delivers_both_parts_with_headers(smtp: tuple[Mailbox, int]) -> None:
    handler, port = smtp
    with capture_logs() as logs:
        email_channel(port).send(make_alert())
    [msg] = handler.messages
    assert msg["Subject"] == "NCT06871644: status RECRUITING → SUSPENDED (+3 more changes)"
    assert msg["Message-ID"] == "<sub7-NCT06871644-abc123@trial-monitor>"
    assert msg["List-Unsubscribe"] == "<mailto:alerts@example.org?subject=unsubscribe%207>"
    assert msg["To"] == "researcher@example.org"
    assert msg["X-Trial-Monitor-Subscription"] == "CAR-T watch"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None
    assert html is not None
    plain, markup = text.get_content(), html.get_content()
    for part in (plain, markup):
        assert "https://clinicaltrials.gov/study/NCT06871644" in part
        assert "https://clinicaltrials.gov/study/NCT06871644?tab=history" in part
        assert "trial-monitor unsubscribe 7" in part
    # Most significant first; the admin bookkeeping line comes last.
    lines = [line for line in plain.splitlines() if line.startswith("- [")]
    assert lines[0] == "- [major] Overall status: RECRUITING → SUSPENDED"
    assert lines[-1].startswith("- [admin] Last update posted")
    assert "CD7 CAR-T <cells> & friends" in plain
    assert "CD7 CAR-T &lt;cells&gt; &amp; friends" in markup
    assert "<cells>" not in markup
    assert [e["event"] for e in logs] == ["notify.sent"]


@pytest.mark.parametrize("name", ["watch\r\nBcc: victim@example.org", "watch\nX: y", "watch\r"])
def test_email_refuses_header_injection(smtp: tuple[Mailbox, int], name: str) -> None:
    handler, port = smtp
    with pytest.raises(NotifyError, match="CR/LF") as info:
        email_channel(port).send(make_alert(subscription_name=name))
    assert isinstance(info.value, DeliveryError)
    assert info.value.permanent
    assert handler.messages == []


def test_email_message_id_from_unsafe_key_is_hashed() -> None:
    msg = email_channel(25).build_message(make_alert(idempotency_key="k\r\nX: y"))
    assert re.fullmatch(r"<[0-9a-f]{64}@trial-monitor>", msg["Message-ID"])


def test_email_subject_never_carries_line_breaks(smtp: tuple[Mailbox, int]) -> None:
    handler, port = smtp
    change = Change(
        "status.overallStatus", "changed", "RECRUITING", "SUSPENDED\r\nBcc: x@example.org"
    )
    email_channel(port).send(make_alert(changes=[alert_change(change, DETECTED)]))
    [msg] = handler.messages
    assert msg["Subject"] == "NCT06871644: status RECRUITING → SUSPENDED Bcc: x@example.org"
    assert msg["Bcc"] is None


def test_email_validates_addresses_and_settings() -> None:
    channel = email_channel(25)
    for bad in ["", "no-at-sign", "a@b", "a b@example.org", "x@example.org\r\nBcc: y@example.org"]:
        with pytest.raises(UsageError, match="not a valid email address"):
            channel.validate_target(bad)
    channel.validate_target("jane.doe+trials@mail.example.org")
    with pytest.raises(UsageError, match=r"\[smtp\] from \(in config.toml\)"):
        email_channel(25, **{"from": "nobody"})
    with pytest.raises(UsageError, match="security must be one of"):
        email_channel(25, security="ssl")


def test_email_will_not_send_a_password_in_clear() -> None:
    with pytest.raises(UsageError, match="password unencrypted"):
        email_channel(25, username="alerts")


def test_email_refused_recipient_is_permanent(smtp: tuple[Mailbox, int]) -> None:
    _, port = smtp
    with pytest.raises(DeliveryError) as info:
        email_channel(port, target="gone@example.org").send(make_alert())
    assert info.value.permanent


def test_email_starttls_unsupported_is_permanent(smtp: tuple[Mailbox, int]) -> None:
    _, port = smtp
    with pytest.raises(DeliveryError, match="STARTTLS") as info:
        email_channel(port, security="starttls").send(make_alert())
    assert info.value.permanent


def test_email_unreachable_server_is_transient() -> None:
    with pytest.raises(DeliveryError) as info:
        email_channel(free_port(), timeout=2).send(make_alert())
    assert not info.value.permanent


# --------------------------------------------------------------------------- webhook


def webhook(receiver: Receiver, **options: Any) -> WebhookChannel:
    url = f"http://127.0.0.1:{receiver.server_port}/hooks/trial"
    return WebhookChannel(url, secret=SECRET, allow_private_targets=True, **options)


def test_webhook_is_signed_and_documented(receiver: Receiver) -> None:
    channel = webhook(receiver)
    channel.clock = lambda: 1_778_570_551.0
    channel.send(make_alert())
    [(path, headers, body)] = receiver.requests
    assert path == "/hooks/trial"
    timestamp = headers["X-Trial-Monitor-Timestamp"]
    assert timestamp == "1778570551"
    signature = headers["X-Trial-Monitor-Signature"]
    assert signature.startswith("sha256=")
    assert verify(SECRET, timestamp, body, signature, tolerance_s=300, now=1_778_570_600)
    assert not verify(SECRET, timestamp, body, signature, tolerance_s=300, now=1_778_571_000)
    assert not verify(
        "other-secret", timestamp, body, signature, tolerance_s=300, now=1_778_570_600
    )
    assert not verify(SECRET, timestamp, body + b" ", signature, tolerance_s=300, now=1_778_570_600)
    assert headers["Idempotency-Key"] == "sub7-NCT06871644-abc123"
    assert headers["Host"] == f"127.0.0.1:{receiver.server_port}"
    payload = json.loads(body)
    assert set(payload) == {"subscription", "trial", "changes", "idempotency_key", "sent_at"}
    assert payload["subscription"] == {"id": 7, "name": "CAR-T watch"}
    assert payload["trial"] == {
        "nct_id": "NCT06871644",
        "title": "CD7 CAR-T <cells> & friends",
        "url": "https://clinicaltrials.gov/study/NCT06871644",
        "history_url": "https://clinicaltrials.gov/study/NCT06871644?tab=history",
    }
    assert payload["sent_at"] == "2026-05-12T07:22:31Z"
    assert payload["changes"][0] == {
        "field": "status.overallStatus",
        "change": "changed",
        "old": "RECRUITING",
        "new": "SUSPENDED",
        "significance": "major",
        "detected_at": "2026-05-12T07:22:31Z",
        "text": "Overall status: RECRUITING → SUSPENDED",
    }
    assert payload["changes"][1]["new"] == {"measure": "Measure 0"}


@pytest.mark.parametrize(
    ("status", "permanent"), [(500, False), (429, False), (408, False), (410, True), (400, True)]
)
def test_webhook_failures(receiver: Receiver, status: int, permanent: bool) -> None:
    receiver.status = status
    with capture_logs() as logs, pytest.raises(DeliveryError, match=f"HTTP {status}") as info:
        webhook(receiver).send(make_alert())
    assert info.value.permanent is permanent
    assert isinstance(info.value, NotifyError)
    [event] = logs
    assert event["event"] == "notify.failed"
    assert event["permanent"] is permanent
    assert SECRET not in repr(logs)


def test_webhook_refuses_header_injection(receiver: Receiver) -> None:
    with pytest.raises(DeliveryError, match="CR/LF") as info:
        webhook(receiver).send(make_alert(idempotency_key="k\r\nX-Evil: 1"))
    assert info.value.permanent
    assert receiver.requests == []


def test_webhook_refuses_loopback_unless_allowed(receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.server_port}/hook"
    channel = WebhookChannel(url, secret=SECRET)
    with pytest.raises(UsageError, match=r"loopback.*\[notify\] allow_private_targets"):
        channel.validate_target(url)
    with pytest.raises(DeliveryError) as info:
        channel.send(make_alert())
    assert info.value.permanent
    assert receiver.requests == []
    with pytest.raises(UsageError, match="http:// or https://"):
        channel.validate_target("ftp://example.org/x")
    with pytest.raises(UsageError, match="loopback"):
        channel.validate_target("http://localhost:9/x")


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "100.64.0.1",
        "fd00::1",
        "fe80::1",
        "240.0.0.1",
    ],
)
def test_ssrf_guard_refuses_internal_addresses(address: str) -> None:
    with pytest.raises(UsageError, match="allow_private_targets"):
        resolve_target(address, 443, allow_private=False)
    assert resolve_target(address, 443, allow_private=True)


def test_ssrf_guard_allows_public_addresses() -> None:
    assert resolve_target("93.184.216.34", 443, allow_private=False) == ["93.184.216.34"]
    assert resolve_target("2606:4700::1111", 443, allow_private=False) == ["2606:4700::1111"]


# --------------------------------------------------------------------------- apprise


def test_apprise_json_reaches_receiver(receiver: Receiver) -> None:
    url = f"json://127.0.0.1:{receiver.server_port}/apprise/in"
    channel = AppriseChannel(url, allow_private_targets=True)
    channel.validate_target(url)
    channel.send(make_alert())
    [(path, _, body)] = receiver.requests
    assert path == "/apprise/in"
    payload = json.loads(body)
    assert payload["title"] == "NCT06871644: status RECRUITING → SUSPENDED (+3 more changes)"
    assert payload["message"].splitlines()[:2] == [
        "CD7 CAR-T <cells> & friends",
        "[major] Overall status: RECRUITING → SUSPENDED",
    ]
    assert payload["message"].endswith(
        "Full history: https://clinicaltrials.gov/study/NCT06871644?tab=history"
    )


def test_apprise_cuts_long_alert_at_a_change(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NotifyJSON, "body_maxlen", 300)
    alert = make_alert(extra=30)
    AppriseChannel(f"json://127.0.0.1:{receiver.server_port}/", allow_private_targets=True).send(
        alert
    )
    [(_, _, body)] = receiver.requests
    message = json.loads(body)["message"]
    assert len(message) <= 300
    *shown, last = message.splitlines()
    assert last.startswith("… and ")
    assert last.endswith(f"more: {alert.history_url}")
    texts = {f"[{c.significance}] {c.text}" for c in alert.changes}
    assert all(line in texts for line in shown[1:])
    assert int(last.split()[2]) == len(alert.changes) - (len(shown) - 1)


def test_apprise_rejects_unknown_schemes_and_loopback(receiver: Receiver) -> None:
    channel = AppriseChannel("nope://x")
    with pytest.raises(UsageError, match="unknown scheme 'nope'"):
        channel.validate_target("nope://x")
    with pytest.raises(UsageError, match="allow_private_targets"):
        channel.validate_target(f"json://127.0.0.1:{receiver.server_port}/")
    with pytest.raises(DeliveryError):
        AppriseChannel(f"json://127.0.0.1:{receiver.server_port}/").send(make_alert())
    assert receiver.requests == []
    # Token-addressed services have no host of their own to check.
    channel.validate_target("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")


def test_fit_message_limits() -> None:
    lines = [f"line {i} " + "x" * 20 for i in range(10)]
    assert fit_message(lines[:2], 1000, "https://h") == "\n".join(
        [*lines[:2], "Full history: https://h"]
    )
    cut = fit_message(lines, 100, "https://h")
    assert cut.splitlines() == [*lines[:2], "… and 8 more: https://h"]
    assert len(cut) <= 100
    by_count = fit_message(lines, 10_000, "https://h", max_lines=4)
    assert by_count.splitlines() == [*lines[:3], "… and 7 more: https://h"]


# --------------------------------------------------------------------------- registry, secrets


def test_registry_and_help() -> None:
    assert {"email", "webhook", "apprise"} <= set(CHANNELS)
    help_text = channel_help()
    assert help_text["webhook"].startswith("Signed JSON POST")
    assert channel_class("apprise") is AppriseChannel
    with pytest.raises(UsageError, match="unknown channel 'pager'"):
        channel_class("pager")
    with pytest.raises(ValueError, match="registered twice"):
        register("email")(Channel)


def test_adding_a_channel_is_one_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("monitor.channels.CHANNELS", dict(CHANNELS))
    sent: list[Alert] = []

    @register("memory")
    class MemoryChannel(Channel):
        """Keeps alerts in memory."""

        def validate_target(self, target: str) -> None:
            if target != "here":
                raise UsageError("memory target must be 'here'")

        def send(self, alert: Alert) -> None:
            sent.append(alert)

    channel = create_channel("memory", "here")
    channel.send(sample_alert())
    assert sent[0].summary() == "NCT06871644: status RECRUITING → SUSPENDED (+4 more changes)"
    assert channel_help()["memory"] == "Keeps alerts in memory."
    with pytest.raises(UsageError):
        create_channel("memory", "there")


def test_redact_hides_secrets() -> None:
    assert redact(
        "https://bob:hunter2@hooks.example.com/services/T0001/B0002/abcdEF123?token=s3cr3t&x=1"
    ) == ("https://bob:****@hooks.example.com/services/****/****/****?token=****&x=1")
    assert "hunter2" not in redact("json://bob:hunter2@127.0.0.1:8080/in")
    slack = redact("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in slack


def test_logs_carry_no_secrets(receiver: Receiver) -> None:
    url = f"http://hook:pa55word@127.0.0.1:{receiver.server_port}/in/abcdef0123456789"
    with capture_logs() as logs:
        WebhookChannel(url, secret=SECRET, allow_private_targets=True).send(make_alert())
    [event] = logs
    assert event["event"] == "notify.sent"
    assert event["status"] == 200
    text = repr(logs)
    assert SECRET not in text
    assert "pa55word" not in text
    assert "abcdef0123456789" not in text


def test_alert_rejects_bad_ids() -> None:
    with pytest.raises(NotifyError, match=r"not a ClinicalTrials\.gov id"):
        make_alert(nct_id="NCT1\r\n")
