"""Who wants to hear about what: subscriptions stored in the database, and matching.

A subscription names one target (an email address, a webhook URL or an apprise URL), the
trials it covers (a list, or every watched trial), field globs, a minimum significance and
how often to deliver. Everything is validated before a row is written, with the same channel
construction delivery uses, so a subscription that exists can be delivered to.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from functools import cache
from typing import Any, Final, cast

import orjson

from monitor.channels import CHANNELS, Channel, create_channel, redact
from monitor.config import Config
from monitor.errors import UsageError
from monitor.model import Change, ChangeKind
from monitor.normalize import catalog
from monitor.significance import LEVELS, Significance, at_least, significance
from monitor.storage import Store, StoredChange, iso

DIGESTS: Final = ("immediate", "daily", "weekly")
DEFAULT_LEVEL: Final[Significance] = "minor"


@dataclass(frozen=True)
class Subscription:
    """One stored subscription; ``trials`` None means every watched trial."""

    id: int
    name: str
    channel: str
    target: str
    secret: str | None
    trials: list[str] | None
    fields: list[str]
    min_significance: str
    digest: str
    created_at: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Subscription:
        trials = row["trials"]
        return cls(
            **{
                **row,
                "trials": None if trials is None else orjson.loads(trials),
                "fields": orjson.loads(row["fields"]),
            }
        )

    def shown_target(self) -> str:
        """The target as listings and logs may show it (tokens and passwords masked)."""
        return self.target if self.channel == "email" else redact(self.target)

    def public(self) -> dict[str, Any]:
        """Everything but the secret, for ``subscriptions --format json``."""
        return {
            "id": self.id,
            "name": self.name,
            "channel": self.channel,
            "target": self.shown_target(),
            "trials": self.trials if self.trials is not None else "all",
            "fields": self.fields,
            "min_significance": self.min_significance,
            "digest": self.digest,
            "created_at": self.created_at,
        }

    def wants(self, field: str, level: str, detected_at: str) -> bool:
        """Does one change (already known to be on a covered trial) belong in an alert?"""
        return (
            detected_at >= self.created_at
            and at_least(level, self.min_significance)
            and (not self.fields or any(fnmatchcase(field, g) for g in self.fields))
        )

    def covers(self, ids: Iterable[str]) -> bool:
        """True when any of a trial's ids (canonical and aliases) is subscribed."""
        return self.trials is None or not set(self.trials).isdisjoint(ids)


def as_change(stored: StoredChange) -> Change:
    """A change-log row as the value the significance table and wording take."""
    return Change(stored.field, cast(ChangeKind, stored.change), stored.old, stored.new)


def context_of(store: Store, stored: StoredChange) -> dict[str, Any]:
    """The trial's fields as of the version a change arrived with, for its wording."""
    if stored.version_id is None:
        return {}
    snap = store.snapshot(stored.version_id)
    return {**snap.items, **snap.fields}


def level_of(stored: StoredChange) -> Significance:
    """The significance of a stored change, judged now from the rules table."""
    return significance(as_change(stored))


def channel_for(kind: str, target: str, config: Config, secret: str | None = None) -> Channel:
    """The channel for a target, built the same way for subscribe, test and delivery.

    ``secret`` is the webhook signing secret or, for email, the SMTP password.
    """
    options: dict[str, Any] = {
        "settings": {"timeout": config.notify.timeout},
        "secret": secret,
        "allow_private_targets": config.notify.allow_private_targets,
    }
    if kind == "email":
        smtp = config.smtp
        options["settings"] |= {
            "host": smtp.host,
            "port": smtp.port,
            "security": smtp.security,
            "username": smtp.username,
            "from": smtp.sender,
        }
    return create_channel(kind, target, **options)


@cache
def _catalog() -> tuple[str, ...]:
    return tuple(catalog())


def check_globs(globs: Sequence[str]) -> list[str]:
    """Keep globs that match at least one known field name; refuse the first that does not."""
    known = _catalog()
    for glob in globs:
        if not any(fnmatchcase(name, glob) for name in known):
            raise UsageError(
                f"--field {glob!r} matches no known field (e.g. 'status.*', "
                "'outcomes.primary*', 'locations.*'); nothing was stored"
            )
    return list(dict.fromkeys(globs))


def _check_name(name: str) -> str:
    if "\r" in name or "\n" in name:
        raise UsageError("--name must be one line; nothing was stored")
    return name.strip()


def _watched(store: Store, ids: Sequence[str]) -> list[str]:
    """Canonical ids of the requested trials, refusing any that are not watched."""
    found: dict[str, str] = {}
    for trial in store.trials(ids):
        for known in (trial.nct_id, *trial.aliases):
            found[known] = trial.nct_id
    missing = [i for i in ids if i not in found]
    if missing:
        raise UsageError(
            f"not watched: {', '.join(missing)}. Add with `trial-monitor add` first; "
            "nothing was stored"
        )
    return list(dict.fromkeys(found[i] for i in ids))


def subscribe(
    store: Store,
    config: Config,
    *,
    channel: str,
    target: str,
    trials: Sequence[str] | None,
    fields: Sequence[str] = (),
    min_significance: str = DEFAULT_LEVEL,
    digest: str = "immediate",
    name: str | None = None,
    now: datetime,
) -> Subscription:
    """Validate everything, then store the subscription; a webhook gets a fresh secret.

    ``trials`` None subscribes to every watched trial, including ones added later.
    """
    if channel not in CHANNELS:
        raise UsageError(f"unknown channel {channel!r}: expected one of {', '.join(CHANNELS)}")
    if min_significance not in LEVELS:
        raise UsageError(f"--min-significance must be one of {', '.join(LEVELS)}")
    if digest not in DIGESTS:
        raise UsageError(f"--digest must be one of {', '.join(DIGESTS)}")
    ids = None if trials is None else _watched(store, trials)
    globs = check_globs(fields)
    secret = f"whsec_{secrets.token_urlsafe(32)}" if channel == "webhook" else None
    channel_for(channel, target, config, secret)
    label = _check_name(name or "") or (", ".join(ids) if ids else "all watched trials")
    row = {
        "name": label,
        "channel": channel,
        "target": target,
        "secret": secret,
        "trials": None if ids is None else orjson.dumps(ids).decode(),
        "fields": orjson.dumps(globs).decode(),
        "min_significance": min_significance,
        "digest": digest,
        "created_at": iso(now),
    }
    with store.transaction():
        store.db.table("subscriptions").insert(row)
        new_id = int(store.db.execute("select last_insert_rowid()").fetchone()[0])
    return get(store, new_id)


def subscriptions(store: Store) -> list[Subscription]:
    return [
        Subscription.from_row(r) for r in store.db.query("select * from subscriptions order by id")
    ]


def get(store: Store, subscription_id: int) -> Subscription:
    rows = list(store.db.query("select * from subscriptions where id = ?", [subscription_id]))
    if not rows:
        raise UsageError(f"no subscription {subscription_id}: see `trial-monitor subscriptions`")
    return Subscription.from_row(rows[0])


def unsubscribe(store: Store, subscription_id: int) -> int:
    """Delete a subscription and its undelivered alerts; returns how many were dropped.

    Sent rows stay as the record of what went out.
    """
    get(store, subscription_id)
    with store.transaction():
        dropped = store.db.execute(
            "delete from outbox where subscription_id = ? and state != 'sent'", [subscription_id]
        ).rowcount
        store.db.execute("delete from subscriptions where id = ?", [subscription_id])
    return int(dropped)
