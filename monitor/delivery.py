"""Drain the outbox: everything due is sent once, failures retried with backoff.

:func:`deliver_due` is one pass, called by the daemon every ``[notify] deliver_every`` and
by ``trial-monitor notify deliver``. A pass claims every due message in one commit (state
``sending``), sends them concurrently, each with the ``[notify] timeout``, and records each
outcome in its own commit as soon as it is known: a hanging or failing receiver costs only
its own attempt and never holds back another subscriber's alert.

Retry policy: a transient failure is retried after ``BACKOFF_BASE * 2**(attempts-1)``
seconds (capped at ``BACKOFF_CAP``, plus up to ``JITTER`` of it at random, so receivers
that come back are not hit by every sender at once) until ``[notify] retry_for`` has passed
since the first attempt; the last retry is placed at that deadline. A permanent failure (a
refused recipient, HTTP 4xx, a target that is no longer allowed) is failed at once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
import structlog

from monitor import outbox
from monitor.channels import Alert, AlertChange, DeliveryError, alert_change
from monitor.config import Config
from monitor.errors import MonitorError
from monitor.storage import Store, utcnow
from monitor.subscriptions import Subscription, as_change, channel_for, context_of, get

log = structlog.get_logger(__name__)

BACKOFF_BASE: Final = 30.0
BACKOFF_CAP: Final = 3600.0
JITTER: Final = 0.2
WORKERS: Final = 8
BATCH_LIMIT: Final = 200  # messages per pass; the next pass takes the rest
LEASE_MARGIN: Final = 60.0


@dataclass
class DeliveryReport:
    """What one pass did, counted in messages (a digest is one message)."""

    digests: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    unfinished: int = 0

    def line(self) -> str:
        text = (
            f"Sent {self.sent} alert{'s' if self.sent != 1 else ''}, "
            f"{self.retrying} to retry, {self.failed} failed"
        )
        if self.unfinished:
            text += f", {self.unfinished} still in flight (resent after their lease)"
        return text + "."


def backoff(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds before retry number ``attempts`` (1 = after the first failure)."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(attempts - 1, 0))
    return delay * (1 + JITTER * rand())


def deliver_due(
    store: Store,
    config: Config,
    now: datetime | None = None,
    *,
    rand: Callable[[], float] = random.random,
) -> DeliveryReport:
    """Send every message due at ``now`` (default: the current time) and record outcomes.

    The pass ends within about ``[notify] timeout`` per round of ``WORKERS`` sends; a send
    still running then stays ``sending`` and is retried, with its key, when its lease ends.
    """
    now = now or utcnow()
    report = DeliveryReport(digests=outbox.claim_digests(store, config, now))
    due = outbox.due_batches(store, now, BATCH_LIMIT)
    if not due:
        return report
    budget = config.notify.timeout * (math.ceil(len(due) / WORKERS) + 1)
    lease = now + timedelta(seconds=budget + LEASE_MARGIN)
    jobs: dict[str, tuple[Subscription, Alert, dict[str, Any]]] = {}
    for batch in outbox.mark_sending(store, due, now, lease):
        rows = outbox.batch_rows(store, batch)
        if not rows:  # unsubscribed since it was claimed
            continue
        try:
            sub = get(store, rows[0]["subscription_id"])
            jobs[batch] = (sub, build_alert(store, sub, rows), rows[0])
        except MonitorError as exc:
            _fail(store, batch, rows[0], str(exc), now, report)
    pool = ThreadPoolExecutor(max_workers=min(WORKERS, max(len(jobs), 1)))
    try:
        futures = {
            pool.submit(send_alert, sub, config, alert): batch
            for batch, (sub, alert, _) in jobs.items()
        }
        for future in as_completed(futures, timeout=budget):
            batch = futures.pop(future)
            _record(store, config, batch, jobs[batch][2], future.exception(), now, report, rand)
    except FuturesTimeout:
        report.unfinished = len(futures)
        log.warning("notify.unfinished", messages=len(futures), lease_until=lease.isoformat())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return report


def send_alert(sub: Subscription, config: Config, alert: Alert) -> None:
    """One attempt, in a worker thread: the channel is built (and its target re-checked) here."""
    secret = sub.secret
    if sub.channel == "email":
        secret = config.smtp.password(config.path.parent if config.path else None)
    channel_for(sub.channel, sub.target, config, secret).send(alert)


def _record(
    store: Store,
    config: Config,
    batch: str,
    first: Mapping[str, Any],
    error: BaseException | None,
    now: datetime,
    report: DeliveryReport,
    rand: Callable[[], float],
) -> None:
    """Commit one send's outcome: sent, retry later, or failed for good."""
    if error is None:
        outbox.finish(store, batch, "sent", now)
        report.sent += 1
        return
    message = str(error) if isinstance(error, MonitorError) else type(error).__name__
    deadline = _parse(first["first_try_at"]) + timedelta(seconds=config.notify.retry_for)
    if (isinstance(error, DeliveryError) and error.permanent) or now >= deadline:
        _fail(store, batch, first, message, now, report)
        return
    attempts = int(first["attempts"])
    retry_at = min(now + timedelta(seconds=backoff(attempts, rand)), deadline)
    outbox.finish(store, batch, "pending", now, error=message, retry_at=retry_at)
    report.retrying += 1
    log.warning(
        "notify.retry",
        **_fields(first, batch),
        attempts=attempts,
        retry_at=retry_at.isoformat(),
        error=message,
    )


def _fail(
    store: Store,
    batch: str,
    first: Mapping[str, Any],
    message: str,
    now: datetime,
    report: DeliveryReport,
) -> None:
    outbox.finish(store, batch, "failed", now, error=message)
    report.failed += 1
    log.error("notify.failed", **_fields(first, batch), attempts=first["attempts"], error=message)


def _fields(first: Mapping[str, Any], batch: str) -> dict[str, Any]:
    return {
        "subscription_id": first["subscription_id"],
        "nct_id": first["nct_id"],
        "idempotency_key": batch,
    }


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- alerts


def build_alert(store: Store, sub: Subscription, rows: list[dict[str, Any]]) -> Alert:
    """The alert for one message: a trial's changes, or a digest of several trials.

    A digest travels as one Alert (channels send one per message): it is filed under its
    first trial, and each line names its trial.
    """
    changes: list[AlertChange] = []
    digest = sub.digest != "immediate"
    for row in rows:
        for stored in outbox.load_changes(store, _ids(row)):
            line = alert_change(as_change(stored), stored.detected_at, context_of(store, stored))
            if digest:
                line = line._replace(text=f"{stored.nct_id}: {line.text}")
            changes.append(line)
    trials = list(dict.fromkeys(r["nct_id"] for r in rows))
    if digest:
        title = (
            f"{sub.digest.capitalize()} digest: {len(changes)} "
            f"change{'s' if len(changes) != 1 else ''} in {len(trials)} "
            f"trial{'s' if len(trials) != 1 else ''} ({', '.join(trials)})"
        )
    else:
        trial = store.trial(trials[0])
        title = (trial.title if trial else None) or trials[0]
    return Alert(
        subscription_id=sub.id,
        subscription_name=sub.name,
        nct_id=trials[0],
        title=title,
        changes=changes,
        idempotency_key=rows[0]["batch"],
        unsubscribe=f"trial-monitor unsubscribe {sub.id}",
        digest=digest,
    )


def _ids(row: Mapping[str, Any]) -> list[int]:
    return [int(i) for i in orjson.loads(row["change_ids"])]
