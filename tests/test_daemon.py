"""The daemon's job functions, reload, locks, health and systemd notify, with controlled time."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from structlog.testing import capture_logs

from monitor import app, config, health
from monitor.config import Config, ScheduleConfig, SourceConfig, StorageConfig
from monitor.cycle import cycle_lock
from monitor.daemon import (
    META_DATA_TIMESTAMP,
    META_LAST_FULL,
    Daemon,
    Notifier,
    Stopping,
    daemon_lock,
    make_trigger,
    poll,
    watchdog_interval,
)
from monitor.errors import LockedError
from monitor.fetch import Fetcher
from monitor.standin import StandIn
from monitor.storage import Store
from monitor.subscriptions import subscribe
from tests.receivers import alert_config, receiver

START = datetime(2026, 9, 1, 6, 0, tzinfo=UTC)


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cfg(tmp_path: Path, api: StandIn) -> Config:
    return Config(
        source=SourceConfig(base_url=api.base_url, pace=0.0, backoff_initial=0.0),
        storage=StorageConfig(database=str(tmp_path / "t.db")),
        schedule=ScheduleConfig(every=600.0, jitter=0.0),
    )


@pytest.fixture
def store(cfg: Config, api: StandIn, clock: FakeClock) -> Iterator[Store]:
    with Store(cfg.database_path) as s:
        s.add_trials(api.ids()[:10], clock())
        yield s


@pytest.fixture
def fetcher(cfg: Config) -> Iterator[Fetcher]:
    slept: list[float] = []
    with app.make_fetcher(cfg, slept.append) as f:
        yield f


def listed_ids(api: StandIn) -> list[str]:
    """Every id asked for in list requests since the log was cleared."""
    return [
        nct_id
        for r in api.requests
        if r.path.endswith("/studies")
        for nct_id in r.query["filter.ids"][0].split(",")
    ]


def paths(api: StandIn) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in api.requests]


# -- the version gate ---------------------------------------------------------------------


def test_first_poll_is_full_and_remembers_the_data_timestamp(
    store: Store, fetcher: Fetcher, cfg: Config, api: StandIn, clock: FakeClock
) -> None:
    summary = poll(store, fetcher, cfg.schedule, clock=clock)
    assert summary is not None
    assert (summary.checked, summary.new) == (10, 10)
    assert store.get_meta(META_DATA_TIMESTAMP) == api.data_timestamp
    assert store.get_meta(META_LAST_FULL) == "2026-09-01T06:00:00Z"


def test_unchanged_data_timestamp_skips_with_only_the_version_request(
    store: Store, fetcher: Fetcher, cfg: Config, api: StandIn, clock: FakeClock
) -> None:
    poll(store, fetcher, cfg.schedule, clock=clock)
    cycles = store.last_cycle()
    api.clear_log()
    clock.advance(hours=6)
    with capture_logs() as logs:
        assert poll(store, fetcher, cfg.schedule, clock=clock) is None
    assert paths(api) == ["version"]
    assert store.last_cycle() == cycles
    skipped = [e for e in logs if e["event"] == "cycle.skipped"]
    assert skipped
    assert skipped[0]["reason"] == f"registry data unchanged since {api.data_timestamp}"


def test_unchanged_data_fetches_only_the_trials_added_since(
    store: Store, fetcher: Fetcher, cfg: Config, api: StandIn, clock: FakeClock
) -> None:
    poll(store, fetcher, cfg.schedule, clock=clock)
    added = api.ids()[10:12]
    store.add_trials(added, clock())
    api.clear_log()
    clock.advance(hours=6)
    summary = poll(store, fetcher, cfg.schedule, clock=clock)
    assert summary is not None
    assert (summary.trials, summary.new) == (2, 2)
    assert sorted(listed_ids(api)) == sorted(added)
    assert store.get_meta(META_LAST_FULL) == "2026-09-01T06:00:00Z"  # not a full cycle


def test_unchanged_data_retries_the_trials_whose_fetch_failed(
    store: Store, fetcher: Fetcher, cfg: Config, api: StandIn, clock: FakeClock
) -> None:
    poll(store, fetcher, cfg.schedule, clock=clock)
    failing = api.ids()[3]
    store.mark_failed(failing, "HTTP 503 after 5 attempts", clock())
    api.clear_log()
    poll(store, fetcher, cfg.schedule, clock=clock)
    assert listed_ids(api) == [failing]
    trial = store.trial(failing)
    assert trial is not None
    assert trial.failures == 0


def test_a_moved_data_timestamp_refetches_everything_and_records_the_change(
    store: Store, fetcher: Fetcher, cfg: Config, api: StandIn, clock: FakeClock
) -> None:
    poll(store, fetcher, cfg.schedule, clock=clock)
    moved = api.ids()[0]
    assert api.advance(moved)
    api.data_timestamp = "2026-09-02T09:00:00"
    clock.advance(hours=6)
    api.clear_log()
    summary = poll(store, fetcher, cfg.schedule, clock=clock)
    assert summary is not None
    assert (summary.checked, summary.changed) == (10, 1)
    assert sorted(listed_ids(api)) == sorted(api.ids()[:10])
    assert [c for c in store.changes([moved]) if not c.baseline]
    assert store.get_meta(META_DATA_TIMESTAMP) == "2026-09-02T09:00:00"


def test_full_sweep_when_due_catches_edits_that_kept_the_data_timestamp(
    store: Store, fetcher: Fetcher, cfg: Config, api: StandIn, clock: FakeClock
) -> None:
    poll(store, fetcher, cfg.schedule, clock=clock)
    edited = api.ids()[1]
    assert api.advance(edited)  # the registry edits without a new dataTimestamp
    clock.advance(hours=23)
    assert poll(store, fetcher, cfg.schedule, clock=clock) is None
    clock.advance(hours=1)
    with capture_logs() as logs:
        summary = poll(store, fetcher, cfg.schedule, clock=clock)
    assert summary is not None
    assert summary.changed == 1
    planned = next(e for e in logs if e["event"] == "cycle.planned")
    assert planned["kind"] == "full"
    assert planned["reason"].startswith("full sweep due")
    assert store.get_meta(META_LAST_FULL) == "2026-09-02T06:00:00Z"


def test_a_failed_version_check_runs_a_full_cycle_and_keeps_the_old_timestamp(
    store: Store, fetcher: Fetcher, cfg: Config, api: StandIn, clock: FakeClock
) -> None:
    poll(store, fetcher, cfg.schedule, clock=clock)
    api.fail_with(503, "down for maintenance", kind="version", times=cfg.source.max_attempts)
    api.data_timestamp = "2026-09-02T09:00:00"
    clock.advance(hours=6)
    with capture_logs() as logs:
        summary = poll(store, fetcher, cfg.schedule, clock=clock)
    assert summary is not None
    assert summary.checked == 10
    assert any(e["event"] == "cycle.version_failed" for e in logs)
    # Unknown, so not remembered: the next run with a working /version does a full cycle.
    assert store.get_meta(META_DATA_TIMESTAMP) == "2026-08-19T09:00:06"


def test_a_stopped_full_cycle_is_not_remembered(
    store: Store, fetcher: Fetcher, cfg: Config, clock: FakeClock
) -> None:
    summary = poll(store, fetcher, cfg.schedule, clock=clock, should_stop=lambda: True)
    assert summary is not None
    assert summary.stopped
    assert summary.checked == 1  # the trial in hand, then stop
    assert store.get_meta(META_LAST_FULL) is None
    again = poll(store, fetcher, cfg.schedule, clock=clock)
    assert again is not None
    assert again.checked == 10


# -- shutdown wakes a retry backoff -------------------------------------------------------


def test_shutdown_interrupts_a_retry_backoff_without_marking_trials_failed(
    cfg: Config, store: Store, api: StandIn, clock: FakeClock
) -> None:
    daemon = Daemon(replace(cfg, source=replace(cfg.source, backoff_initial=3600.0)))
    api.fail_with(503, kind="list", times=10)
    daemon.stop_event.set()  # SIGTERM arrived while the first request was in flight
    with app.make_fetcher(daemon.config, daemon.sleep) as fetcher, pytest.raises(Stopping):
        poll(store, fetcher, cfg.schedule, clock=clock, should_stop=daemon.stop_event.is_set)
    last = store.last_cycle()
    assert last is not None
    assert last["status"] == "stopped"
    assert all(t.failures == 0 for t in store.trials())
    assert store.get_meta(META_LAST_FULL) is None


def test_run_job_reports_to_systemd_and_skips_after_stop(
    cfg: Config, store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    with notify_socket(tmp_path) as (sock, address):
        daemon = Daemon(cfg, clock=clock, notifier=Notifier(address))
        daemon.run_job()
        status = sock.recv(4096).decode()
        assert status.startswith("STATUS=2026-09-01T06:00:00Z: Checked 10 of 10 trials")
        daemon.stop_event.set()
        with capture_logs() as logs:
            daemon.run_job()
        assert logs == []
    assert daemon.store is not None
    daemon.store.close()


def test_the_job_waits_for_a_check_in_progress_but_stays_stoppable(
    cfg: Config, store: Store
) -> None:
    daemon = Daemon(cfg)
    daemon.stop_event.set()
    with (
        cycle_lock(cfg.database_path, wait=False),
        ExitStack() as stack,
        capture_logs() as logs,
    ):
        assert daemon._take_cycle_lock(stack, cfg.database_path) is False
    assert [e["event"] for e in logs] == ["cycle.waiting"]


def test_signal_handlers_only_set_flags(cfg: Config) -> None:
    daemon = Daemon(cfg)
    daemon.request_reload(signal.SIGHUP)
    assert daemon._reload_requested
    assert not daemon.stop_event.is_set()
    daemon.request_stop(signal.SIGTERM)
    assert daemon.stop_event.is_set()


# -- schedule and reload ------------------------------------------------------------------


def test_cron_wins_over_every_and_both_get_the_jitter() -> None:
    interval = make_trigger(ScheduleConfig(every=3600.0, jitter=90.0))
    assert isinstance(interval, IntervalTrigger)
    assert (interval.interval_length, interval.jitter) == (3600, 90)
    cron = make_trigger(ScheduleConfig(every=3600.0, cron="30 6 * * *", jitter=90.0))
    assert isinstance(cron, CronTrigger)
    assert cron.jitter == 90
    after = datetime(2026, 9, 1, 7, 0, tzinfo=UTC)
    cron.jitter = None
    assert cron.get_next_fire_time(None, after) == datetime(2026, 9, 2, 6, 30, tzinfo=UTC)


def test_the_poll_job_never_overlaps_and_runs_at_start_up(cfg: Config) -> None:
    job = Daemon(cfg).scheduler.get_job("poll")
    assert (job.coalesce, job.max_instances) == (True, 1)
    assert job.misfire_grace_time == 600
    assert job.next_run_time <= datetime.now(UTC)


def write_config(path: Path, cfg: Config, schedule: str) -> Config:
    path.write_text(
        f'[source]\nbase_url = "{cfg.source.base_url}"\n'
        f'[storage]\ndatabase = "{cfg.storage.database}"\n'
        f"[schedule]\n{schedule}\n"
    )
    return config.load(path)


def test_reload_adopts_a_good_config_and_reschedules(cfg: Config, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    daemon = Daemon(write_config(path, cfg, 'every = "10m"'))
    write_config(path, cfg, 'cron = "0 */2 * * *"\njitter = "0s"')
    with capture_logs() as logs:
        assert daemon.reload() is True
    assert daemon.config.schedule.cron == "0 */2 * * *"
    job = daemon.scheduler.get_job("poll")
    assert isinstance(job.trigger, CronTrigger)
    assert job.misfire_grace_time == 3600
    assert [e["event"] for e in logs] == ["config.reloaded"]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ('every = "1s"', "schedule.every = '1s' must be at least 10"),
        ('cron = "61 * * * *"', "is not a crontab line"),
        ("every = ", "not valid TOML"),
    ],
)
def test_reload_refuses_a_bad_config_and_keeps_the_old(
    cfg: Config, tmp_path: Path, schedule: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    daemon = Daemon(write_config(path, cfg, 'every = "10m"'))
    before = daemon.config
    path.write_text(path.read_text().replace('every = "10m"', schedule))
    with capture_logs() as logs:
        assert daemon.reload() is False
    assert daemon.config is before
    assert isinstance(daemon.scheduler.get_job("poll").trigger, IntervalTrigger)
    failed = [e for e in logs if e["event"] == "config.reload_failed"]
    assert len(failed) == 1
    assert message in failed[0]["error"]


def test_reload_refuses_to_move_the_database(cfg: Config, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    daemon = Daemon(write_config(path, cfg, 'every = "10m"'))
    moved = replace(cfg, storage=StorageConfig(database=str(tmp_path / "other.db")))
    write_config(path, moved, 'every = "10m"')
    with capture_logs() as logs:
        assert daemon.reload() is False
    assert "storage.database cannot change while running" in logs[0]["error"]


# -- locks ----------------------------------------------------------------------------------


def test_a_second_daemon_on_the_same_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    assert health.daemon_state(db) == health.DaemonState(running=False, pid=None)
    with daemon_lock(db):
        state = health.daemon_state(db)
        assert state.running
        assert state.pid is not None
        with pytest.raises(LockedError) as refused, daemon_lock(db):
            pass  # pragma: no cover
        assert str(refused.value) == (
            f"another trial-monitor daemon (pid {state.pid}) is running on {db}"
        )
    after = health.daemon_state(db)
    assert (after.running, after.pid) == (False, state.pid)


# -- health ---------------------------------------------------------------------------------


def test_stale_trials_by_failures_and_by_age(
    store: Store, fetcher: Fetcher, cfg: Config, api: StandIn, clock: FakeClock
) -> None:
    poll(store, fetcher, cfg.schedule, clock=clock)
    ids = api.ids()
    for _ in range(cfg.schedule.stale_failures):
        store.mark_failed(ids[0], "HTTP 503 after 5 attempts", clock())
    store.mark_failed(ids[1], "timeout after 5 attempts", clock())
    store.add_trials([ids[10]], clock())
    now = clock.now + timedelta(days=1)
    assert [t.nct_id for t in health.stale_trials(store.trials(), now, cfg.schedule)] == [ids[0]]
    later = clock.now + timedelta(days=3, seconds=1)
    stale = {t.nct_id: t.reason for t in health.stale_trials(store.trials(), later, cfg.schedule)}
    assert set(stale) == set(ids[:11])
    assert stale[ids[0]] == "fetch failed in 5 consecutive cycles"
    assert stale[ids[2]] == "no successful fetch since 2026-09-01T06:00:00Z"
    assert stale[ids[10]].startswith("never fetched since it was added at")


def test_a_trial_gone_from_the_registry_is_not_stale(store: Store, cfg: Config) -> None:
    nct_id = store.trials()[0].nct_id
    store.mark_not_found(nct_id, None, START)
    far = START + timedelta(days=30)
    assert nct_id not in {t.nct_id for t in health.stale_trials(store.trials(), far, cfg.schedule)}


def test_health_report_and_exit_codes(
    store: Store, fetcher: Fetcher, cfg: Config, api: StandIn, clock: FakeClock
) -> None:
    poll(store, fetcher, cfg.schedule, clock=clock)
    store.mark_failed(api.ids()[0], "HTTP 503 after 5 attempts", clock())
    store.add_trials([api.ids()[10]], clock())
    store.set_meta(health.META_NEXT_RUN, "2026-09-01T12:00:00Z")
    down = health.build(store, cfg, clock.now)
    assert down.exit_code == health.EXIT_DAEMON_DOWN
    assert down.last_cycle is not None
    assert (down.last_cycle.checked, down.last_cycle.requests) == (10, 1)
    assert down.never_fetched == [api.ids()[10]]
    assert [t.nct_id for t in down.failing] == [api.ids()[0]]
    assert down.next_run_at == "2026-09-01T12:00:00Z"
    assert down.database_bytes > 0
    with daemon_lock(cfg.database_path):
        ok = health.build(store, cfg, clock.now)
        stale = health.build(store, cfg, clock.now + timedelta(days=4))
    assert ok.exit_code == health.EXIT_OK
    assert stale.exit_code == health.EXIT_STALE
    data = stale.to_dict()
    assert (data["status"], data["exit_code"], len(data["stale"])) == ("stale", 4, 11)
    assert data["daemon"]["running"] is True
    text = ok.to_text()
    assert "Daemon      running (pid " in text
    assert "Trials      11 watched, 1 never fetched, 1 failing, 0 stale" in text
    assert f"failing   {api.ids()[0]} since 2026-09-01T06:00:00Z (1 failed cycle)" in text
    assert text.endswith("Status      OK")


def test_status_command_exit_codes(
    store: Store, fetcher: Fetcher, cfg: Config, tmp_path: Path, clock: FakeClock
) -> None:
    from click.testing import CliRunner

    from monitor.cli import cli

    path = write_config(tmp_path / "config.toml", cfg, 'every = "10m"').path
    assert path is not None
    missing = write_config(
        tmp_path / "missing.toml",
        replace(cfg, storage=StorageConfig(database=str(tmp_path / "none.db"))),
        'every = "10m"',
    ).path
    runner = CliRunner()
    result = runner.invoke(cli, ["status", "--config", str(missing)])
    assert result.exit_code == 1
    assert "no database yet" in result.output
    assert not (tmp_path / "none.db").exists()
    poll(store, fetcher, cfg.schedule)
    result = runner.invoke(cli, ["status", "--config", str(path)])
    assert result.exit_code == health.EXIT_DAEMON_DOWN
    assert "Status      DAEMON DOWN" in result.output
    with daemon_lock(cfg.database_path):
        result = runner.invoke(cli, ["status", "--config", str(path), "--format", "json"])
    assert result.exit_code == health.EXIT_OK, result.output


# -- systemd ---------------------------------------------------------------------------------


class notify_socket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"

    def __enter__(self) -> tuple[socket.socket, str]:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(5)
        return self.sock, str(self.path)

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_notifier_sends_datagrams_to_a_path_and_to_an_abstract_socket(tmp_path: Path) -> None:
    with notify_socket(tmp_path) as (sock, address):
        Notifier.from_env({"NOTIFY_SOCKET": address}).send("READY=1", "STATUS=Started")
        assert sock.recv(100) == b"READY=1\nSTATUS=Started"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with abstract:
        name = f"trial-monitor-test-{id(abstract)}"
        abstract.bind("\0" + name)
        abstract.settimeout(5)
        Notifier(f"@{name}").send("STOPPING=1")
        assert abstract.recv(100) == b"STOPPING=1"
    Notifier(None).send("READY=1")  # outside systemd: nothing, no error


def test_notify_failure_is_logged_not_raised(tmp_path: Path) -> None:
    with capture_logs() as logs:
        Notifier(str(tmp_path / "missing.sock")).send("READY=1")
    assert logs[0]["event"] == "systemd.notify_failed"


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    import os

    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    mine = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 2.0


def test_the_delivery_job_sends_once_what_the_poll_job_recorded(
    cfg: Config, store: Store, api: StandIn, clock: FakeClock
) -> None:
    config = alert_config(cfg)
    with receiver() as hook:
        subscribe(
            store,
            config,
            channel="webhook",
            target=f"{hook.url}/alerts",
            trials=["NCT05935098"],
            now=clock(),
        )
        daemon = Daemon(config, clock=clock)
        daemon.run_job()
        daemon.deliver_job()
        assert hook.requests == []  # the baseline never alerts
        clock.advance(hours=1)
        for nct_id in api.ids()[:10]:
            api.advance(nct_id)
        api.data_timestamp = "2026-09-02T09:00:00"
        daemon.run_job()
        daemon.deliver_job()
        daemon.deliver_job()
    assert [json.loads(r.body)["trial"]["nct_id"] for r in hook.requests] == ["NCT05935098"]
    for opened in (daemon.store, daemon._delivery_store):
        assert opened is not None
        opened.close()
