"""Shared fixtures: a real stand-in API on loopback serving recorded data, and a config for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from monitor import app
from monitor.config import Config, SourceConfig, StorageConfig
from monitor.fetch import Fetcher
from monitor.standin import StandIn
from monitor.storage import Store

FIXTURES = Path(__file__).parent / "fixtures"
HISTORY = Path(__file__).parent.parent / "monitor" / "demo_data" / "history"


def study(nct_id: str) -> dict[str, Any]:
    """A full recorded record from tests/fixtures/studies."""
    data: dict[str, Any] = json.loads((FIXTURES / "studies" / f"{nct_id}.json").read_text())
    return data


def history_versions(nct_id: str) -> list[dict[str, Any]]:
    """The successive recorded versions of one trial, oldest first."""
    return [json.loads(p.read_text()) for p in sorted((HISTORY / nct_id).glob("*.json"))]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands configure structlog globally; each test starts from the defaults again."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def api() -> Iterator[StandIn]:
    """A stand-in API serving the first recorded version of every history trial."""
    with StandIn() as server:
        server.load_history(HISTORY)
        yield server


def make_config(base_url: str, db: Path, **source: Any) -> Config:
    """A config for tests: no pacing and near-instant backoff, so nothing sleeps for long."""
    settings: dict[str, Any] = {
        "pace": 0.0,
        "backoff_initial": 0.001,
        "backoff_max": 0.01,
        "max_attempts": 3,
        "timeout": 5.0,
    }
    settings.update(source)
    return Config(
        source=SourceConfig(base_url=base_url, **settings),
        storage=StorageConfig(database=str(db)),
    )


@pytest.fixture
def cfg(api: StandIn, tmp_path: Path) -> Config:
    return make_config(api.base_url, tmp_path / "monitor.db")


@pytest.fixture
def store(cfg: Config) -> Iterator[Store]:
    with app.open_store(cfg) as opened:
        yield opened


@pytest.fixture
def fetcher(cfg: Config) -> Iterator[Fetcher]:
    with app.make_fetcher(cfg) as client:
        yield client
