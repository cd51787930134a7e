"""The background service behind ``trial-monitor run``.

Threads. The main thread owns signals, the systemd watchdog, config reloads and the "next run"
bookkeeping; an APScheduler BackgroundScheduler runs the poll job on one worker thread
(``coalesce`` and ``max_instances=1``: a cycle still running is never started twice) and the
alert delivery job every ``[notify] deliver_every`` on another, so alerts keep flowing during a
long cycle. Each thread has its own Store, because one SQLite connection must not be used by two
threads at once.

Cheap when nothing can have changed. A scheduled run first asks ``/version`` and runs:

- a full cycle when the registry's ``dataTimestamp`` moved since the last full cycle, when no
  full cycle was ever completed, or when a full sweep is due (``[schedule] full_sweep``: the
  registry edits records without touching ``lastUpdatePostDate``, and maybe ``dataTimestamp``);
- otherwise only the trials never fetched (added since) and those whose last fetch failed
  (a failed fetch could have hidden a change of the refresh already accounted for);
- otherwise nothing, logged as ``cycle.skipped`` with the reason.

When ``/version`` itself fails we run a full cycle rather than skip: skipping would turn an
outage or a moved endpoint into "nothing changed" for as long as it lasts, while a full cycle
either works (the list endpoint is up) or marks trials failed, which ``status`` reports as
stale. The ``dataTimestamp`` is remembered only after a full cycle that was not stopped, so a
killed or interrupted cycle is simply done again.

Shutdown. SIGTERM/SIGINT sets the stop event: ``run_cycle`` stops after the trial in hand, the
Fetcher's sleeps (pace and retry backoff) wake and abandon the request, no new run starts, and
the process exits 0. A cycle stuck in a request for longer than ``STOP_GRACE`` is abandoned by
exiting anyway; a second signal exits at once. Both are safe because each trial is one SQLite
transaction.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TextIO

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from monitor import __version__, app, health, logs
from monitor import config as config_module
from monitor.config import Config, ScheduleConfig
from monitor.cycle import Clock, CycleSummary, cycle_lock, run_cycle
from monitor.delivery import deliver_due
from monitor.errors import ConfigError, FetchError, LockedError, MonitorError
from monitor.fetch import Fetcher
from monitor.storage import Store, iso, utcnow

log = structlog.get_logger()

JOB_ID = "poll"
DELIVER_JOB_ID = "deliver"
#: The registry's ``dataTimestamp`` as of the last completed full cycle.
META_DATA_TIMESTAMP = "daemon.data_timestamp"
#: When the last completed full cycle started (ISO UTC).
META_LAST_FULL = "daemon.last_full_at"
#: Seconds to wait for the trial in hand on shutdown: under the promised 10 s, and under
#: TimeoutStopSec in the unit, so systemd never has to SIGKILL us.
STOP_GRACE = 8.0
#: How often a run waiting for ``check``'s cycle lock looks again (and for a stop request).
LOCK_RETRY = 1.0
#: A cron run delayed (suspend, a long cycle) still happens if it is less than this late.
CRON_MISFIRE_GRACE = 3600


class Stopping(Exception):
    """Raised by the daemon's sleep when shutdown interrupts a pace wait or a retry backoff.

    Not a FetchError on purpose: the Fetcher must not record it as a failed fetch of the batch.
    """


@dataclass(frozen=True)
class Plan:
    """What a scheduled run fetches (``ids`` None means every watched trial), and why."""

    kind: Literal["full", "partial", "skip"]
    reason: str
    ids: list[str] | None = None
    data_timestamp: str | None = None


def plan_cycle(store: Store, fetcher: Fetcher, schedule: ScheduleConfig, now: datetime) -> Plan:
    """Decide between a full cycle, the new and failing trials only, or nothing."""
    try:
        current = str(fetcher.version()["dataTimestamp"])
    except FetchError as exc:
        log.warning("cycle.version_failed", error=str(exc))
        return Plan("full", f"version check failed ({exc})")
    last_full = store.get_meta(META_LAST_FULL)
    if last_full is None:
        return Plan("full", "no full cycle completed yet", data_timestamp=current)
    # Jitter may bring a run a little early; a sweep due within it is due now.
    elapsed = (now - datetime.fromisoformat(last_full)).total_seconds()
    if elapsed >= schedule.full_sweep - schedule.jitter:
        return Plan("full", f"full sweep due (last at {last_full})", data_timestamp=current)
    seen = store.get_meta(META_DATA_TIMESTAMP)
    if current != seen:
        return Plan("full", f"registry data moved ({seen} -> {current})", data_timestamp=current)
    pending = [
        t.nct_id
        for t in store.trials()
        if (t.version_id is None and t.state == "new") or t.failures > 0
    ]
    if pending:
        reason = f"registry data unchanged since {current}; {len(pending)} new or failing"
        return Plan("partial", reason, ids=pending, data_timestamp=current)
    return Plan("skip", f"registry data unchanged since {current}", data_timestamp=current)


def poll(
    store: Store,
    fetcher: Fetcher,
    schedule: ScheduleConfig,
    *,
    clock: Clock = utcnow,
    should_stop: Callable[[], bool] = lambda: False,
) -> CycleSummary | None:
    """One scheduled run: plan it, run it, remember a completed full cycle. None when skipped."""
    now = clock()
    plan = plan_cycle(store, fetcher, schedule, now)
    if plan.kind == "skip":
        log.info("cycle.skipped", reason=plan.reason)
        return None
    log.info(
        "cycle.planned",
        kind=plan.kind,
        reason=plan.reason,
        trials=len(plan.ids) if plan.ids is not None else "all",
    )
    summary = run_cycle(store, fetcher, plan.ids, clock=clock, should_stop=should_stop)
    if plan.kind == "full" and not summary.stopped:
        store.set_meta(META_LAST_FULL, iso(now))
        if plan.data_timestamp is not None:
            store.set_meta(META_DATA_TIMESTAMP, plan.data_timestamp)
    return summary


def make_trigger(schedule: ScheduleConfig) -> Any:
    """``[schedule] cron`` when set, else ``every``; both with the configured jitter."""
    jitter = round(schedule.jitter) or None
    if schedule.cron:
        trigger = CronTrigger.from_crontab(schedule.cron, timezone=UTC)
        trigger.jitter = jitter
        return trigger
    return IntervalTrigger(seconds=schedule.every, jitter=jitter, timezone=UTC)


def misfire_grace(schedule: ScheduleConfig) -> int:
    """How late a run may start (after a suspend, or behind a long cycle) and still happen."""
    return CRON_MISFIRE_GRACE if schedule.cron else max(60, round(schedule.every))


def describe(schedule: ScheduleConfig) -> str:
    when = f"cron '{schedule.cron}' (UTC)" if schedule.cron else f"every {schedule.every:g}s"
    return f"{when}, jitter {schedule.jitter:g}s, full sweep every {schedule.full_sweep:g}s"


class Notifier:
    """systemd's notify protocol: one datagram per message to $NOTIFY_SOCKET (no-op without)."""

    def __init__(self, address: str | None) -> None:
        # "@name" is an abstract-namespace socket: a leading NUL byte on the wire.
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET") or None)

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block: a full socket queue must not stall the main loop.
                sock.sendto("\n".join(lines).encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            if not self._failing:  # once per outage, not once per watchdog ping
                log.warning("systemd.notify_failed", error=str(exc))
            self._failing = True
        else:
            self._failing = False


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Half of WATCHDOG_USEC (as systemd advises), when the watchdog is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


@contextmanager
def daemon_lock(db_path: Path) -> Iterator[None]:
    """One daemon per database: an flock that dies with its process, on a file naming the pid."""
    path = health.daemon_lock_path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise LockedError(
                f"another trial-monitor daemon (pid {pid}) is running on {db_path}"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Daemon:
    """The scheduler, signals, locks and systemd wiring around :func:`poll`."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = utcnow,
        notifier: Notifier | None = None,
        log_stream: TextIO | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.notifier = notifier or Notifier(None)
        #: Where ``run`` sends logs; a reload re-applies [logging] to it (None: leave logging be).
        self.log_stream = log_stream
        self.stop_event = threading.Event()
        self.store: Store | None = None  # the job thread's, opened on the first run
        self._control: Store | None = None  # the main thread's
        self._wake = threading.Event()
        self._reload_requested = False
        self._stop_signal: int | None = None
        self._busy = threading.Lock()
        self._published_next_run: str | None = None
        self._delivering = threading.Lock()
        self._delivery_store: Store | None = None  # the delivery thread's
        # Delivery has its own worker, so alerts keep flowing while a long cycle runs.
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(1), "delivery": ThreadPoolExecutor(1)},
        )
        self.scheduler.add_job(
            self.deliver_job,
            IntervalTrigger(seconds=config.notify.deliver_every, timezone=UTC),
            id=DELIVER_JOB_ID,
            name="alert delivery",
            executor="delivery",
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC),
        )
        self.scheduler.add_job(
            self.run_job,
            make_trigger(config.schedule),
            id=JOB_ID,
            name="poll cycle",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=misfire_grace(config.schedule),
            next_run_time=datetime.now(UTC),  # the first cycle runs at start-up
        )

    # -- the job (worker thread) -----------------------------------------------------------

    def run_job(self) -> None:
        """The scheduled job: one poll under the cycle lock, reported to the log and systemd."""
        with self._busy:
            if self.stop_event.is_set():
                return
            cfg = self.config
            try:
                if self.store is None:
                    self.store = app.open_store(cfg)
                store = self.store
                with ExitStack() as stack:
                    if not self._take_cycle_lock(stack, cfg.database_path):
                        return
                    fetcher = stack.enter_context(app.make_fetcher(cfg, self.sleep))
                    summary = poll(
                        store,
                        fetcher,
                        cfg.schedule,
                        clock=self.clock,
                        should_stop=self.stop_event.is_set,
                    )
            except Stopping:
                log.info("cycle.interrupted", reason="shutting down")
                return
            except MonitorError as exc:
                log.error("cycle.failed", error=str(exc))
                self.notifier.send(f"STATUS=Last cycle failed: {exc}")
                return
            except Exception:
                # The service must outlive one bad cycle; the traceback goes to the log.
                log.exception("cycle.crashed")
                self.notifier.send("STATUS=Last cycle crashed; see the log")
                return
            done = summary.line() if summary else "skipped: registry data unchanged"
            self.notifier.send(f"STATUS={iso(self.clock())}: {done}")
            self._warn_stale(store, cfg.schedule)

    def deliver_job(self) -> None:
        """The delivery job: send the alerts due now from the outbox (its own thread and Store)."""
        with self._delivering:
            if self.stop_event.is_set():
                return
            try:
                if self._delivery_store is None:
                    self._delivery_store = app.open_store(self.config)
                deliver_due(self._delivery_store, self.config, self.clock())
            except MonitorError as exc:
                log.error("notify.pass_failed", error=str(exc))
            except Exception:
                # One bad pass must not stop later ones; the traceback goes to the log.
                log.exception("notify.pass_crashed")

    def sleep(self, seconds: float) -> None:
        """The Fetcher's pace and backoff sleep: on shutdown it wakes and abandons the request."""
        if self.stop_event.wait(seconds):
            raise Stopping("shutting down")

    def _take_cycle_lock(self, stack: ExitStack, db_path: Path) -> bool:
        """Wait for a ``check`` in progress, staying stoppable; False when stopped meanwhile."""
        waiting = False
        while True:
            try:
                stack.enter_context(cycle_lock(db_path, wait=False))
                return True
            except LockedError:
                if not waiting:
                    log.info("cycle.waiting", reason="another process is running a cycle")
                    waiting = True
                if self.stop_event.wait(LOCK_RETRY):
                    return False

    def _warn_stale(self, store: Store, schedule: ScheduleConfig) -> None:
        stale = health.stale_trials(store.trials(), self.clock(), schedule)
        if stale:
            log.warning(
                "health.stale", count=len(stale), trials={t.nct_id: t.reason for t in stale[:20]}
            )

    # -- control (main thread) -------------------------------------------------------------

    def reload(self) -> bool:
        """SIGHUP: adopt a good config.toml and reschedule; refuse a bad one, keep the old."""
        path = self.config.path
        try:
            new = config_module.load(path, required=True)
            if new.database_path != self.config.database_path:
                raise ConfigError(
                    f"{path}: storage.database cannot change while running "
                    f"({self.config.database_path} -> {new.database_path}); restart the "
                    "service to move to another database"
                )
            trigger = make_trigger(new.schedule)
        except ConfigError as exc:
            log.error("config.reload_failed", error=str(exc))
            self.notifier.send(f"STATUS=Config reload refused: {exc}")
            return False
        self.config = new
        if self.log_stream is not None:
            logs.configure(new.logging, stream=self.log_stream)
        self.scheduler.modify_job(JOB_ID, misfire_grace_time=misfire_grace(new.schedule))
        self.scheduler.reschedule_job(JOB_ID, trigger=trigger)
        self.scheduler.reschedule_job(
            DELIVER_JOB_ID,
            trigger=IntervalTrigger(seconds=new.notify.deliver_every, timezone=UTC),
        )
        log.info("config.reloaded", path=str(path), schedule=describe(new.schedule))
        return True

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        """SIGTERM/SIGINT handler: the first asks for a clean stop, the second exits at once."""
        if self.stop_event.is_set():
            os.write(2, b"trial-monitor: second stop signal, exiting at once\n")
            os._exit(128 + signum)
        self._stop_signal = signum
        self.stop_event.set()
        self._wake.set()

    def request_reload(self, signum: int, frame: FrameType | None = None) -> None:
        """SIGHUP handler: the reload itself happens in the main loop, not in the handler."""
        self._reload_requested = True
        self._wake.set()

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT. Raises LockedError when another daemon has the database."""
        db = self.config.database_path
        with daemon_lock(db):
            self._control = app.open_store(self.config)
            handlers: dict[signal.Signals, Callable[[int, FrameType | None], None]] = {
                signal.SIGTERM: self.request_stop,
                signal.SIGINT: self.request_stop,
                signal.SIGHUP: self.request_reload,
            }
            previous = {signum: signal.signal(signum, h) for signum, h in handlers.items()}
            try:
                self._serve()
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

    def _serve(self) -> None:
        self.scheduler.start()
        log.info(
            "daemon.start",
            pid=os.getpid(),
            version=__version__,
            database=str(self.config.database_path),
            config=str(self.config.path),
            schedule=describe(self.config.schedule),
        )
        self.notifier.send("READY=1", f"MAINPID={os.getpid()}", "STATUS=Started")
        ping_every = watchdog_interval()
        next_ping = 0.0
        tick = min(1.0, ping_every) if ping_every else 1.0
        while not self.stop_event.is_set():
            if ping_every and time.monotonic() >= next_ping:
                self.notifier.send("WATCHDOG=1")
                next_ping = time.monotonic() + ping_every
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            self._publish_next_run()
            self._wake.wait(tick)
            self._wake.clear()
        self._shutdown()

    def _publish_next_run(self) -> None:
        """Tell ``status`` when the next run is due (after each run and each reschedule)."""
        job = self.scheduler.get_job(JOB_ID)
        when = iso(job.next_run_time) if job is not None and job.next_run_time else ""
        if when != self._published_next_run:
            self._set_control_meta(health.META_NEXT_RUN, when)
            self._published_next_run = when

    def _set_control_meta(self, key: str, value: str) -> None:
        assert self._control is not None
        try:
            self._control.set_meta(key, value)
        except MonitorError as exc:
            log.warning("daemon.meta_failed", key=key, error=str(exc))

    def _shutdown(self) -> None:
        name = signal.Signals(self._stop_signal).name if self._stop_signal else "request"
        log.info("daemon.stopping", signal=name)
        self.notifier.send("STOPPING=1", "STATUS=Stopping after the trial in hand")
        started = time.monotonic()
        self.scheduler.shutdown(wait=False)
        finished = self._busy.acquire(timeout=STOP_GRACE)
        if finished:
            self._busy.release()
            left = max(0.0, STOP_GRACE - (time.monotonic() - started))
            finished = self._delivering.acquire(timeout=left)
            if finished:
                self._delivering.release()
        self._set_control_meta(health.META_NEXT_RUN, "")
        seconds = round(time.monotonic() - started, 3)
        if not finished:
            log.warning(
                "daemon.stop",
                clean=False,
                seconds=seconds,
                reason=f"a job did not stop within {STOP_GRACE:g}s (stuck in a request); "
                "exiting anyway, every stored trial is its own transaction",
            )
            sys.stdout.flush()
            os._exit(0)
        for store in (self.store, self._delivery_store, self._control):
            if store is not None:
                store.close()
        log.info("daemon.stop", clean=True, seconds=seconds)
