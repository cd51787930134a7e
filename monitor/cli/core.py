"""Commands over the registry and the change log: add, remove, list, check, changes, show,
history, demo."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import click

from monitor import app, config, logs, render
from monitor.cli.base import Context, clean, cli, with_context
from monitor.config import Config
from monitor.cycle import CycleSummary, cycle_lock, run_cycle
from monitor.errors import MonitorError, UsageError
from monitor.significance import LEVELS, at_least
from monitor.storage import Store, utcnow
from monitor.subscriptions import context_of, level_of


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--file", "files", multiple=True, type=click.File(), help="Read ids from a file.")
@with_context
def add(ctx: Context, ids: tuple[str, ...], files: tuple[Any, ...]) -> None:
    """Watch trials (NCT ids, upper-cased and checked; all or nothing)."""
    wanted = app.parse_ids([*ids, *(f.read() for f in files)])
    if not wanted:
        raise UsageError("no trial ids given: pass NCT ids or --file FILE")
    added = ctx.store.add_trials(wanted, utcnow())
    skipped = len(wanted) - len(added)
    click.echo(
        f"Added {len(added)} trial{'s' if len(added) != 1 else ''}"
        + (f" ({skipped} already watched)" if skipped else "")
        + ". Run `trial-monitor check` to fetch them."
    )


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@with_context
def remove(ctx: Context, ids: tuple[str, ...]) -> None:
    """Stop watching trials (their recorded history is kept)."""
    wanted = app.parse_ids(ids)
    removed = ctx.store.remove_trials(wanted)
    missing = sorted(set(wanted) - set(removed))
    click.echo(f"Removed {len(removed)} trial{'s' if len(removed) != 1 else ''}.")
    if missing:
        click.echo(f"Not watched: {', '.join(missing)}", err=True)


@cli.command(name="list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@with_context
def list_(ctx: Context, fmt: str) -> None:
    """List watched trials and their state."""
    trials = ctx.store.trials()
    if fmt == "json":
        click.echo(render.trials_json(trials))
    elif trials:
        click.echo(render.trials_table(trials))
    else:
        click.echo("No trials watched yet. Add some with `trial-monitor add NCT...`.")


@cli.command()
@click.argument("ids", nargs=-1)
@with_context
def check(ctx: Context, ids: tuple[str, ...]) -> None:
    """Run one poll cycle now and print a one-line summary."""
    wanted = app.parse_ids(ids) or None
    summary = run_check(ctx.config, ctx.store, wanted)
    click.echo(summary.line())


def run_check(cfg: Config, store: Store, ids: list[str] | None) -> CycleSummary:
    """One cycle under the cycle lock, with a progress bar when stderr is a terminal."""
    total = len(store.trials(ids))

    def waiting() -> None:
        click.echo("Another trial-monitor process is running a cycle; waiting for it…", err=True)

    with (
        cycle_lock(cfg.database_path, on_wait=waiting),
        app.make_fetcher(cfg) as fetcher,
        _progress(total) as advance,
    ):
        return run_cycle(store, fetcher, ids, progress=advance)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    if not sys.stderr.isatty() or total == 0:
        yield lambda n: None
        return
    with click.progressbar(length=total, label="Checking trials", file=sys.stderr) as bar:
        yield bar.update


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--since", help="Only changes detected on or after this date (YYYY-MM-DD).")
@click.option("--field", "field_glob", help="Only fields matching this glob, e.g. 'status.*'.")
@click.option(
    "--significance",
    "minimum",
    type=click.Choice(LEVELS),
    help="Only changes at least this significant (major > minor > admin).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md"]), default="table")
@with_context
def changes(
    ctx: Context,
    ids: tuple[str, ...],
    since: str | None,
    field_glob: str | None,
    minimum: str | None,
    fmt: str,
) -> None:
    """List recorded changes, oldest first."""
    rows = ctx.store.changes(app.parse_ids(ids) or None, since=_since(since), field_glob=field_glob)
    if minimum:
        rows = [r for r in rows if at_least(level_of(r), minimum)]
    if fmt == "json":
        click.echo(render.changes_json(rows))
    elif fmt == "md":
        titles = {t.nct_id: t.title for t in ctx.store.trials()}
        click.echo(render.changes_md(rows, titles, partial(context_of, ctx.store)))
    elif rows:
        click.echo(render.changes_table(rows))
    else:
        click.echo(
            "No changes recorded"
            + (" matching these filters." if ids or since or field_glob or minimum else " yet.")
        )


def _since(text: str | None) -> str | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is not a date like 2026-05-12") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@cli.command()
@click.argument("nct_id")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md")
@with_context
def show(ctx: Context, nct_id: str, fmt: str) -> None:
    """Show a trial's page with its recent field changes."""
    trial = _known_trial(ctx.store, nct_id)
    if trial.version_id is None:
        raise UsageError(f"{trial.nct_id} has not been fetched yet: run `trial-monitor check`")
    study = ctx.store.version_study(trial.version_id)
    rows = ctx.store.changes([trial.nct_id])
    if fmt == "json":
        click.echo(render.trial_json(trial, study, rows))
    else:
        click.echo(render.trial_page(trial, study, rows, utcnow()))


@cli.command()
@click.argument("nct_id")
@with_context
def history(ctx: Context, nct_id: str) -> None:
    """List the versions of a trial seen so far and which field groups changed."""
    trial = _known_trial(ctx.store, nct_id)
    versions = ctx.store.versions(trial.nct_id)
    if not versions:
        click.echo(f"No versions of {trial.nct_id} stored yet.")
        return
    rows = [
        (
            v.seen_at[:16].replace("T", " "),
            v.hash[:12],
            v.last_update_post_date or "",
            f"{v.stored_size}/{v.raw_size}",
            "(first seen)" if i == 0 else ", ".join(ctx.store.groups_changed(v.id)) or "—",
        )
        for i, v in enumerate(versions)
    ]
    click.echo(
        render.table(rows, ["seen (UTC)", "content hash", "last update", "bytes", "changed"])
    )


def _known_trial(store: Store, nct_id: str) -> Any:
    (wanted,) = app.parse_ids([nct_id]) or [nct_id]
    trial = store.trial(wanted)
    if trial is None:
        raise UsageError(f"{wanted} is not watched: add it with `trial-monitor add {wanted}`")
    return trial


@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo database here instead of a temporary folder.",
)
def demo(workdir: Path | None) -> None:
    """Play recorded real versions through a local stand-in of the API (no network)."""
    from monitor.demo import run_demo

    logs.configure(config.LoggingConfig(level="warning"))
    try:
        run_demo(click.echo, workdir)
    except MonitorError as exc:
        raise clean(exc) from None
