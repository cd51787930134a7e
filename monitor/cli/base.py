"""Shared pieces of the command line: the group, ``--config``, clean errors.

Every command takes ``--config PATH`` (or ``TRIAL_MONITOR_CONFIG``). A MonitorError becomes one
clean message and its exit code (2 for bad input); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from monitor import __version__, app, config, logs
from monitor.config import Config
from monitor.errors import MonitorError
from monitor.storage import Store

F = TypeVar("F", bound=Callable[..., Any])


class CleanError(click.ClickException):
    """A MonitorError shown as ``Error: message``, without a traceback."""


class CleanUsageError(CleanError):
    """Bad input from the user: nothing was changed."""

    exit_code = 2


def clean(error: MonitorError) -> CleanError:
    return (CleanUsageError if error.exit_code == 2 else CleanError)(str(error))


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MonitorError as exc:
            raise clean(exc) from None


class Context:
    """Per-command state: the config, and the store opened on first use."""

    def __init__(self, config_path: str | None) -> None:
        self.config: Config = config.load(config_path)
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = app.open_store(self.config)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def with_context(func: F) -> F:
    """Add ``--config`` to a command and hand it a Context as ``ctx``."""

    @click.option(
        "--config",
        "config_path",
        envvar=config.ENV_VAR,
        type=click.Path(dir_okay=False),
        help="Config file (default ./config.toml; env TRIAL_MONITOR_CONFIG).",
    )
    @functools.wraps(func)
    def wrapper(config_path: str | None, **kwargs: Any) -> Any:
        ctx = Context(config_path)
        logs.configure(ctx.config.logging)
        try:
            return func(ctx=ctx, **kwargs)
        finally:
            ctx.close()

    return wrapper  # type: ignore[return-value]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trial-monitor")
def cli() -> None:
    """Watch ClinicalTrials.gov trials and record every field-level change."""
