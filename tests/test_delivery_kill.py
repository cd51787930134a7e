"""A real process killed between sending an alert and recording it: nothing lost, one key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from monitor import app, outbox
from monitor.config import Config
from monitor.cycle import run_cycle
from monitor.delivery import deliver_due
from monitor.fetch import Fetcher
from monitor.standin import StandIn
from monitor.storage import Store, utcnow
from monitor.subscriptions import subscribe
from tests.receivers import alert_config, receiver


def _wait_for(condition: object, seconds: float = 20.0) -> None:
    """Wait for a real subprocess to reach a point (bounded; polls every 20 ms)."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the subprocess never got there"
        time.sleep(0.02)


def _one_pending_alert(
    store: Store, config: Config, fetcher: Fetcher, api: StandIn, url: str
) -> None:
    """A webhook subscriber and one real change (a trial terminated) waiting in the outbox."""
    store.add_trials(["NCT05935098"], utcnow())
    run_cycle(store, fetcher)
    subscribe(
        store,
        config,
        channel="webhook",
        target=f"{url}/in",
        trials=None,
        now=utcnow() - timedelta(seconds=1),
    )
    api.advance("NCT05935098")
    run_cycle(store, fetcher)
    assert outbox.counts(store)["pending"] == 1


def test_a_delivery_killed_after_sending_resends_once_with_the_same_key(
    cfg: Config, api: StandIn, fetcher: Fetcher, tmp_path: Path
) -> None:
    config = alert_config(cfg, timeout=5.0)
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        f'[source]\nbase_url = "{api.base_url}"\n[storage]\ndatabase = "{config.database_path}"\n'
        '[notify]\nallow_private_targets = true\ntimeout = "5s"\n[logging]\nlevel = "error"\n'
    )
    with app.open_store(config) as store, receiver() as hook:
        _one_pending_alert(store, config, fetcher, api, hook.url)

        hook.hold = threading.Event()
        sender = subprocess.Popen(
            [sys.executable, "-m", "monitor", "notify", "deliver", "--config", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: len(hook.requests) == 1)
        os.kill(sender.pid, signal.SIGKILL)  # the alert went out; its outcome was never recorded
        sender.wait(10)
        hook.hold.set()
        hook.hold = None
        assert outbox.counts(store)["sending"] == 1

        assert deliver_due(store, config, utcnow()).sent == 0  # its lease has not run out
        later = utcnow() + timedelta(minutes=10)
        assert deliver_due(store, config, later).sent == 1
        assert deliver_due(store, config, later + timedelta(minutes=10)).sent == 0
        keys = hook.keys()
        assert len(keys) == 2
        assert keys[0] == keys[1]
        assert {json.loads(r.body)["trial"]["nct_id"] for r in hook.requests} == {"NCT05935098"}
        assert outbox.counts(store)["sent"] == 1


def test_a_cycle_that_ended_before_sending_still_delivers(
    cfg: Config, api: StandIn, fetcher: Fetcher, tmp_path: Path
) -> None:
    config = alert_config(cfg)
    with receiver() as hook:
        with app.open_store(config) as store:
            _one_pending_alert(store, config, fetcher, api, hook.url)
        with Store(config.database_path) as reopened:  # a new process after the crash
            assert deliver_due(reopened, config, utcnow()).sent == 1
    assert len(hook.requests) == 1
