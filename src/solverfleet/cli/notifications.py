"""``solverfleet notifications list``: stored low-balance notifications, newest first, with
their delivery state, and the crossings waiting for their account's 5-minute window."""

from __future__ import annotations

import click

from solverfleet.adminclient import AdminClient
from solverfleet.cli.common import admin_options, console
from solverfleet.cli.output import Column, format_option, render

MAX_LIMIT = 1_000
_STATUS_STYLE = {"delivered": "green", "failed": "red", "pending": "yellow"}


def _targets(n: dict) -> str | None:
    return ", ".join(f"{d['target']} {d['status']}" for d in n.get("deliveries") or []) or None


COLUMNS = (
    Column("id", "id", only="csv"),
    Column(
        "time (UTC)", lambda n: str(n.get("created") or "")[:19].replace("T", " "), only="table"
    ),
    Column("created", "created", only="csv"),
    Column("account", "account"),
    Column("key", "key_id", "id"),
    Column("kind", "kind", style=lambda v: "red" if v == "zero" else "yellow"),
    Column("balance", "balance", "money"),
    Column("threshold", "threshold", "money"),
    Column("status", "status", style=lambda v: _STATUS_STYLE.get(str(v), "dim")),
    Column("attempts", "attempts", "count"),
    Column("targets", _targets, none="none", only="table"),
    Column("last error", "last_error"),
)


@click.group("notifications")
def notifications_group() -> None:
    """Low-balance notifications: what fired, and whether the webhooks got it."""


@notifications_group.command("list")
@click.option("--account", help="Only this account's notifications.")
@click.option(
    "--since", metavar="TIME", help="From this time: 2026-11-23, 2026-11-23T10:00:00Z, 24h, 7d."
)
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=100, show_default=True)
@format_option
@admin_options
def notifications_list(
    client: AdminClient, account: str | None, since: str | None, limit: int, fmt: str
) -> None:
    """Notifications newest first: key, zero or threshold, balance when it fired, delivery."""
    data = client.notifications(account=account, since=since, limit=limit)
    found = data.get("notifications") or []
    render(fmt, found, COLUMNS, title=f"{len(found)} notification(s), newest first", data=data)
    if fmt != "table":
        return
    for d in data.get("deferred") or []:
        console.print(
            f"deferred: {d['account']}/{d['key_id']} {d['kind']} (seen {d['detected']});"
            f" fires when the window opens at {d['window_opens']} if still true",
            markup=False,
        )
