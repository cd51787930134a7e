"""Logs: JSON lines off a terminal, namespaced events with key-value fields."""

from __future__ import annotations

import io
import json

import structlog
from structlog.testing import capture_logs

from monitor.config import LoggingConfig
from monitor.cycle import run_cycle
from monitor.fetch import Fetcher
from monitor.logs import configure
from monitor.standin import StandIn
from monitor.storage import Store, utcnow


def test_logs_are_json_lines_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    configure(LoggingConfig(format="auto", level="info"), stream=out)
    try:
        structlog.get_logger().info("cycle.done", checked=3)
        structlog.get_logger().debug("fetch.request", url="x")
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "cycle.done"
    assert event["checked"] == 3
    assert event["level"] == "info"
    assert event["timestamp"].endswith("Z")


def test_a_cycle_logs_its_start_and_its_counts(
    store: Store, fetcher: Fetcher, api: StandIn
) -> None:
    store.add_trials(["NCT05935098", "NCT05289492"], utcnow())
    with capture_logs() as logs:
        run_cycle(store, fetcher)
    events = {e["event"]: e for e in logs}
    assert events["cycle.start"]["trials"] == 2
    done = events["cycle.done"]
    assert (done["checked"], done["new"], done["changed"], done["requests"]) == (2, 2, 0, 1)
