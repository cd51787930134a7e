"""The SQLite file: watched trials, every raw version, the permanent change log, cycles.

One file in WAL mode, opened through sqlite-utils, with migrations applied on every open so an
old database upgrades itself. Tables:

- ``trials``: the registry of watched ids and each trial's state (current version, failures).
- ``versions``: every distinct raw record, keyed by a hash of its content without the daily
  ``versionHolder``. Stored zstd-compressed; a version is compressed against the trial's
  previous version (a raw-content dictionary), so a new version costs bytes in proportion to
  what changed. Every ``KEYFRAME``-th version is stored whole to bound the chain.
- ``changes``: the "Recent Field Changes" log, never rewritten. A trial's first snapshot is one
  baseline marker row: its "added" entries are exactly the fields of the baseline version, so
  they are derived from it when read instead of being stored a second time.
- ``cycles``: one row per poll cycle, for the summary and for ``status``.
- ``meta``: small key-value facts (e.g. the registry's last ``dataTimestamp``).
"""

from __future__ import annotations

import fnmatch
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import zstandard
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from monitor.errors import StorageError
from monitor.model import Change, Snapshot

KEYFRAME = 16
LEVEL = 9
#: The one row that stands for a trial's whole first snapshot; ``changes()`` expands it.
BASELINE_MARKER = Change("*", "added")

migrations = Migrations("trial-monitor")


@migrations()
def m001_initial(db: Database) -> None:
    db.table("trials").create(
        {
            "nct_id": str,
            "added_at": str,
            "aliases": str,
            "state": str,
            "version_id": int,
            "content_hash": str,
            "title": str,
            "last_checked_at": str,
            "last_changed_at": str,
            "last_ok_at": str,
            "failures": int,
            "failing_since": str,
            "last_error": str,
        },
        pk="nct_id",
        not_null={"added_at", "state", "failures"},
        defaults={"state": "new", "failures": 0, "aliases": "[]"},
    )
    db.table("versions").create(
        {
            "id": int,
            "nct_id": str,
            "hash": str,
            "seen_at": str,
            "last_update_post_date": str,
            "raw_size": int,
            "base_id": int,
            "depth": int,
            "data": bytes,
        },
        pk="id",
        not_null={"nct_id", "hash", "seen_at", "raw_size", "depth", "data"},
    )
    db.table("versions").create_index(["nct_id", "hash"], unique=True)
    db.table("changes").create(
        {
            "id": int,
            "nct_id": str,
            "version_id": int,
            "cycle_id": int,
            "field": str,
            "change": str,
            "old": str,
            "new": str,
            "detected_at": str,
            "baseline": int,
        },
        pk="id",
        not_null={"nct_id", "field", "change", "detected_at", "baseline"},
    )
    db.table("changes").create_index(["nct_id", "detected_at"])
    db.table("changes").create_index(["detected_at"])
    db.table("cycles").create(
        {
            "id": int,
            "started_at": str,
            "finished_at": str,
            "status": str,
            "trials": int,
            "checked": int,
            "changed": int,
            "failed": int,
            "not_found": int,
            "requests": int,
            "error": str,
        },
        pk="id",
    )
    db.table("meta").create({"key": str, "value": str}, pk="key")


@migrations()
def m002_alerts(db: Database) -> None:
    """Subscriptions and the alert outbox (see monitor/outbox.py for the states).

    Significance is not stored on ``changes``: it is computed from the rules table whenever
    it is needed, so editing :data:`monitor.significance.RULES` re-judges old rows too.
    """
    db.table("subscriptions").create(
        {
            "id": int,
            "name": str,
            "channel": str,
            "target": str,
            "secret": str,
            "trials": str,  # JSON list of NCT ids; null means every watched trial
            "fields": str,  # JSON list of globs; empty means every field
            "min_significance": str,
            "digest": str,
            "created_at": str,
        },
        pk="id",
        not_null={"name", "channel", "target", "fields", "min_significance", "digest"},
    )
    db.table("outbox").create(
        {
            "id": int,
            "subscription_id": int,
            "nct_id": str,
            "change_ids": str,  # JSON list of changes.id
            "key": str,  # this trial's alert: subscription, trial, change ids
            "batch": str,  # the message it travels in (its own key unless a digest)
            "state": str,
            "created_at": str,
            "due_at": str,
            "attempts": int,
            "first_try_at": str,
            "last_error": str,
            "sent_at": str,
        },
        pk="id",
        not_null={"subscription_id", "nct_id", "change_ids", "key", "state", "created_at"},
        defaults={"attempts": 0},
    )
    db.table("outbox").create_index(["key"], unique=True)
    db.table("outbox").create_index(["state", "due_at"])
    db.table("outbox").create_index(["batch"])
    db.table("outbox").create_index(["subscription_id", "state"])


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second: sortable as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Trial:
    nct_id: str
    added_at: str
    aliases: list[str]
    state: str
    version_id: int | None
    content_hash: str | None
    title: str | None
    last_checked_at: str | None
    last_changed_at: str | None
    last_ok_at: str | None
    failures: int
    failing_since: str | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Trial:
        return cls(**{**row, "aliases": orjson.loads(row["aliases"] or "[]")})


@dataclass(frozen=True)
class NewVersion:
    """A fetched record ready to store, under its canonical id."""

    nct_id: str
    raw: bytes
    content_hash: str
    title: str | None
    aliases: Sequence[str]
    last_update_post_date: str | None


RecordHook = Callable[["Store", str, list[int], bool], None]


@dataclass(frozen=True)
class StoredChange:
    """A change-log row, with baseline values filled in from the baseline version."""

    id: int
    nct_id: str
    version_id: int | None
    field: str
    change: str
    old: Any
    new: Any
    detected_at: str
    baseline: bool


@dataclass(frozen=True)
class VersionInfo:
    id: int
    nct_id: str
    hash: str
    seen_at: str
    last_update_post_date: str | None
    raw_size: int
    stored_size: int


class Store:
    """All reads and writes of the database; the rest of the code never writes SQL."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=busy_timeout, check_same_thread=False)
            self.db = Database(conn)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            migrations.apply(self.db)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(
                f"{self.path}: cannot open the database ({exc}). Check that the path in "
                "[storage] database is writable and is a trial-monitor database."
            ) from None
        self._load = lru_cache(maxsize=64)(self._load_uncached)
        self.snapshot = lru_cache(maxsize=64)(self._snapshot_uncached)
        self.on_record: list[RecordHook] = []

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit; a crash inside leaves no trace of it."""
        try:
            with self.db.atomic():
                yield
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: write failed: {exc}") from None

    # -- the registry of watched trials -------------------------------------------------

    def add_trials(self, ids: Sequence[str], now: datetime) -> list[str]:
        """Register ids (all or none); returns those that were new."""
        with self.transaction():
            known = {r["nct_id"] for r in self.db.query("select nct_id from trials")}
            new = [i for i in dict.fromkeys(ids) if i not in known]
            self.db.table("trials").insert_all(
                {"nct_id": i, "added_at": iso(now), "state": "new", "failures": 0} for i in new
            )
        return new

    def remove_trials(self, ids: Sequence[str]) -> list[str]:
        """Stop watching ids; their history stays in the log."""
        with self.transaction():
            present = [i for i in ids if self.db.table("trials").count_where("nct_id = ?", [i])]
            for nct_id in present:
                self.db.table("trials").delete(nct_id)
        return present

    def trials(self, ids: Iterable[str] | None = None) -> list[Trial]:
        """Watched trials, or those whose id or an alias is in ``ids`` (looked up in SQL)."""
        if ids is None:
            rows = self.db.query("select * from trials order by nct_id")
        else:
            wanted = orjson.dumps(sorted(set(ids))).decode()
            rows = self.db.query(
                "select * from trials where nct_id in (select value from json_each(:ids)) "
                "or exists (select 1 from json_each(trials.aliases) "
                "where value in (select value from json_each(:ids))) order by nct_id",
                {"ids": wanted},
            )
        return [Trial.from_row(r) for r in rows]

    def trial(self, nct_id: str) -> Trial | None:
        found = self.trials([nct_id])
        return found[0] if found else None

    # -- versions -----------------------------------------------------------------------

    def version_raw(self, version_id: int) -> bytes:
        """The record as it was fetched, decompressed (walks the delta chain)."""
        return self._load(version_id)

    def version_study(self, version_id: int) -> dict[str, Any]:
        study: dict[str, Any] = orjson.loads(self.version_raw(version_id))
        return study

    def _snapshot_uncached(self, version_id: int) -> Snapshot:
        """A stored version as named fields (cached: callers must not modify it)."""
        from monitor.normalize import normalize

        return normalize(self.version_study(version_id))

    def _load_uncached(self, version_id: int) -> bytes:
        row = self._version_row(version_id)
        if row["base_id"] is None:
            return zstandard.ZstdDecompressor().decompress(row["data"])
        base = self._load(row["base_id"])
        prefix = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        return zstandard.ZstdDecompressor(dict_data=prefix).decompress(row["data"])

    def _version_row(self, version_id: int) -> dict[str, Any]:
        rows = list(self.db.query("select * from versions where id = ?", [version_id]))
        if not rows:
            raise StorageError(f"{self.path}: version {version_id} is missing")
        return rows[0]

    def versions(self, nct_id: str) -> list[VersionInfo]:
        return [
            VersionInfo(**r)
            for r in self.db.query(
                "select id, nct_id, hash, seen_at, last_update_post_date, raw_size, "
                "length(data) as stored_size from versions where nct_id = ? order by id",
                [nct_id],
            )
        ]

    def _store_version(self, fetched: NewVersion, now: datetime) -> int:
        nct_id, raw, content_hash = fetched.nct_id, fetched.raw, fetched.content_hash
        existing = list(
            self.db.query(
                "select id from versions where nct_id = ? and hash = ?", [nct_id, content_hash]
            )
        )
        if existing:
            return int(existing[0]["id"])
        prev = list(
            self.db.query(
                "select id, depth from versions where nct_id = ? order by id desc limit 1",
                [nct_id],
            )
        )
        base_id: int | None = None
        depth = 0
        params: dict[str, Any] = {"level": LEVEL}
        if prev and prev[0]["depth"] + 1 < KEYFRAME:
            base_id, depth = int(prev[0]["id"]), int(prev[0]["depth"]) + 1
            params["dict_data"] = zstandard.ZstdCompressionDict(
                self._load(base_id), dict_type=zstandard.DICT_TYPE_RAWCONTENT
            )
        data = zstandard.ZstdCompressor(**params).compress(raw)
        row = {
            "nct_id": nct_id,
            "hash": content_hash,
            "seen_at": iso(now),
            "last_update_post_date": fetched.last_update_post_date,
            "raw_size": len(raw),
            "base_id": base_id,
            "depth": depth,
            "data": data,
        }
        return _pk(self.db.table("versions").insert(row).last_pk)

    # -- recording what a fetch found ---------------------------------------------------

    def record(
        self,
        fetched: NewVersion,
        *,
        expected_version: int | None,
        changes: Sequence[Change],
        baseline: bool,
        cycle_id: int | None,
        now: datetime,
    ) -> bool:
        """Store a new version, its changes and the trial's state in one transaction.

        Hooks in ``on_record`` (e.g. the alert outbox) run inside the same transaction.
        Returns False, writing nothing, when another process recorded this trial since
        ``expected_version`` was read, so a change is never logged twice.
        """
        stamp = iso(now)
        try:
            with self.transaction():
                version_id = self._store_version(fetched, now)
                updated = self.db.execute(
                    "update trials set version_id = ?, content_hash = ?, title = ?, "
                    "aliases = ?, state = 'ok', last_checked_at = ?, last_ok_at = ?, "
                    "failures = 0, failing_since = null, last_error = null, "
                    "last_changed_at = case when ? then ? else last_changed_at end "
                    "where nct_id = ? and version_id is ?",
                    [
                        version_id,
                        fetched.content_hash,
                        fetched.title,
                        orjson.dumps(sorted(set(fetched.aliases))).decode(),
                        stamp,
                        stamp,
                        bool(changes),
                        stamp,
                        fetched.nct_id,
                        expected_version,
                    ],
                ).rowcount
                if updated != 1:
                    raise _LostRace
                ids = self._insert_changes(
                    fetched.nct_id,
                    version_id,
                    cycle_id,
                    [BASELINE_MARKER] if baseline else changes,
                    baseline,
                    stamp,
                )
                for hook in self.on_record:
                    hook(self, fetched.nct_id, ids, baseline)
        except _LostRace:
            return False
        return True

    def _insert_changes(
        self,
        nct_id: str,
        version_id: int | None,
        cycle_id: int | None,
        changes: Sequence[Change],
        baseline: bool,
        stamp: str,
    ) -> list[int]:
        # Called with the write lock held, so explicit ids are safe and let one
        # executemany insert a whole baseline quickly.
        first = self.db.execute("select coalesce(max(id), 0) + 1 from changes").fetchone()[0]
        ids = list(range(first, first + len(changes)))
        self.db.conn.executemany(
            "insert into changes (id, nct_id, version_id, cycle_id, field, change, old, new, "
            "detected_at, baseline) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    i,
                    nct_id,
                    version_id,
                    cycle_id,
                    c.field,
                    c.change,
                    _dump(c.old),
                    _dump(c.new),
                    stamp,
                    int(baseline),
                )
                for i, c in zip(ids, changes, strict=True)
            ],
        )
        return ids

    def mark_unchanged(self, ids: Sequence[str], now: datetime) -> None:
        """A batch of trials came back identical: only their health moves."""
        if not ids:
            return
        stamp = iso(now)
        with self.transaction():
            self.db.conn.executemany(
                "update trials set last_checked_at = ?, last_ok_at = ?, state = 'ok', "
                "failures = 0, failing_since = null, last_error = null where nct_id = ?",
                [(stamp, stamp, i) for i in ids],
            )

    def mark_failed(self, nct_id: str, message: str, now: datetime) -> None:
        """A fetch error is health news, never a change: the snapshot is untouched."""
        stamp = iso(now)
        with self.transaction():
            self.db.execute(
                "update trials set failures = failures + 1, last_error = ?, "
                "failing_since = coalesce(failing_since, ?), last_checked_at = ? "
                "where nct_id = ?",
                [message, stamp, stamp, nct_id],
            )

    def mark_not_found(self, nct_id: str, cycle_id: int | None, now: datetime) -> bool:
        """The registry no longer has the trial: keep its snapshot, log the loss once."""
        stamp = iso(now)
        with self.transaction():
            rows = list(
                self.db.query("select state, version_id from trials where nct_id = ?", [nct_id])
            )
            if not rows or rows[0]["state"] == "not_found":
                return False
            self.db.execute(
                "update trials set state = 'not_found', last_checked_at = ?, failures = 0, "
                "failing_since = null, last_error = 'not found in the registry', "
                "last_changed_at = case when version_id is null then last_changed_at else ? end "
                "where nct_id = ?",
                [stamp, stamp, nct_id],
            )
            if rows[0]["version_id"] is None:
                return False
            gone = Change("identification.nctId", "removed", old=nct_id)
            ids = self._insert_changes(
                nct_id, rows[0]["version_id"], cycle_id, [gone], False, stamp
            )
            for hook in self.on_record:
                hook(self, nct_id, ids, False)
        return True

    def rename_trial(self, old_id: str, canonical: str) -> None:
        """The registry answered under another id: the canonical id wins, the old is an alias."""
        with self.transaction():
            if self.db.table("trials").count_where("nct_id = ?", [canonical]):
                self.db.table("trials").delete(old_id)
            else:
                self.db.execute(
                    "update trials set nct_id = ? where nct_id = ?", [canonical, old_id]
                )

    # -- the change log -----------------------------------------------------------------

    def changes(
        self,
        ids: Sequence[str] | None = None,
        *,
        since: str | None = None,
        field_glob: str | None = None,
        limit: int | None = None,
    ) -> list[StoredChange]:
        """Change-log rows, oldest first, with each baseline marker expanded into its fields."""
        where: list[str] = []
        params: list[Any] = []
        if ids:
            where.append(f"nct_id in ({', '.join('?' for _ in ids)})")
            params.extend(ids)
        if since:
            where.append("detected_at >= ?")
            params.append(since)
        if field_glob:
            where.append("(field glob ? or baseline = 1)")
            params.append(field_glob)
        sql = "select * from changes"
        if where:
            sql += " where " + " and ".join(where)
        sql += " order by detected_at, id"
        out: list[StoredChange] = []
        for row in self.db.query(sql, params):
            for change in self._expand(row):
                if field_glob is None or fnmatch.fnmatchcase(change.field, field_glob):
                    out.append(change)
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def _expand(self, row: dict[str, Any]) -> list[StoredChange]:
        """A stored row as change entries; a baseline marker becomes one entry per field."""
        from monitor.diff import baseline

        common = {
            "id": row["id"],
            "nct_id": row["nct_id"],
            "version_id": row["version_id"],
            "detected_at": row["detected_at"],
        }
        if not row["baseline"]:
            return [
                StoredChange(
                    **common,
                    field=row["field"],
                    change=row["change"],
                    old=_load_json(row["old"]),
                    new=_load_json(row["new"]),
                    baseline=False,
                )
            ]
        snapshot = self.snapshot(int(row["version_id"]))
        return [
            StoredChange(
                **common, field=c.field, change="added", old=None, new=c.new, baseline=True
            )
            for c in baseline(snapshot)
        ]

    def groups_changed(self, version_id: int) -> list[str]:
        """The field groups that changed when this version was first seen."""
        rows = self.db.query(
            "select distinct field from changes where version_id = ? and baseline = 0",
            [version_id],
        )
        return sorted({r["field"].split(".", 1)[0] for r in rows})

    # -- cycles and small facts ---------------------------------------------------------

    def start_cycle(self, trials: int, now: datetime) -> int:
        with self.transaction():
            self.db.execute("update cycles set status = 'interrupted' where status = 'running'")
            return _pk(
                self.db.table("cycles")
                .insert({"started_at": iso(now), "status": "running", "trials": trials})
                .last_pk
            )

    def finish_cycle(self, cycle_id: int, now: datetime, **counts: Any) -> None:
        with self.transaction():
            self.db.table("cycles").update(cycle_id, {"finished_at": iso(now), **counts})

    def last_cycle(self) -> dict[str, Any] | None:
        rows = list(self.db.query("select * from cycles order by id desc limit 1"))
        return rows[0] if rows else None

    def get_meta(self, key: str) -> str | None:
        rows = list(self.db.query("select value from meta where key = ?", [key]))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.db.table("meta").upsert({"key": key, "value": value}, pk="key")


class _LostRace(Exception):
    """Raised inside a transaction to roll it back when another writer got there first."""


def _pk(value: Any) -> int:
    if value is None:
        raise StorageError("insert returned no row id")
    return int(value)


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load_json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)
