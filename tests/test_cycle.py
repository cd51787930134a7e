"""The poll cycle end to end against the stand-in API serving real recorded versions."""

from __future__ import annotations

import copy
import sqlite3
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.config import Config
from monitor.cycle import cycle_lock, run_cycle
from monitor.errors import LockedError
from monitor.fetch import Fetcher
from monitor.standin import StandIn
from monitor.storage import Store, utcnow
from monitor.subscriptions import as_change, level_of
from monitor.wording import describe
from tests.conftest import history_versions, study


def _watch(store: Store, api: StandIn) -> list[str]:
    ids = api.ids()
    store.add_trials(ids, utcnow())
    return ids


def _fields(store: Store, nct_id: str, baseline: bool = False) -> list[tuple[str, str]]:
    return [(c.field, c.change) for c in store.changes([nct_id]) if c.baseline == baseline]


def test_first_cycle_records_every_trial_as_a_baseline(
    store: Store, fetcher: Fetcher, api: StandIn
) -> None:
    ids = _watch(store, api)
    summary = run_cycle(store, fetcher)
    assert (summary.new, summary.changed, summary.failed) == (len(ids), 0, 0)
    rows = store.changes(["NCT05935098"])
    assert rows
    assert all(c.baseline and c.change == "added" for c in rows)
    status = next(c for c in rows if c.field == "status.overallStatus")
    first = history_versions("NCT05935098")[0]
    assert status.new == first["protocolSection"]["statusModule"]["overallStatus"]


def test_second_cycle_with_nothing_changed_upstream_records_nothing(
    store: Store, fetcher: Fetcher, api: StandIn
) -> None:
    _watch(store, api)
    run_cycle(store, fetcher)
    before = len(store.changes())
    versions = sum(len(store.versions(i)) for i in api.ids())
    summary = run_cycle(store, fetcher)
    assert summary.changed == 0
    assert summary.new == 0
    assert len(store.changes()) == before
    assert sum(len(store.versions(i)) for i in api.ids()) == versions


def test_versionholder_only_refetch_is_no_change_and_no_new_version(
    store: Store, fetcher: Fetcher, api: StandIn
) -> None:
    store.add_trials(["NCT05289492"], utcnow())
    run_cycle(store, fetcher)
    assert api.advance("NCT05289492")
    summary = run_cycle(store, fetcher)
    assert summary.changed == 0
    assert _fields(store, "NCT05289492") == []
    assert len(store.versions("NCT05289492")) == 1


def test_real_next_version_is_recorded_once_with_its_values(
    store: Store, fetcher: Fetcher, api: StandIn
) -> None:
    store.add_trials(["NCT05935098"], utcnow())
    run_cycle(store, fetcher)
    api.advance("NCT05935098")
    assert run_cycle(store, fetcher).changed == 1
    run_cycle(store, fetcher)
    changes = [c for c in store.changes(["NCT05935098"]) if not c.baseline]
    status = [c for c in changes if c.field == "status.overallStatus"]
    assert [(c.old, c.new) for c in status] == [("ACTIVE_NOT_RECRUITING", "TERMINATED")]
    assert len({(c.field, c.change) for c in changes}) == len(changes)
    assert len(store.versions("NCT05935098")) == 2


def test_a_cycle_over_250_trials_makes_three_list_requests(
    store: Store, fetcher: Fetcher, api: StandIn
) -> None:
    template = study("NCT04457778")
    ids = [f"NCT9{n:07d}" for n in range(250)]
    for nct_id in ids:
        clone = copy.deepcopy(template)
        clone["protocolSection"]["identificationModule"]["nctId"] = nct_id
        api.put(clone)
    store.add_trials(ids, utcnow())
    api.clear_log()
    summary = run_cycle(store, fetcher)
    assert summary.new == 250
    assert summary.requests == 3 == api.request_count


@pytest.mark.parametrize(
    "fault",
    [
        lambda api: api.truncate(times=10),
        lambda api: api.drop(times=10),
        lambda api: api.fail_with(
            200, "<html><body>Service busy</body></html>", {"Content-Type": "text/html"}, times=10
        ),
        lambda api: api.fail_with(503, "down for maintenance", times=10),
    ],
    ids=["truncated", "dropped-connection", "html-page", "http-503"],
)
def test_a_bad_answer_changes_nothing_and_the_next_cycle_records_the_change(
    store: Store, fetcher: Fetcher, api: StandIn, fault: Any
) -> None:
    store.add_trials(["NCT05935098"], utcnow())
    run_cycle(store, fetcher)
    api.advance("NCT05935098")
    fault(api)
    summary = run_cycle(store, fetcher)
    assert (summary.failed, summary.changed) == (1, 0)
    assert _fields(store, "NCT05935098") == []
    trial = store.trial("NCT05935098")
    assert trial is not None
    assert trial.failures == 1
    assert trial.last_error
    api.clear_faults()
    assert run_cycle(store, fetcher).changed == 1
    assert ("status.overallStatus", "changed") in _fields(store, "NCT05935098")
    trial = store.trial("NCT05935098")
    assert trial is not None
    assert trial.failures == 0


def test_a_trial_removed_from_the_registry_is_recorded_once_and_its_return_too(
    store: Store, fetcher: Fetcher, api: StandIn
) -> None:
    store.add_trials(["NCT05009069"], utcnow())
    run_cycle(store, fetcher)
    kept = api.current("NCT05009069")
    api.remove("NCT05009069")
    with capture_logs() as logs:
        assert run_cycle(store, fetcher).not_found == 1
    run_cycle(store, fetcher)
    assert _fields(store, "NCT05009069") == [("identification.nctId", "removed")]
    (gone,) = [c for c in store.changes(["NCT05009069"]) if not c.baseline]
    assert level_of(gone) == "major"
    assert describe(as_change(gone)).startswith("Record no longer found in the registry")
    assert [e["event"] for e in logs].count("trial.not_found") == 1
    trial = store.trial("NCT05009069")
    assert trial is not None
    assert trial.state == "not_found"
    assert trial.version_id is not None
    assert kept is not None
    api.put(kept)
    run_cycle(store, fetcher)
    assert _fields(store, "NCT05009069")[-1] == ("identification.nctId", "added")
    trial = store.trial("NCT05009069")
    assert trial is not None
    assert trial.state == "ok"


def test_a_crash_inside_a_trial_write_leaves_no_half_record_and_the_next_cycle_completes(
    store: Store, fetcher: Fetcher, api: StandIn, cfg: Config
) -> None:
    ids = _watch(store, api)
    written: list[str] = []

    def crash_on_the_fifth(_: Store, nct_id: str, change_ids: list[int], base: bool) -> None:
        written.append(nct_id)
        if len(written) == 5:
            raise RuntimeError("power cut")

    store.on_record.append(crash_on_the_fifth)
    with pytest.raises(RuntimeError):
        run_cycle(store, fetcher)
    store.on_record.clear()
    victim = written[-1]
    conn = sqlite3.connect(cfg.database_path)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    assert conn.execute("select count(*) from changes where nct_id = ?", [victim]).fetchone() == (
        0,
    )
    assert conn.execute("select count(*) from versions where nct_id = ?", [victim]).fetchone() == (
        0,
    )
    recorded = {r[0] for r in conn.execute("select distinct nct_id from changes")}
    assert recorded == set(written[:4])
    conn.close()
    summary = run_cycle(store, fetcher)
    assert summary.new == len(ids) - 4
    per_trial = {i: len(store.changes([i])) for i in ids}
    again = run_cycle(store, fetcher)
    assert again.new == again.changed == 0
    assert {i: len(store.changes([i])) for i in ids} == per_trial
    assert store.last_cycle() is not None


def test_an_interrupted_cycle_is_marked_and_a_stop_request_finishes_the_trial_in_hand(
    store: Store, fetcher: Fetcher, api: StandIn
) -> None:
    ids = _watch(store, api)
    seen: list[int] = []
    summary = run_cycle(store, fetcher, should_stop=lambda: len(seen.append(1) or seen) >= 3)
    assert summary.stopped
    assert summary.checked == 3
    assert summary.new == 3
    rest = run_cycle(store, fetcher)
    assert rest.new == len(ids) - 3


def test_a_trial_asked_for_by_an_alias_is_stored_under_its_canonical_id(
    store: Store, fetcher: Fetcher, api: StandIn
) -> None:
    record = copy.deepcopy(history_versions("NCT06612645")[0])
    record["protocolSection"]["identificationModule"]["nctIdAliases"] = ["NCT01111111"]
    api.put(record)
    store.add_trials(["NCT01111111"], utcnow())
    run_cycle(store, fetcher)
    assert store.trial("NCT01111111") is not None
    trial = store.trial("NCT06612645")
    assert trial is not None
    assert trial.nct_id == "NCT06612645"
    assert "NCT01111111" in trial.aliases
    assert {c.nct_id for c in store.changes()} == {"NCT06612645"}


def test_a_write_that_lost_the_race_to_another_process_records_nothing(
    store: Store, fetcher: Fetcher, api: StandIn
) -> None:
    store.add_trials(["NCT05935098"], utcnow())
    run_cycle(store, fetcher)
    stale = store.trial("NCT05935098")
    api.advance("NCT05935098")
    run_cycle(store, fetcher)
    count = len(store.changes())
    assert stale is not None
    from monitor.storage import NewVersion

    ok = store.record(
        NewVersion("NCT05935098", b"{}", "other-hash", None, [], None),
        expected_version=stale.version_id,
        changes=[],
        baseline=False,
        cycle_id=None,
        now=utcnow(),
    )
    assert ok is False
    assert len(store.changes()) == count


def test_only_one_cycle_runs_at_a_time_per_database(cfg: Config) -> None:
    with (
        cycle_lock(cfg.database_path),
        pytest.raises(LockedError, match="another process"),
        cycle_lock(cfg.database_path, wait=False),
    ):
        pass
