"""deliver_due against real receivers on loopback: aiosmtpd, an HTTP endpoint, apprise json://.

Changes come from the real poll cycle over recorded versions; time is passed in explicitly,
so backoff and digest times are crossed without sleeping.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from monitor import app, delivery, outbox
from monitor.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from monitor.config import Config
from monitor.cycle import run_cycle
from monitor.fetch import Fetcher
from monitor.standin import StandIn
from monitor.storage import Store, utcnow
from monitor.subscriptions import Subscription, subscribe
from tests.receivers import Receiver, SmtpServer, alert_config, receiver, smtp_server

TRIAL = "NCT05935098"  # next recorded version: ACTIVE_NOT_RECRUITING → TERMINATED, and more
OTHER = "NCT05414032"  # next recorded version: new arm, enrollment, dates


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as server:
        yield server


@pytest.fixture
def acfg(cfg: Config, smtp: SmtpServer) -> Config:
    return alert_config(cfg, smtp.port, timeout=0.5)


def _sub(store: Store, cfg: Config, channel: str, target: str, **options: Any) -> Subscription:
    options.setdefault("trials", [TRIAL])
    options.setdefault("now", utcnow() - timedelta(minutes=1))
    return subscribe(store, cfg, channel=channel, target=target, **options)


def _baseline(store: Store, fetcher: Fetcher, *ids: str) -> None:
    store.add_trials(list(ids or [TRIAL]), utcnow())
    run_cycle(store, fetcher)


def _change(store: Store, fetcher: Fetcher, api: StandIn, *ids: str, **cycle: Any) -> None:
    for nct_id in ids or [TRIAL]:
        assert api.advance(nct_id)
    run_cycle(store, fetcher, **cycle)


def _rows(store: Store) -> list[dict[str, Any]]:
    return list(store.db.query("select * from outbox order by id"))


def _texts(store: Store, row: dict[str, Any]) -> list[str]:
    from monitor.subscriptions import get

    alert = delivery.build_alert(store, get(store, row["subscription_id"]), [row])
    return [c.text for c in alert.changes]


def test_each_channel_gets_one_alert_per_trial_with_all_its_changes(
    store: Store, fetcher: Fetcher, api: StandIn, acfg: Config, smtp: SmtpServer, hook: Receiver
) -> None:
    store.add_trials([TRIAL], utcnow())
    mail = _sub(store, acfg, "email", "researcher@example.org", name="CAR-T watch")
    web = _sub(store, acfg, "webhook", f"{hook.url}/hook", fields=["status.*"])
    _sub(store, acfg, "apprise", f"json://127.0.0.1:{hook.server_port}/apprise")
    run_cycle(store, fetcher)
    assert delivery.deliver_due(store, acfg).sent == 0
    _change(store, fetcher, api)
    with capture_logs() as logs:
        report = delivery.deliver_due(store, acfg)
    assert (report.sent, report.retrying, report.failed) == (3, 0, 0)
    rows = {r["subscription_id"]: r for r in _rows(store)}
    assert all(r["state"] == "sent" and r["attempts"] == 1 for r in rows.values())

    [msg] = smtp.messages
    assert msg["Subject"].startswith(f"{TRIAL}: status ACTIVE_NOT_RECRUITING → TERMINATED (+")
    assert msg["Message-ID"] == f"<{rows[mail.id]['key']}@trial-monitor>"
    assert msg["To"] == "researcher@example.org"
    assert msg["X-Trial-Monitor-Subscription"] == "CAR-T watch"
    plain, html = (msg.get_body((kind,)) for kind in ("plain", "html"))
    assert plain is not None
    assert html is not None
    texts = _texts(store, rows[mail.id])
    assert len(texts) == len(orjson.loads(rows[mail.id]["change_ids"])) > 5
    for text in texts:
        assert text in plain.get_content()
    assert "Overall status: ACTIVE_NOT_RECRUITING → TERMINATED" in html.get_content()
    assert f"trial-monitor unsubscribe {mail.id}" in plain.get_content()

    hooks = [r for r in hook.requests if r.path == "/hook"]
    [sent] = hooks
    assert sent.headers["Idempotency-Key"] == rows[web.id]["key"]
    assert web.secret is not None
    assert verify(
        web.secret, sent.headers[TIMESTAMP_HEADER], sent.body, sent.headers[SIGNATURE_HEADER]
    )
    payload = json.loads(sent.body)
    assert all(c["field"].startswith("status.") for c in payload["changes"])
    assert payload["changes"][0]["field"] == "status.overallStatus"
    assert all(c["significance"] in ("major", "minor") for c in payload["changes"])

    [note] = [r for r in hook.requests if r.path == "/apprise"]
    assert json.loads(note.body)["title"] == msg["Subject"]

    assert [e["event"] for e in logs].count("notify.sent") == 3
    assert web.secret not in repr(logs)
    assert delivery.deliver_due(store, acfg, utcnow() + timedelta(days=2)).sent == 0
    assert len(smtp.messages) == 1
    assert len(hook.requests) == 2


def test_faults_clear_and_every_alert_arrives_exactly_once(
    store: Store, fetcher: Fetcher, api: StandIn, acfg: Config, smtp: SmtpServer, hook: Receiver
) -> None:
    store.add_trials([TRIAL], utcnow())
    with receiver() as hanging, receiver() as healthy:
        _sub(store, acfg, "email", "researcher@example.org")
        _sub(store, acfg, "webhook", f"{hook.url}/flaky")
        _sub(store, acfg, "webhook", f"{hanging.url}/slow")
        _sub(store, acfg, "webhook", f"{healthy.url}/ok")
        run_cycle(store, fetcher)
        _change(store, fetcher, api)
        smtp.stop()
        hook.statuses = [500]
        hanging.hang = 1.0
        start = utcnow()
        began = time.monotonic()
        with capture_logs() as logs:
            first = delivery.deliver_due(store, acfg, start)
        assert time.monotonic() - began < 1.0  # the hanging receiver cost one 0.5 s timeout
        assert (first.sent, first.retrying) == (1, 3)
        assert len(healthy.requests) == 1
        retries = [e for e in logs if e["event"] == "notify.retry"]
        assert len(retries) == 3
        assert all(e["attempts"] == 1 for e in retries)
        assert "password" not in repr(logs)
        assert delivery.deliver_due(store, acfg, start + timedelta(seconds=5)).sent == 0

        smtp.start()
        hanging.hang = 0.0
        second = delivery.deliver_due(store, acfg, start + timedelta(minutes=1))
        assert (second.sent, second.retrying, second.failed) == (3, 0, 0)
        assert delivery.deliver_due(store, acfg, start + timedelta(hours=3)).sent == 0
        assert len(smtp.messages) == 1
        assert len(hanging.requests) == 1
        assert len(healthy.requests) == 1
        assert len(hook.requests) == 2  # the 500 and the 200, under one key
        assert len(set(hook.keys())) == 1
    assert {r["state"] for r in _rows(store)} == {"sent"}
    assert sorted(r["attempts"] for r in _rows(store)) == [1, 2, 2, 2]


def test_retries_end_in_failed_after_retry_for(
    store: Store, fetcher: Fetcher, api: StandIn, cfg: Config, hook: Receiver
) -> None:
    acfg = alert_config(cfg, timeout=0.5, retry_for=3600.0)
    store.add_trials([TRIAL], utcnow())
    _sub(store, acfg, "webhook", f"{hook.url}/down")
    _sub(store, acfg, "webhook", f"{hook.url}/gone")
    run_cycle(store, fetcher)
    _change(store, fetcher, api)
    hook.status = 500
    now = utcnow()
    with capture_logs() as logs:
        report = delivery.deliver_due(store, acfg, now)
        hook.status = 404
        assert report.retrying == 2
        passes = 0
        while outbox.counts(store)["pending"]:
            due = min(r["due_at"] for r in _rows(store) if r["state"] == "pending")
            now = datetime.fromisoformat(due.replace("Z", "+00:00"))
            hook.status = 500
            delivery.deliver_due(store, acfg, now)
            passes += 1
            assert passes < 20
    rows = _rows(store)
    assert {r["state"] for r in rows} == {"failed"}
    assert outbox.counts(store)["failed"] == 2
    attempts = sorted(r["attempts"] for r in rows)
    assert attempts[-1] >= 6  # 30 s, 1 min, 2 min, … up to the one-hour deadline
    assert all(r["last_error"].endswith("HTTP 500") for r in rows)
    assert [e for e in logs if e["event"] == "notify.failed" and "attempts" in e]
    [first, *_] = outbox.listing(store, ("failed",))
    assert first["state"] == "failed"


def test_a_permanent_refusal_fails_at_once(
    store: Store, fetcher: Fetcher, api: StandIn, acfg: Config, hook: Receiver
) -> None:
    store.add_trials([TRIAL], utcnow())
    _sub(store, acfg, "webhook", f"{hook.url}/gone")
    run_cycle(store, fetcher)
    _change(store, fetcher, api)
    hook.status = 410
    assert delivery.deliver_due(store, acfg).failed == 1
    [row] = outbox.listing(store, ("failed",))
    assert row["attempts"] == 1
    assert "HTTP 410" in row["last_error"]


def test_a_crash_after_the_cycle_commit_still_delivers(
    store: Store, fetcher: Fetcher, api: StandIn, acfg: Config, hook: Receiver
) -> None:
    store.add_trials([TRIAL], utcnow())
    _sub(store, acfg, "webhook", f"{hook.url}/in")
    run_cycle(store, fetcher)
    _change(store, fetcher, api)
    store.close()  # the process dies before any delivery
    with app.open_store(acfg) as reopened:
        assert delivery.deliver_due(reopened, acfg).sent == 1
    assert len(hook.requests) == 1


def test_a_crash_after_marking_sending_resends_with_the_same_key(
    store: Store,
    fetcher: Fetcher,
    api: StandIn,
    acfg: Config,
    hook: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store.add_trials([TRIAL], utcnow())
    _sub(store, acfg, "webhook", f"{hook.url}/in")
    run_cycle(store, fetcher)
    _change(store, fetcher, api)

    def die(*args: Any) -> None:
        raise SystemExit("killed between the 'sending' commit and the send")

    monkeypatch.setattr(delivery, "build_alert", die)
    now = utcnow()
    with pytest.raises(SystemExit):
        delivery.deliver_due(store, acfg, now)
    monkeypatch.undo()
    [row] = _rows(store)
    assert row["state"] == "sending"
    assert hook.requests == []
    assert delivery.deliver_due(store, acfg, now + timedelta(seconds=1)).sent == 0  # leased
    assert delivery.deliver_due(store, acfg, now + timedelta(minutes=10)).sent == 1
    assert hook.keys() == [row["key"]]


def test_a_crash_between_send_and_commit_repeats_the_key_once(
    store: Store,
    fetcher: Fetcher,
    api: StandIn,
    acfg: Config,
    smtp: SmtpServer,
    hook: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store.add_trials([TRIAL], utcnow())
    _sub(store, acfg, "webhook", f"{hook.url}/in")
    _sub(store, acfg, "email", "researcher@example.org")
    run_cycle(store, fetcher)
    _change(store, fetcher, api)

    def die(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("killed after the send, before recording it")

    monkeypatch.setattr(outbox, "finish", die)
    now = utcnow()
    with pytest.raises(SystemExit):
        delivery.deliver_due(store, acfg, now)
    monkeypatch.undo()
    assert {r["state"] for r in _rows(store)} == {"sending"}
    later = delivery.deliver_due(store, acfg, now + timedelta(minutes=10))
    assert later.sent == 2
    [key] = set(hook.keys())
    assert hook.keys().count(key) <= 2
    ids = {m["Message-ID"] for m in smtp.messages}
    assert len(ids) == 1
    assert 1 <= len(smtp.messages) <= 2
    assert [r["state"] for r in _rows(store)] == ["sent", "sent"]
    assert delivery.deliver_due(store, acfg, now + timedelta(hours=5)).sent == 0


def test_a_send_outlasting_the_pass_stays_leased_and_is_resent_later(
    store: Store,
    fetcher: Fetcher,
    api: StandIn,
    cfg: Config,
    hook: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acfg = alert_config(cfg, timeout=0.2)  # a pass of one message lasts at most 0.4 s
    store.add_trials([TRIAL], utcnow())
    _sub(store, acfg, "webhook", f"{hook.url}/in")
    run_cycle(store, fetcher)
    _change(store, fetcher, api)
    monkeypatch.setattr(delivery, "send_alert", lambda *args: time.sleep(0.6))
    now = utcnow()
    began = time.monotonic()
    report = delivery.deliver_due(store, acfg, now)
    assert time.monotonic() - began < 0.6
    assert (report.sent, report.unfinished) == (0, 1)
    assert "in flight" in report.line()
    monkeypatch.undo()
    assert [r["state"] for r in _rows(store)] == ["sending"]
    assert delivery.deliver_due(store, acfg, now + timedelta(minutes=5)).sent == 1


def test_daily_digest_combines_two_trials_at_digest_time(
    store: Store, fetcher: Fetcher, api: StandIn, acfg: Config, smtp: SmtpServer
) -> None:
    day = datetime(2026, 5, 12, tzinfo=UTC)
    store.add_trials([TRIAL, OTHER], day)
    _sub(store, acfg, "email", "lab@example.org", trials=None, digest="daily", now=day)
    run_cycle(store, fetcher, clock=lambda: day + timedelta(hours=1))
    _change(store, fetcher, api, TRIAL, OTHER, clock=lambda: day + timedelta(hours=9))
    assert [r["state"] for r in _rows(store)] == ["waiting", "waiting"]
    for early in (day + timedelta(hours=9, minutes=30), day + timedelta(hours=31, minutes=59)):
        report = delivery.deliver_due(store, acfg, early)
        assert (report.digests, report.sent) == (0, 0)
    assert smtp.messages == []
    at_time = day + timedelta(days=1, hours=8)
    report = delivery.deliver_due(store, acfg, at_time)
    assert (report.digests, report.sent) == (1, 1)
    [msg] = smtp.messages
    assert msg["Subject"] == f"Daily digest: 19 changes in 2 trials ({OTHER}, {TRIAL})"
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert f"{TRIAL}: Overall status: ACTIVE_NOT_RECRUITING → TERMINATED" in text
    assert f"{OTHER}: " in text
    assert "Daily digest" in text
    rows = _rows(store)
    assert {r["state"] for r in rows} == {"sent"}
    [batch] = {r["batch"] for r in rows}
    assert msg["Message-ID"] == f"<{batch}@trial-monitor>"
    assert delivery.deliver_due(store, acfg, at_time + timedelta(days=1)).sent == 0


def test_backoff_doubles_to_a_cap_with_bounded_jitter() -> None:
    low, high = (lambda: 0.0), (lambda: 1.0)
    assert [delivery.backoff(n, low) for n in (1, 2, 3)] == [30.0, 60.0, 120.0]
    assert delivery.backoff(30, low) == delivery.BACKOFF_CAP
    assert delivery.backoff(1, high) == pytest.approx(30.0 * (1 + delivery.JITTER))
