"""Commands for alerts: subscribe, unsubscribe, subscriptions, notify test|deliver, outbox."""

from __future__ import annotations

import json

import click

from monitor import app, outbox, render
from monitor.channels import channel_help, sample_alert
from monitor.cli.base import Context, cli, with_context
from monitor.delivery import deliver_due, send_alert
from monitor.errors import UsageError
from monitor.significance import LEVELS
from monitor.storage import utcnow
from monitor.subscriptions import DIGESTS, Subscription, get, subscribe, subscriptions
from monitor.subscriptions import unsubscribe as remove_subscription

FORMAT = click.Choice(["table", "json"])


def _one_of(**given: str | None) -> tuple[str, str]:
    """The single target option given; two or none is a usage error."""
    chosen = [(kind, value) for kind, value in given.items() if value]
    if len(chosen) != 1:
        raise UsageError(
            "give exactly one target: --email ADDR, --webhook URL or --apprise URL; "
            "nothing was stored"
        )
    return chosen[0]


def _summary(sub: Subscription) -> str:
    trials = "all watched trials" if sub.trials is None else ", ".join(sub.trials)
    fields = ", ".join(sub.fields) or "every field"
    return (
        f"{sub.channel} to {sub.shown_target()}; {trials}; {fields}; "
        f"{sub.min_significance} and above; {sub.digest}"
    )


@cli.command(name="subscribe")
@click.option("--email", help="Email address to send alerts to.")
@click.option("--webhook", help="http(s) URL to POST signed JSON alerts to.")
@click.option("--apprise", help="Apprise URL (json://, ntfy://, slack://, …).")
@click.option("--trial", "trials", multiple=True, help="NCT id to follow (repeatable).")
@click.option("--all", "all_trials", is_flag=True, help="Follow every watched trial.")
@click.option("--field", "fields", multiple=True, help="Field glob, e.g. 'status.*' (repeatable).")
@click.option("--min-significance", type=click.Choice(LEVELS), default="minor", show_default=True)
@click.option("--digest", type=click.Choice(DIGESTS), default="immediate", show_default=True)
@click.option("--name", help="A label shown in alerts and listings.")
@with_context
def subscribe_(
    ctx: Context,
    email: str | None,
    webhook: str | None,
    apprise: str | None,
    trials: tuple[str, ...],
    all_trials: bool,
    fields: tuple[str, ...],
    min_significance: str,
    digest: str,
    name: str | None,
) -> None:
    """Send alerts about changes to watched trials; prints the subscription id.

    A webhook subscription also prints its signing secret, once: keep it to verify the
    X-Trial-Monitor-Signature header. Only changes detected from now on are sent.
    """
    channel, target = _one_of(email=email, webhook=webhook, apprise=apprise)
    ids = app.parse_ids(trials)
    if bool(ids) == all_trials:
        raise UsageError("give --trial NCT... or --all (not both); nothing was stored")
    sub = subscribe(
        ctx.store,
        ctx.config,
        channel=channel,
        target=target,
        trials=None if all_trials else ids,
        fields=fields,
        min_significance=min_significance,
        digest=digest,
        name=name,
        now=utcnow(),
    )
    click.echo(f"Subscription {sub.id} created: {_summary(sub)}.")
    if sub.secret:
        click.echo(f"Signing secret (shown only now, store it safely): {sub.secret}")


@cli.command()
@click.argument("subscription_id", type=int)
@with_context
def unsubscribe(ctx: Context, subscription_id: int) -> None:
    """Delete a subscription; its undelivered alerts are dropped."""
    dropped = remove_subscription(ctx.store, subscription_id)
    click.echo(
        f"Removed subscription {subscription_id}"
        + (
            f" ({dropped} undelivered alert{'s' if dropped != 1 else ''} dropped)."
            if dropped
            else "."
        )
    )


@cli.command(name="subscriptions")
@click.option("--format", "fmt", type=FORMAT, default="table")
@with_context
def subscriptions_(ctx: Context, fmt: str) -> None:
    """List subscriptions (targets with tokens and passwords masked; secrets never shown)."""
    subs = subscriptions(ctx.store)
    if fmt == "json":
        click.echo(json.dumps([s.public() for s in subs], indent=2))
    elif not subs:
        click.echo("No subscriptions yet. Add one with `trial-monitor subscribe`.")
    else:
        rows = [
            (
                s.id,
                render.short(s.name, 30),
                s.channel,
                render.short(s.shown_target(), 50),
                "all" if s.trials is None else render.short(", ".join(s.trials), 40),
                ", ".join(s.fields) or "*",
                s.min_significance,
                s.digest,
            )
            for s in subs
        ]
        headers = ["id", "name", "channel", "target", "trials", "fields", "minimum", "digest"]
        click.echo(render.table(rows, headers))


@cli.group()
def notify() -> None:
    """Send alerts now: a test message, or everything that is due."""


@notify.command(name="test")
@click.argument("subscription_id", type=int)
@with_context
def notify_test(ctx: Context, subscription_id: int) -> None:
    """Send a sample alert to a subscription's target now (not through the outbox)."""
    sub = get(ctx.store, subscription_id)
    send_alert(sub, ctx.config, sample_alert(sub.name))
    click.echo(f"Sent a test alert to {sub.shown_target()}.")


@notify.command(name="channels")
def notify_channels() -> None:
    """Describe every alert channel and the targets it takes."""
    for kind, text in channel_help().items():
        click.echo(f"{kind}\n" + "\n".join(f"    {line}" for line in text.splitlines()) + "\n")


@notify.command(name="deliver")
@with_context
def notify_deliver(ctx: Context) -> None:
    """Deliver every alert that is due now (digests at their time), then exit."""
    click.echo(deliver_due(ctx.store, ctx.config).line())


@cli.command(name="outbox")
@click.option("--failed", is_flag=True, help="Only alerts given up on.")
@click.option("--format", "fmt", type=FORMAT, default="table")
@with_context
def outbox_(ctx: Context, failed: bool, fmt: str) -> None:
    """List alerts not delivered yet (waiting for a digest, due, retrying or failed)."""
    rows = outbox.listing(ctx.store, ("failed",) if failed else outbox.UNDELIVERED)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("No failed alerts." if failed else "The outbox is empty.")
    else:
        table = [
            (
                r["id"],
                f"{r['subscription_id']} {render.short(r['subscription'] or '(removed)', 24)}",
                r["nct_id"],
                r["changes"],
                r["state"],
                r["attempts"],
                (r["due_at"] or "")[:16].replace("T", " "),
                render.short(r["last_error"] or "", 50),
            )
            for r in rows
        ]
        headers = ["id", "subscription", "trial", "changes", "state", "tries", "due (UTC)", "error"]
        click.echo(render.table(table, headers))
