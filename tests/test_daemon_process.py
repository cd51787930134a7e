"""``trial-monitor run`` as a real process against a stand-in API in this process.

Start-up cycle, a change seen by a scheduled cycle, one daemon per database, ``status``,
SIGHUP, SIGTERM (idle, mid-cycle, in a retry backoff), a second signal, systemd notify, and
SIGKILL at random moments of cycles with the change log compared against a clean run.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from monitor.standin import StandIn
from monitor.storage import Store, utcnow

pytestmark = pytest.mark.slow


def _load_harness() -> ModuleType:
    """The kill loop lives in the benchmark script, so the test and the stress run agree."""
    path = Path(__file__).parents[1] / "benchmarks" / "kill_stress.py"
    spec = importlib.util.spec_from_file_location("kill_stress", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


@pytest.fixture
def db(tmp_path: Path, api: StandIn) -> Path:
    path = tmp_path / "t.db"
    with Store(path) as store:
        store.add_trials(api.ids(), utcnow())
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=harness.service_env(),
    )


def integrity(db: Path) -> str:
    return str(harness.integrity(db))


def last_cycle(db: Path) -> dict[str, object]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("select * from cycles order by id desc limit 1").fetchone())


class NotifySocket:
    """systemd's side of the notify protocol: a datagram socket read as messages come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except OSError:
                return

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def test_service_end_to_end(tmp_path: Path, api: StandIn, db: Path) -> None:
    config = harness.write_config(tmp_path / "config.toml", api.base_url, db, every="10s")
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {
        **harness.service_env(),
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "1000000",
    }
    service = harness.Service(config, env)
    try:
        first = service.wait_event("cycle.done")
        assert (first["new"], first["failed"]) == (len(api.ids()), 0)

        second = cli("run", "--config", str(config))
        assert second.returncode == 1
        assert (
            f"another trial-monitor daemon (pid {service.proc.pid}) is running on {db}"
            in second.stderr
        )

        status = cli("status", "--config", str(config), "--format", "json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["daemon"] == {"running": True, "pid": service.proc.pid}
        assert report["next_run_at"]
        assert report["last_cycle"]["checked"] == len(api.ids())

        moved = "NCT05935098"
        assert api.advance(moved)
        api.data_timestamp = "2026-09-02T09:00:00"
        changed = service.wait_event("cycle.done", count=2, timeout=30)
        assert (changed["checked"], changed["changed"]) == (len(api.ids()), 1)
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "select count(*) from changes where nct_id = ? and baseline = 0", [moved]
            ).fetchone()[0]
        assert rows > 0

        good = config.read_text()
        config.write_text(good.replace('every = "10s"', 'every = "1s"'))
        service.proc.send_signal(signal.SIGHUP)
        refused = service.wait_event("config.reload_failed")
        assert "schedule.every = '1s' must be at least 10" in refused["error"]
        config.write_text(good.replace('every = "10s"', 'every = "1h"'))
        service.proc.send_signal(signal.SIGHUP)
        assert "every 3600s" in service.wait_event("config.reloaded")["schedule"]

        code, seconds = service.stop(signal.SIGTERM)
        assert code == 0
        assert seconds < 10
    finally:
        if service.proc.poll() is None:
            service.kill()
    notify.close()
    messages = notify.messages
    assert messages[0].startswith("READY=1")
    assert "WATCHDOG=1" in messages
    assert any(m.startswith("STATUS=") and "1 changed" in m for m in messages)
    assert any(m.startswith("STOPPING=1") for m in messages)
    assert [e["event"] for e in service.events[-2:]] == ["daemon.stopping", "daemon.stop"]
    assert integrity(db) == "ok"
    after = cli("status", "--config", str(config))
    assert after.returncode == 3
    assert f"not running (last pid {service.proc.pid})" in after.stdout


def test_sigterm_mid_cycle_stops_after_the_trial_in_hand(
    tmp_path: Path, api: StandIn, db: Path
) -> None:
    config = harness.write_config(tmp_path / "config.toml", api.base_url, db, batch_size=2)
    api.delay(0.3, kind="list", times=100)
    service = harness.Service(config)
    service.wait_event("cycle.start")
    time.sleep(0.5)
    code, seconds = service.stop(signal.SIGTERM)
    assert code == 0
    assert seconds < 10
    done = service.wait_event("cycle.done")
    assert done["stopped"] is True
    assert 0 < done["checked"] < len(api.ids())
    assert last_cycle(db)["status"] == "stopped"
    assert integrity(db) == "ok"


def test_sigterm_wakes_a_retry_backoff(tmp_path: Path, api: StandIn, db: Path) -> None:
    config = harness.write_config(
        tmp_path / "config.toml",
        api.base_url,
        db,
        extra="",
    )
    config.write_text(
        config.read_text()
        .replace('backoff_initial = "0.05s"', 'backoff_initial = "120s"')
        .replace('backoff_max = "0.2s"', 'backoff_max = "120s"')
    )
    api.fail_with(503, kind="list", times=100)
    service = harness.Service(config)
    retry = service.wait_event("fetch.retry")
    assert retry["wait"] >= 0
    code, seconds = service.stop(signal.SIGTERM)
    assert code == 0
    assert seconds < 2
    assert service.named("cycle.interrupted")
    assert last_cycle(db)["status"] == "stopped"
    with sqlite3.connect(db) as conn:
        assert conn.execute("select max(failures) from trials").fetchone()[0] == 0


def test_a_second_signal_exits_at_once(tmp_path: Path, api: StandIn, db: Path) -> None:
    config = harness.write_config(tmp_path / "config.toml", api.base_url, db)
    api.delay(30, kind="list")  # the daemon is stuck waiting for this answer
    service = harness.Service(config)
    service.wait_event("cycle.start")
    time.sleep(0.3)
    service.proc.send_signal(signal.SIGTERM)
    service.wait_event("daemon.stopping")
    code, seconds = service.stop(signal.SIGINT)
    assert code == 128 + signal.SIGINT
    assert seconds < 2
    assert integrity(db) == "ok"


def test_a_cycle_stuck_in_a_request_still_exits_0_within_10_seconds(
    tmp_path: Path, api: StandIn, db: Path
) -> None:
    config = harness.write_config(tmp_path / "config.toml", api.base_url, db)
    api.delay(30, kind="list")
    service = harness.Service(config)
    service.wait_event("cycle.start")
    time.sleep(0.3)
    code, seconds = service.stop(signal.SIGTERM)
    assert code == 0
    assert 7 < seconds < 10
    assert service.named("daemon.stop")[0]["clean"] is False
    assert integrity(db) == "ok"


def test_sigkill_at_random_moments_never_loses_breaks_or_doubles_a_change(
    tmp_path: Path,
) -> None:
    with StandIn() as api:
        run = harness.KillHarness(tmp_path, api, clones=20, batch_size=10, delay=0.03, seed=7)
        try:
            report = run.run(kills=20, max_seconds=60)
        finally:
            run.close()
    print(f"{len(run.ids)} trials; {report.line()}")
    assert report.problems == []
    assert report.kills == 20
    assert report.mid_cycle >= 15
    assert report.change_rows > 2000
    assert max(report.sigterm_seconds) < 10
