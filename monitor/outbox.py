"""The alert outbox: written with the changes, drained by monitor/delivery.py.

One row is one trial's changes from one record (one cycle) for one subscription. It is
inserted by :func:`enqueue`, a ``Store.on_record`` hook, inside the transaction that stores
the changes: either both exist or neither does, so a crash never loses or invents an alert.

States::

    waiting ──(digest time passes)──▶ pending ──▶ sending ──▶ sent
                                        ▲           │
                                        └─ retry ───┤
                                                    └──▶ failed

``waiting`` rows belong to a daily or weekly subscription and have no message yet;
:func:`claim_digests` puts all of a subscription's waiting rows into one message at the
digest time. ``batch`` is the message a row travels in and its idempotency key: the row's own
key for an immediate alert, a digest key otherwise. A row is ``sending`` between two commits
(before and after the send); ``due_at`` is then a lease, and a row whose lease ran out (its
sender died) is sent again with the same key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import orjson
import structlog

from monitor.config import Config
from monitor.storage import Store, StoredChange, iso
from monitor.subscriptions import Subscription, level_of, subscriptions

log = structlog.get_logger(__name__)

STATES: Final = ("waiting", "pending", "sending", "sent", "failed")
UNDELIVERED: Final = ("waiting", "pending", "sending", "failed")
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def install(store: Store) -> None:
    """Make every cycle on ``store`` write alerts with its changes (idempotent)."""
    if enqueue not in store.on_record:
        store.on_record.append(enqueue)


def alert_key(subscription_id: int, nct_id: str, change_ids: Sequence[int]) -> str:
    """Stable across retries and restarts: the same alert always has the same key."""
    digest = hashlib.sha256(",".join(map(str, sorted(change_ids))).encode()).hexdigest()
    return f"tm-s{subscription_id}-{nct_id}-{digest[:20]}"


def enqueue(store: Store, nct_id: str, change_ids: list[int], baseline: bool) -> None:
    """The ``on_record`` hook: one outbox row per subscription that wants these changes.

    Runs inside the record transaction. The baseline (first snapshot) never alerts.
    """
    if baseline or not change_ids:
        return
    subs = subscriptions(store)
    if not subs:
        return
    trial = store.db.execute("select aliases from trials where nct_id = ?", [nct_id]).fetchone()
    ids = {nct_id, *orjson.loads(trial[0] if trial and trial[0] else "[]")}
    found = load_changes(store, change_ids)
    levels = {c.id: level_of(c) for c in found}
    for sub in subs:
        if not sub.covers(ids):
            continue
        wanted = [c.id for c in found if sub.wants(c.field, levels[c.id], c.detected_at)]
        if wanted:
            _insert(store, sub, nct_id, wanted, found[0].detected_at)


def load_changes(store: Store, change_ids: Sequence[int]) -> list[StoredChange]:
    """Change-log rows by id, oldest first (alerts never carry baseline rows)."""
    return [
        StoredChange(
            **{
                **r,
                "old": _json(r["old"]),
                "new": _json(r["new"]),
                "baseline": bool(r["baseline"]),
            }
        )
        for r in store.db.query(
            "select id, nct_id, version_id, field, change, old, new, detected_at, baseline "
            "from changes where id in (select value from json_each(?)) order by id",
            [orjson.dumps(list(change_ids)).decode()],
        )
    ]


def _json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _insert(
    store: Store, sub: Subscription, nct_id: str, change_ids: list[int], stamp: str
) -> None:
    key = alert_key(sub.id, nct_id, change_ids)
    immediate = sub.digest == "immediate"
    store.db.table("outbox").insert(
        {
            "subscription_id": sub.id,
            "nct_id": nct_id,
            "change_ids": orjson.dumps(change_ids).decode(),
            "key": key,
            "batch": key if immediate else None,
            "state": "pending" if immediate else "waiting",
            "created_at": stamp,
            "due_at": stamp if immediate else None,
        }
    )
    log.info(
        "outbox.enqueued",
        subscription_id=sub.id,
        nct_id=nct_id,
        changes=len(change_ids),
        digest=sub.digest,
        idempotency_key=key,
    )


# --------------------------------------------------------------------------- digests


def digest_slot(digest: str, config: Config, now: datetime) -> datetime:
    """The latest digest time at or before ``now`` (UTC) for a daily or weekly digest."""
    hour, minute = (int(p) for p in config.notify.digest_time.split(":"))
    slot = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if digest == "weekly":
        slot -= timedelta(days=(now.weekday() - WEEKDAYS.index(config.notify.digest_weekday)) % 7)
    if slot > now:
        slot -= timedelta(days=7 if digest == "weekly" else 1)
    return slot


def claim_digests(store: Store, config: Config, now: datetime) -> int:
    """Put each digest subscription's rows detected before its last digest time into one
    pending message; returns how many messages were made."""
    made = 0
    with store.transaction():
        for sub in subscriptions(store):
            if sub.digest == "immediate":
                continue
            slot = digest_slot(sub.digest, config, now)
            keys = [
                r["key"]
                for r in store.db.query(
                    "select key from outbox where subscription_id = ? and state = 'waiting' "
                    "and created_at < ? order by id",
                    [sub.id, iso(slot)],
                )
            ]
            if not keys:
                continue
            members = hashlib.sha256(",".join(keys).encode()).hexdigest()[:12]
            batch = f"tm-s{sub.id}-{sub.digest}-{slot:%Y%m%dT%H%M}-{members}"
            store.db.execute(
                "update outbox set batch = ?, state = 'pending', due_at = ? "
                "where key in (select value from json_each(?))",
                [batch, iso(now), orjson.dumps(keys).decode()],
            )
            made += 1
    return made


# --------------------------------------------------------------------------- the queue


def due_batches(store: Store, now: datetime, limit: int) -> list[str]:
    """Messages whose time has come (and ``sending`` ones whose lease ran out), oldest first."""
    return [
        r["batch"]
        for r in store.db.query(
            "select batch from outbox where state in ('pending', 'sending') and due_at <= ? "
            "group by batch order by min(due_at), min(id) limit ?",
            [iso(now), limit],
        )
    ]


def mark_sending(
    store: Store, batches: Sequence[str], now: datetime, lease_until: datetime
) -> list[str]:
    """Claim messages in one commit before any is sent; returns those this caller won."""
    won: list[str] = []
    with store.transaction():
        for batch in batches:
            claimed = store.db.execute(
                "update outbox set state = 'sending', attempts = attempts + 1, "
                "first_try_at = coalesce(first_try_at, ?), due_at = ? "
                "where batch = ? and state in ('pending', 'sending') and due_at <= ?",
                [iso(now), iso(lease_until), batch, iso(now)],
            ).rowcount
            if claimed:
                won.append(batch)
    return won


def batch_rows(store: Store, batch: str) -> list[dict[str, Any]]:
    return list(store.db.query("select * from outbox where batch = ? order by id", [batch]))


def finish(
    store: Store,
    batch: str,
    state: Literal["sent", "pending", "failed"],
    now: datetime,
    *,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> None:
    """Record the outcome of one send in its own commit (``pending`` means retry later)."""
    with store.transaction():
        store.db.execute(
            "update outbox set state = ?, last_error = ?, due_at = ?, "
            "sent_at = case when ? = 'sent' then ? else sent_at end "
            "where batch = ? and state = 'sending'",
            [state, error, iso(retry_at) if retry_at else None, state, iso(now), batch],
        )


def listing(store: Store, states: Sequence[str] = UNDELIVERED) -> list[dict[str, Any]]:
    """Outbox rows in ``states`` with their subscription's name, oldest first."""
    marks = ", ".join("?" for _ in states)
    return list(
        store.db.query(
            "select o.id, o.subscription_id, s.name as subscription, o.nct_id, "
            "json_array_length(o.change_ids) as changes, o.state, o.attempts, o.created_at, "
            "o.due_at, o.sent_at, o.last_error, o.batch as idempotency_key "
            f"from outbox o left join subscriptions s on s.id = o.subscription_id "
            f"where o.state in ({marks}) order by o.id",
            list(states),
        )
    )


def counts(store: Store) -> dict[str, int]:
    """Rows per state (every state present, zero when empty), for ``status``."""
    found = {
        r["state"]: int(r["n"])
        for r in store.db.query("select state, count(*) as n from outbox group by state")
    }
    return {state: found.get(state, 0) for state in STATES}
