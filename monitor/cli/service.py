"""Commands for the background service: run, status."""

from __future__ import annotations

import sys

import click

from monitor import health, logs
from monitor.cli.base import Context, cli, with_context
from monitor.daemon import Daemon, Notifier
from monitor.errors import StorageError


@cli.command()
@with_context
def run(ctx: Context) -> None:
    """Run the service in the foreground until SIGTERM or SIGINT (SIGHUP reloads the config).

    Logs go to stdout, as JSON lines when stdout is not a terminal (journald keeps them).
    Exits 1 when another daemon already runs on the same database.
    """
    logs.configure(ctx.config.logging, stream=sys.stdout)
    Daemon(ctx.config, notifier=Notifier.from_env(), log_stream=sys.stdout).run()


@cli.command()
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@with_context
def status(ctx: Context, fmt: str) -> None:
    """Show the service's health; usable as a health check.

    Exit codes: 0 ok; 3 no daemon is running on the database; 4 the daemon runs but some
    trials are stale (fetch failed in [schedule] stale_failures consecutive cycles, or no
    successful fetch for [schedule] stale_after); 1 no database or another error.
    """
    db = ctx.config.database_path
    if not db.exists():
        raise StorageError(
            f"{db}: no database yet. Start the service (`trial-monitor run`) or run "
            "`trial-monitor check` first."
        )
    report = health.build(ctx.store, ctx.config)
    click.echo(report.to_json() if fmt == "json" else report.to_text())
    if report.exit_code != health.EXIT_OK:
        click.get_current_context().exit(report.exit_code)
