"""The outbox written by the real poll cycle: matching, one row per trial, atomicity, upgrade."""

from __future__ import annotations

import copy
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations
from structlog.testing import capture_logs

from monitor import outbox, storage
from monitor.config import Config
from monitor.cycle import run_cycle
from monitor.fetch import Fetcher
from monitor.model import Change
from monitor.standin import StandIn
from monitor.storage import NewVersion, Store, migrations, utcnow
from monitor.subscriptions import Subscription, subscribe
from tests.receivers import alert_config

TRIAL = "NCT05935098"  # next recorded version: RECRUITING → TERMINATED, and more
QUIET = "NCT05289492"  # next recorded version differs only in the daily versionHolder


@pytest.fixture
def acfg(cfg: Config) -> Config:
    return alert_config(cfg)


def _sub(store: Store, cfg: Config, address: str, **options: Any) -> Subscription:
    options.setdefault("trials", [TRIAL])
    options.setdefault("now", utcnow() - timedelta(minutes=1))
    return subscribe(store, cfg, channel="email", target=address, **options)


def _watch(store: Store, *ids: str) -> None:
    store.add_trials(list(ids), utcnow())


def _outbox(store: Store) -> list[dict[str, Any]]:
    return list(store.db.query("select * from outbox order by id"))


def _fields(store: Store, row: dict[str, Any]) -> list[str]:
    return [c.field for c in outbox.load_changes(store, orjson.loads(row["change_ids"]))]


def _touch_last_update(api: StandIn, nct_id: str) -> None:
    """Serve a copy whose only real change is the lastUpdatePostDate (an admin change)."""
    study = copy.deepcopy(api.current(nct_id))
    assert study is not None
    study["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "2099-01-01"
    api.put(study)


def test_baseline_never_enqueues(store: Store, fetcher: Fetcher, acfg: Config) -> None:
    _watch(store, TRIAL, QUIET)
    _sub(store, acfg, "all@example.org", trials=None)
    run_cycle(store, fetcher)
    assert store.changes([TRIAL])
    assert _outbox(store) == []


def test_one_row_per_subscription_with_every_matching_change(
    store: Store, fetcher: Fetcher, api: StandIn, acfg: Config
) -> None:
    _watch(store, TRIAL, QUIET)
    everything = _sub(store, acfg, "all@example.org", trials=None, min_significance="admin")
    default = _sub(store, acfg, "minor@example.org")
    status_major = _sub(
        store, acfg, "status@example.org", fields=["status.*"], min_significance="major"
    )
    sites = _sub(store, acfg, "sites@example.org", fields=["locations.*"])
    run_cycle(store, fetcher)
    api.advance(TRIAL)
    with capture_logs() as logs:
        run_cycle(store, fetcher)
    detected = [c for c in store.changes([TRIAL]) if not c.baseline]
    rows = {r["subscription_id"]: r for r in _outbox(store)}
    assert set(rows) == {everything.id, default.id, status_major.id}  # no site changed
    assert sorted(_fields(store, rows[everything.id])) == sorted(c.field for c in detected)
    assert "status.lastUpdatePostDate" not in _fields(store, rows[default.id])
    assert "identification.organization" in _fields(store, rows[default.id])
    assert _fields(store, rows[status_major.id]) == [
        c.field
        for c in detected
        if c.field.startswith("status.") and c.field not in _ADMIN_STATUS_FIELDS
    ]
    assert "status.overallStatus" in _fields(store, rows[status_major.id])
    assert all(r["state"] == "pending" and r["batch"] == r["key"] for r in rows.values())
    assert sites.id not in rows
    enqueued = [e for e in logs if e["event"] == "outbox.enqueued"]
    assert {e["subscription_id"] for e in enqueued} == set(rows)
    assert all(e["nct_id"] == TRIAL for e in enqueued)


_ADMIN_STATUS_FIELDS = {
    "status.lastUpdatePostDate",
    "status.lastUpdateSubmitDate",
    "status.statusVerifiedDate",
}


def test_an_admin_only_change_reaches_only_those_who_asked_for_admin(
    store: Store, fetcher: Fetcher, api: StandIn, acfg: Config
) -> None:
    _watch(store, QUIET)
    status_major = _sub(
        store, acfg, "s@example.org", trials=[QUIET], fields=["status.*"], min_significance="major"
    )
    admin = _sub(store, acfg, "a@example.org", trials=[QUIET], min_significance="admin")
    run_cycle(store, fetcher)
    _touch_last_update(api, QUIET)
    run_cycle(store, fetcher)
    [row] = _outbox(store)
    assert row["subscription_id"] == admin.id != status_major.id
    assert _fields(store, row) == ["status.lastUpdatePostDate"]


def test_other_trials_and_later_subscriptions_get_nothing(
    store: Store, fetcher: Fetcher, api: StandIn, acfg: Config
) -> None:
    _watch(store, TRIAL, QUIET)
    _sub(store, acfg, "other@example.org", trials=[QUIET])
    run_cycle(store, fetcher)
    # Detected at 10:00, recorded by a cycle whose clock lags a subscription made at 10:05.
    _sub(store, acfg, "late@example.org", now=datetime(2026, 5, 12, 10, 5, tzinfo=UTC))
    api.advance(TRIAL)
    run_cycle(store, fetcher, clock=lambda: datetime(2026, 5, 12, 10, 0, tzinfo=UTC))
    assert [c for c in store.changes([TRIAL]) if not c.baseline]
    assert _outbox(store) == []


def _status_change() -> Change:
    return Change("status.overallStatus", "changed", "RECRUITING", "TERMINATED")


def test_a_crash_before_the_commit_leaves_no_alert_and_the_next_cycle_redoes_it(
    store: Store, fetcher: Fetcher, api: StandIn, acfg: Config
) -> None:
    _watch(store, TRIAL)
    sub = _sub(store, acfg, "crash@example.org")
    run_cycle(store, fetcher)
    api.advance(TRIAL)

    def crash(*args: Any) -> None:
        raise RuntimeError("power cut after the outbox insert")

    store.on_record.append(crash)
    with pytest.raises(RuntimeError, match="power cut"):
        run_cycle(store, fetcher)
    store.on_record.remove(crash)
    assert [c for c in store.changes([TRIAL]) if not c.baseline] == []
    assert _outbox(store) == []
    assert run_cycle(store, fetcher).changed == 1
    [row] = _outbox(store)
    assert row["subscription_id"] == sub.id
    assert run_cycle(store, fetcher).changed == 0
    assert len(_outbox(store)) == 1


def test_install_is_idempotent(store: Store) -> None:
    outbox.install(store)
    outbox.install(store)
    assert store.on_record.count(outbox.enqueue) == 1


def test_alert_key_is_stable_and_order_free() -> None:
    key = outbox.alert_key(3, TRIAL, [5, 4, 6])
    assert key == outbox.alert_key(3, TRIAL, [4, 5, 6])
    assert key != outbox.alert_key(4, TRIAL, [4, 5, 6])
    assert key != outbox.alert_key(3, TRIAL, [4, 5])
    assert key.startswith(f"tm-s3-{TRIAL}-")


@pytest.mark.parametrize(
    ("digest", "now", "slot"),
    [
        ("daily", datetime(2026, 5, 12, 7, 59), datetime(2026, 5, 11, 8, 0)),
        ("daily", datetime(2026, 5, 12, 8, 0), datetime(2026, 5, 12, 8, 0)),
        ("daily", datetime(2026, 5, 12, 23, 0), datetime(2026, 5, 12, 8, 0)),
        # 2026-05-12 is a Tuesday; weekly digests go out on Mondays.
        ("weekly", datetime(2026, 5, 12, 9, 0), datetime(2026, 5, 11, 8, 0)),
        ("weekly", datetime(2026, 5, 11, 7, 0), datetime(2026, 5, 4, 8, 0)),
        ("weekly", datetime(2026, 5, 18, 8, 30), datetime(2026, 5, 18, 8, 0)),
    ],
)
def test_digest_slot(acfg: Config, digest: str, now: datetime, slot: datetime) -> None:
    utc = {"tzinfo": UTC}
    assert outbox.digest_slot(digest, acfg, now.replace(**utc)) == slot.replace(**utc)


def test_counts_cover_every_state(store: Store) -> None:
    assert outbox.counts(store) == dict.fromkeys(outbox.STATES, 0)
    assert outbox.counts(store)["failed"] == 0


def test_a_database_from_before_alerts_upgrades_with_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    fresh = Database(sqlite3.connect(str(path)))
    migrations.apply(fresh, stop_before="m002_alerts")
    fresh.close()
    before = Migrations(migrations.name)
    before()(storage.m001_initial)
    monkeypatch.setattr(storage, "migrations", before)  # the code as it was before m002
    with Store(path) as old:
        old.add_trials([TRIAL], utcnow())
        study = {"protocolSection": {"identificationModule": {"nctId": TRIAL}}}
        old.record(
            NewVersion(TRIAL, orjson.dumps(study), "h1", "Old title", [], None),
            expected_version=None,
            changes=[_status_change()],
            baseline=False,
            cycle_id=None,
            now=utcnow(),
        )
        assert "outbox" not in old.db.table_names()
    monkeypatch.undo()
    with Store(path) as store:
        assert {"subscriptions", "outbox"} <= set(store.db.table_names())
        [change] = store.changes([TRIAL])
        assert (change.field, change.new) == ("status.overallStatus", "TERMINATED")
        trial = store.trial(TRIAL)
        assert trial is not None
        assert trial.title == "Old title"
        assert trial.version_id is not None
        assert store.version_study(trial.version_id) == study
        assert outbox.counts(store) == dict.fromkeys(outbox.STATES, 0)
