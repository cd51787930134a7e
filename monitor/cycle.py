"""One poll cycle, top to bottom: fetch → normalize → diff → store (→ the outbox hook).

The hot path is the unchanged trial: it costs a JSON parse (in the fetcher) and a content
hash, compared with the hash stored for the trial's current version. Only a trial whose hash
moved is normalized and diffed against its stored snapshot. Nothing is skipped on
``lastUpdatePostDate``, because the registry edits records without touching it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import structlog

from monitor.diff import diff
from monitor.errors import LockedError
from monitor.fetch import Fetcher
from monitor.model import Change
from monitor.normalize import content_hash, normalize
from monitor.storage import NewVersion, Store, Trial, utcnow

log = structlog.get_logger()

Clock = Callable[[], datetime]


@dataclass
class CycleSummary:
    """What one cycle did, for the one-line summary and the ``cycles`` table."""

    cycle_id: int
    trials: int = 0
    checked: int = 0
    new: int = 0
    changed: int = 0
    failed: int = 0
    not_found: int = 0
    requests: int = 0
    seconds: float = 0.0
    stopped: bool = False

    def line(self) -> str:
        text = (
            f"Checked {self.checked} of {self.trials} trials: {self.changed} changed, "
            f"{self.new} new, {self.failed} failed, {self.not_found} not found; "
            f"{self.requests} request{'s' if self.requests != 1 else ''} "
            f"in {self.seconds:.1f}s"
        )
        return text + (" (stopped early)" if self.stopped else "")


@contextmanager
def cycle_lock(
    db_path: Path, *, wait: bool = True, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """One cycle at a time per database, across processes (daemon and ``check``).

    The lock is an flock on a file beside the database, so it dies with its process: a
    killed daemon never leaves a stale lock behind.
    """
    lock_path = db_path.with_name(db_path.name + ".cycle.lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LockedError(
                    f"{db_path}: another process is running a cycle on this database"
                ) from None
            if on_wait:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_cycle(
    store: Store,
    fetcher: Fetcher,
    ids: Sequence[str] | None = None,
    *,
    clock: Clock = utcnow,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> CycleSummary:
    """Refetch the watched trials (or ``ids``) once and record what changed."""
    started = time.monotonic()
    trials = {t.nct_id: t for t in store.trials(ids)}
    wanted = list(trials)
    summary = CycleSummary(cycle_id=store.start_cycle(len(wanted), clock()), trials=len(wanted))
    requests_before = fetcher.requests
    log.info("cycle.start", cycle=summary.cycle_id, trials=len(wanted), pid=os.getpid())
    status = "done"
    try:
        for batch in fetcher.iter_batches(wanted):
            unchanged: list[str] = []
            for requested, study in batch.records.items():
                trial = trials[requested]
                digest = content_hash(study)
                if digest == trial.content_hash and trial.state != "not_found":
                    unchanged.append(requested)
                else:
                    _record(store, trial, study, digest, summary, clock())
                summary.checked += 1
                if should_stop():
                    summary.stopped = True
                    break
            store.mark_unchanged(unchanged, clock())
            if not summary.stopped:
                for nct_id in batch.not_found:
                    summary.not_found += 1
                    if store.mark_not_found(nct_id, summary.cycle_id, clock()):
                        log.warning("trial.not_found", nct_id=nct_id)
                for nct_id, message in batch.failed.items():
                    summary.failed += 1
                    store.mark_failed(nct_id, message, clock())
                    log.warning("trial.failed", nct_id=nct_id, error=message)
            if progress:
                progress(len(batch.records) + len(batch.not_found) + len(batch.failed))
            if summary.stopped or should_stop():
                summary.stopped = True
                break
    except BaseException:
        # Unwound by a stop request (the daemon's interrupted sleep) or by a crash.
        status = "stopped" if should_stop() else "interrupted"
        raise
    finally:
        summary.requests = fetcher.requests - requests_before
        summary.seconds = time.monotonic() - started
        store.finish_cycle(
            summary.cycle_id,
            clock(),
            status="stopped" if summary.stopped else status,
            checked=summary.checked,
            changed=summary.changed,
            failed=summary.failed,
            not_found=summary.not_found,
            requests=summary.requests,
        )
    log.info(
        "cycle.done",
        cycle=summary.cycle_id,
        trials=summary.trials,
        checked=summary.checked,
        changed=summary.changed,
        new=summary.new,
        failed=summary.failed,
        not_found=summary.not_found,
        requests=summary.requests,
        seconds=round(summary.seconds, 3),
        stopped=summary.stopped,
    )
    return summary


def _record(
    store: Store,
    trial: Trial,
    study: dict[str, Any],
    digest: str,
    summary: CycleSummary,
    now: datetime,
) -> None:
    """Diff a moved record against the stored snapshot and store both in one transaction."""
    ident = study["protocolSection"]["identificationModule"]
    canonical: str = ident["nctId"]
    if canonical != trial.nct_id:
        store.rename_trial(trial.nct_id, canonical)
        log.info("trial.renamed", requested=trial.nct_id, canonical=canonical)
        current = store.trial(canonical)
        trial = current if current is not None else trial
        if trial.content_hash == digest:
            return
    is_baseline = trial.version_id is None
    changes: list[Change] = []
    if trial.version_id is not None:
        changes = diff(store.snapshot(trial.version_id), normalize(study))
        if trial.state == "not_found":
            changes = [Change("identification.nctId", "added", new=canonical), *changes]
    status = study["protocolSection"].get("statusModule", {})
    fetched = NewVersion(
        nct_id=canonical,
        raw=orjson.dumps(study),
        content_hash=digest,
        title=ident.get("briefTitle"),
        aliases=[*ident.get("nctIdAliases", []), *trial.aliases]
        + ([trial.nct_id] if trial.nct_id != canonical else []),
        last_update_post_date=status.get("lastUpdatePostDateStruct", {}).get("date"),
    )
    recorded = store.record(
        fetched,
        expected_version=trial.version_id,
        changes=changes,
        baseline=is_baseline,
        cycle_id=summary.cycle_id,
        now=now,
    )
    if not recorded:
        log.info("trial.skipped", nct_id=canonical, reason="recorded by another process")
        return
    if is_baseline:
        summary.new += 1
        log.info("trial.baseline", nct_id=canonical)
    elif changes:
        summary.changed += 1
        log.info("trial.changed", nct_id=canonical, changes=len(changes))
