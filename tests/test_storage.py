"""The database: deduplicated, delta-compressed versions and the permanent change log."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.errors import StorageError
from monitor.model import Change
from monitor.normalize import content_hash
from monitor.storage import KEYFRAME, NewVersion, Store, utcnow
from tests.conftest import history_versions


def _record(store: Store, study: dict[str, Any], changes: list[Change] | None = None) -> bool:
    nct = study["protocolSection"]["identificationModule"]["nctId"]
    trial = store.trial(nct)
    assert trial is not None
    return store.record(
        NewVersion(nct, orjson.dumps(study), content_hash(study), None, [], None),
        expected_version=trial.version_id,
        changes=changes or [],
        baseline=trial.version_id is None,
        cycle_id=None,
        now=utcnow(),
    )


def test_every_version_round_trips_byte_for_byte_across_keyframes(tmp_path: Path) -> None:
    base = history_versions("NCT06330064")[0]
    store = Store(tmp_path / "db.sqlite")
    store.add_trials(["NCT06330064"], utcnow())
    raws = []
    for n in range(KEYFRAME * 2 + 3):
        version = copy.deepcopy(base)
        version["protocolSection"]["designModule"]["enrollmentInfo"]["count"] = 100 + n
        assert _record(store, version)
        raws.append(orjson.dumps(version))
    infos = store.versions("NCT06330064")
    assert len(infos) == len(raws)
    store._load.cache_clear()
    assert [store.version_raw(v.id) for v in infos] == raws
    deltas = [v for i, v in enumerate(infos) if i % KEYFRAME]
    assert all(v.stored_size < 0.15 * v.raw_size for v in deltas)


def test_a_version_seen_again_is_stored_once(tmp_path: Path) -> None:
    first, second = history_versions("NCT07386002")[:2]
    store = Store(tmp_path / "db.sqlite")
    store.add_trials(["NCT07386002"], utcnow())
    for version in (first, second, first):
        _record(store, version)
    assert len(store.versions("NCT07386002")) == 2


def test_the_baseline_is_one_row_that_reads_back_as_one_added_entry_per_field(
    tmp_path: Path,
) -> None:
    first = history_versions("NCT05935098")[0]
    store = Store(tmp_path / "db.sqlite")
    store.add_trials(["NCT05935098"], utcnow())
    _record(store, first)
    assert store.db.execute("select count(*) from changes").fetchone() == (1,)
    entries = store.changes(["NCT05935098"])
    assert len(entries) > 50
    assert all(e.baseline and e.change == "added" and e.old is None for e in entries)
    by_field = {e.field: e.new for e in entries}
    assert by_field["status.overallStatus"] == "ACTIVE_NOT_RECRUITING"
    status_only = store.changes(["NCT05935098"], field_glob="status.overall*")
    assert [e.field for e in status_only] == ["status.overallStatus"]


def test_change_filters_by_field_glob_since_and_trial(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    first, second = history_versions("NCT05935098")[:2]
    store.add_trials(["NCT05935098"], utcnow())
    _record(store, first)
    _record(
        store,
        second,
        [
            Change("status.overallStatus", "changed", "A", "B"),
            Change("design.enrollmentCount", "changed", 1, 2),
        ],
    )
    real = [c for c in store.changes(field_glob="status.*") if not c.baseline]
    assert [(c.field, c.old, c.new) for c in real] == [("status.overallStatus", "A", "B")]
    assert store.changes(["NCT00000000"]) == []
    assert store.changes(since="2999-01-01T00:00:00Z") == []


def test_a_file_that_is_not_a_database_gives_a_clean_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(StorageError, match=r"notes\.db: cannot open the database"):
        Store(bogus)
