"""The operator's view: is the service alive, and is the data it keeps fresh?

"Nothing changed" and "we could not look" must never be confused: a trial whose fetches keep
failing, or whose last successful fetch is old, is *stale* even though its log shows no change.
``status`` renders this view (text or JSON) and turns it into an exit code for health checks;
the daemon builds the same view after each cycle to warn about stale trials in its log.
"""

from __future__ import annotations

import fcntl
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from monitor import outbox
from monitor.config import Config, ScheduleConfig
from monitor.storage import Store, Trial, iso, utcnow

#: Meta key the daemon fills with the next scheduled run (ISO UTC, empty when stopped).
META_NEXT_RUN = "daemon.next_run_at"

#: ``status`` exit codes, for health checks and monitoring scripts.
EXIT_OK = 0
EXIT_DAEMON_DOWN = 3
EXIT_STALE = 4


def daemon_lock_path(db_path: Path) -> Path:
    """The flock file that makes a daemon the only one on its database; it holds the pid."""
    return db_path.with_name(db_path.name + ".daemon.lock")


@dataclass(frozen=True)
class DaemonState:
    """``running`` comes from the flock itself, so a pid left by a killed daemon is not news."""

    running: bool
    pid: int | None


def daemon_state(db_path: Path) -> DaemonState:
    """Probe the daemon lock without taking it for longer than the probe."""
    path = daemon_lock_path(db_path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed in the finally below
    except FileNotFoundError:
        return DaemonState(running=False, pid=None)
    try:
        text = handle.read().decode("ascii", "replace").strip()
        pid = int(text) if text.isdigit() else None
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return DaemonState(running=True, pid=pid)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return DaemonState(running=False, pid=pid)
    finally:
        handle.close()


@dataclass(frozen=True)
class LastCycle:
    id: int
    status: str
    started_at: str
    finished_at: str | None
    seconds: float | None
    trials: int
    checked: int
    changed: int
    failed: int
    not_found: int
    requests: int


@dataclass(frozen=True)
class TrialHealth:
    """One trial that is failing or stale, with why."""

    nct_id: str
    failures: int
    failing_since: str | None
    last_ok_at: str | None
    last_error: str | None
    reason: str = ""


@dataclass(frozen=True)
class Health:
    database: str
    now: str
    daemon: DaemonState
    last_cycle: LastCycle | None
    next_run_at: str | None
    trials: int
    never_fetched: list[str] = field(default_factory=list)
    failing: list[TrialHealth] = field(default_factory=list)
    stale: list[TrialHealth] = field(default_factory=list)
    database_bytes: int = 0
    wal_bytes: int = 0
    alerts: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """A dead daemon outranks stale data: nothing will fix the data until it runs."""
        if not self.daemon.running:
            return EXIT_DAEMON_DOWN
        if self.stale:
            return EXIT_STALE
        return EXIT_OK

    @property
    def verdict(self) -> str:
        return {EXIT_OK: "ok", EXIT_DAEMON_DOWN: "daemon down", EXIT_STALE: "stale"}[self.exit_code]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.verdict, "exit_code": self.exit_code}

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode()

    def to_text(self) -> str:
        lines = [
            f"Database    {self.database} ({_size(self.database_bytes)}"
            + (f" + {_size(self.wal_bytes)} WAL)" if self.wal_bytes else ")"),
            "Daemon      "
            + (
                f"running (pid {self.daemon.pid})"
                if self.daemon.running
                else "not running" + (f" (last pid {self.daemon.pid})" if self.daemon.pid else "")
            ),
            f"Last cycle  {_cycle_text(self.last_cycle)}",
            # A killed daemon cannot clear its last plan: do not show it as a promise.
            f"Next run    {(self.next_run_at if self.daemon.running else None) or '—'}",
            f"Trials      {self.trials} watched, {len(self.never_fetched)} never fetched, "
            f"{len(self.failing)} failing, {len(self.stale)} stale",
            "Alerts      "
            + ", ".join(f"{n} {state}" for state, n in self.alerts.items() if n)
            + ("" if any(self.alerts.values()) else "none yet")
            + (" (see `trial-monitor outbox --failed`)" if self.alerts.get("failed") else ""),
        ]
        for trial in self.failing:
            lines.append(
                f"  failing   {trial.nct_id} since {trial.failing_since} "
                f"({trial.failures} failed cycle{'s' if trial.failures != 1 else ''}): "
                f"{trial.last_error or ''}"
            )
        for trial in self.stale:
            lines.append(f"  stale     {trial.nct_id}: {trial.reason}")
        lines.append(f"Status      {self.verdict.upper()}")
        return "\n".join(lines)


def build(store: Store, config: Config, now: datetime | None = None) -> Health:
    """Gather the operator's view from the database and the daemon lock."""
    moment = now or utcnow()
    trials = store.trials()
    db = config.database_path
    return Health(
        database=str(db),
        now=iso(moment),
        daemon=daemon_state(db),
        last_cycle=_last_cycle(store.last_cycle()),
        next_run_at=store.get_meta(META_NEXT_RUN) or None,
        trials=len(trials),
        never_fetched=[t.nct_id for t in trials if t.version_id is None and t.state == "new"],
        failing=[_health(t) for t in trials if t.failures > 0],
        stale=stale_trials(trials, moment, config.schedule),
        database_bytes=_file_size(db),
        wal_bytes=_file_size(db.with_name(db.name + "-wal")),
        alerts=outbox.counts(store),
    )


def stale_trials(trials: list[Trial], now: datetime, schedule: ScheduleConfig) -> list[TrialHealth]:
    """The trials whose recorded data can no longer be trusted to be current."""
    return [
        _health(t, reason)
        for t in trials
        if (reason := stale_reason(t, now, schedule.stale_after, schedule.stale_failures))
    ]


def stale_reason(trial: Trial, now: datetime, stale_after: float, stale_failures: int) -> str:
    """Why a trial's data can no longer be trusted to be current ("" when it can).

    A trial the registry confirmed gone is not stale: that is a recorded fact, not a failure.
    A trial never fetched ages from when it was added.
    """
    if trial.state == "not_found":
        return ""
    if trial.failures >= stale_failures:
        return f"fetch failed in {trial.failures} consecutive cycles"
    since = trial.last_ok_at or trial.added_at
    if now - datetime.fromisoformat(since) > timedelta(seconds=stale_after):
        return (
            f"no successful fetch since {trial.last_ok_at}"
            if trial.last_ok_at
            else f"never fetched since it was added at {trial.added_at}"
        )
    return ""


def _health(trial: Trial, reason: str = "") -> TrialHealth:
    return TrialHealth(
        nct_id=trial.nct_id,
        failures=trial.failures,
        failing_since=trial.failing_since,
        last_ok_at=trial.last_ok_at,
        last_error=trial.last_error,
        reason=reason,
    )


def _last_cycle(row: dict[str, Any] | None) -> LastCycle | None:
    if row is None:
        return None
    seconds = None
    if row["finished_at"]:
        elapsed = datetime.fromisoformat(row["finished_at"]) - datetime.fromisoformat(
            row["started_at"]
        )
        seconds = elapsed.total_seconds()
    return LastCycle(
        id=row["id"],
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        seconds=seconds,
        trials=row["trials"] or 0,
        checked=row["checked"] or 0,
        changed=row["changed"] or 0,
        failed=row["failed"] or 0,
        not_found=row["not_found"] or 0,
        requests=row["requests"] or 0,
    )


def _cycle_text(cycle: LastCycle | None) -> str:
    if cycle is None:
        return "none yet"
    when = cycle.finished_at or cycle.started_at
    took = f" in {cycle.seconds:.0f}s" if cycle.seconds is not None else ""
    return (
        f"#{cycle.id} {cycle.status} at {when}{took}: {cycle.checked} of {cycle.trials} "
        f"checked, {cycle.changed} changed, {cycle.failed} failed, {cycle.not_found} not found, "
        f"{cycle.requests} requests"
    )


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
