"""Wiring: build the library's objects from a Config, so the CLI, daemon and demo agree."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

from monitor import outbox
from monitor.config import Config
from monitor.errors import UsageError
from monitor.fetch import DEFAULT_USER_AGENT, Fetcher
from monitor.storage import Store

NCT_ID = re.compile(r"^NCT\d{8}$")


def open_store(config: Config) -> Store:
    """The database, with the alert outbox hooked into every record it stores."""
    store = Store(config.database_path, busy_timeout=config.storage.busy_timeout)
    outbox.install(store)
    return store


def make_fetcher(config: Config, sleep: Callable[[float], None] = time.sleep) -> Fetcher:
    """The fetcher for ``[source]``; the daemon passes a sleep that shutdown interrupts."""
    src = config.source
    return Fetcher(
        src.base_url,
        batch_size=src.batch_size,
        timeout=src.timeout,
        pace=src.pace,
        user_agent=src.user_agent or DEFAULT_USER_AGENT,
        max_attempts=src.max_attempts,
        backoff_initial=src.backoff_initial,
        backoff_max=src.backoff_max,
        sleep=sleep,
    )


def parse_ids(values: Iterable[str]) -> list[str]:
    """Upper-case and check every id; one bad id rejects the whole list (nothing half-added)."""
    ids: list[str] = []
    bad: list[str] = []
    for raw in values:
        for token in re.split(r"[\s,]+", raw.strip()):
            if not token:
                continue
            nct = token.upper()
            (ids if NCT_ID.match(nct) else bad).append(nct if NCT_ID.match(nct) else token)
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5]) + (" …" if len(bad) > 5 else "")
        raise UsageError(
            f"not a ClinicalTrials.gov id: {shown}. Ids look like NCT01234567 "
            "('NCT' and 8 digits); nothing was changed."
        )
    return list(dict.fromkeys(ids))
