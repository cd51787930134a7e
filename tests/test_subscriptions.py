"""Creating, listing and removing subscriptions: validation before anything is stored."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from monitor.config import Config, NotifyConfig
from monitor.errors import UsageError
from monitor.storage import Store, utcnow
from monitor.subscriptions import check_globs, get, subscribe, subscriptions, unsubscribe
from tests.receivers import alert_config

TRIAL = "NCT05935098"


@pytest.fixture
def acfg(cfg: Config, store: Store) -> Config:
    store.add_trials([TRIAL], utcnow())
    return alert_config(cfg)


def _make(store: Store, cfg: Config, channel: str, target: str, **options: Any) -> Any:
    options.setdefault("trials", [TRIAL])
    return subscribe(store, cfg, channel=channel, target=target, now=utcnow(), **options)


@pytest.mark.parametrize(
    ("channel", "target", "options", "message"),
    [
        ("email", "not-an-address", {}, "not a valid email address"),
        ("email", "a@example.org\r\nBcc: b@example.org", {}, "not a valid email address"),
        ("webhook", "ftp://example.org/in", {}, "must be http:// or https://"),
        ("webhook", "file:///etc/passwd", {}, "must be http:// or https://"),
        ("apprise", "nosuchservice://token", {}, "apprise does not understand"),
        ("email", "a@example.org", {"trials": ["NCT00000001"]}, "not watched: NCT00000001"),
        ("email", "a@example.org", {"fields": ["status.*", "nosuch.*"]}, "'nosuch.\\*' matches"),
        ("email", "a@example.org", {"fields": ["overallStatus"]}, "matches no known field"),
        ("email", "a@example.org", {"min_significance": "huge"}, "must be one of"),
        ("email", "a@example.org", {"digest": "hourly"}, "must be one of"),
        ("email", "a@example.org", {"name": "x\r\nBcc: y"}, "one line"),
        ("sms", "+15550100", {}, "unknown channel"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(
    store: Store, acfg: Config, channel: str, target: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        _make(store, acfg, channel, target, **options)
    assert subscriptions(store) == []


@pytest.mark.parametrize("channel", ["webhook", "apprise"])
def test_internal_targets_need_allow_private_targets(
    store: Store, acfg: Config, channel: str
) -> None:
    strict = replace(acfg, notify=NotifyConfig(allow_private_targets=False))
    target = "http://127.0.0.1:9/in" if channel == "webhook" else "json://10.0.0.1/in"
    with pytest.raises(UsageError, match="allow_private_targets"):
        _make(store, strict, channel, target)
    assert subscriptions(store) == []
    assert _make(store, acfg, channel, target).target == target


def test_field_globs_use_fnmatch_over_the_catalog() -> None:
    globs = ["status.*", "outcomes.primary*", "locations.*", "status.overallStatus", "status.*"]
    assert check_globs(globs) == globs[:4]
    with pytest.raises(UsageError):
        check_globs(["Status.*"])  # field names are case-sensitive


def test_defaults_and_listing_never_show_a_secret(store: Store, acfg: Config) -> None:
    hook = _make(store, acfg, "webhook", "http://127.0.0.1:9/in?token=abc123")
    note = _make(store, acfg, "apprise", "json://bob:hunter2@127.0.0.1:8080/in", trials=None)
    assert hook.secret is not None
    assert hook.secret.startswith("whsec_")
    assert (hook.fields, hook.min_significance, hook.digest) == ([], "minor", "immediate")
    assert hook.name == TRIAL
    assert note.name == "all watched trials"
    listed = repr([s.public() for s in subscriptions(store)])
    for secret in (hook.secret, "abc123", "hunter2"):
        assert secret not in listed
    assert note.public()["trials"] == "all"
    assert get(store, hook.id).secret == hook.secret  # kept for signing, only shown once


def test_coverage_includes_aliases_of_a_renamed_trial(store: Store, acfg: Config) -> None:
    listed = _make(store, acfg, "email", "a@example.org")
    everything = _make(store, acfg, "email", "b@example.org", trials=None)
    assert listed.covers({"NCT99999999", TRIAL})
    assert not listed.covers({"NCT99999999"})
    assert everything.covers({"NCT99999999"})


def test_unsubscribe_drops_undelivered_alerts_and_keeps_the_sent_record(
    store: Store, acfg: Config
) -> None:
    sub = _make(store, acfg, "email", "a@example.org")
    keep = _make(store, acfg, "email", "b@example.org")
    for n, (owner, state) in enumerate([(sub, "pending"), (sub, "sent"), (keep, "pending")]):
        store.db.table("outbox").insert(
            {
                "subscription_id": owner.id,
                "nct_id": TRIAL,
                "change_ids": "[1]",
                "key": f"k{n}",
                "batch": f"k{n}",
                "state": state,
                "created_at": "2026-05-12T00:00:00Z",
            }
        )
    assert unsubscribe(store, sub.id) == 1
    assert [s.id for s in subscriptions(store)] == [keep.id]
    left = [(r["subscription_id"], r["state"]) for r in store.db.query("select * from outbox")]
    assert left == [(sub.id, "sent"), (keep.id, "pending")]
    with pytest.raises(UsageError, match="no subscription"):
        unsubscribe(store, sub.id)
