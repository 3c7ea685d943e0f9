"""``solverfleet notifications list``: stored low-balance notifications, newest first, with
their delivery state, and the crossings waiting for their account's 5-minute window."""

from __future__ import annotations

import click
from rich.text import Text

from solverfleet.adminclient import AdminClient
from solverfleet.cli.common import admin_options, console, money
from solverfleet.cli.output import cell, format_option, new_table, print_json, write_csv

MAX_LIMIT = 1_000
CSV_FIELDS = (
    "id", "created", "account", "key_id", "kind", "balance", "threshold", "status", "attempts",
    "last_error",
)  # fmt: skip
_STATUS_STYLE = {"delivered": "green", "failed": "red", "pending": "yellow"}


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
    if fmt == "json":
        print_json(data)
        return
    if fmt == "csv":
        write_csv(CSV_FIELDS, [[n.get(f) for f in CSV_FIELDS] for n in found])
        return
    table = new_table(
        f"{len(found)} notification(s), newest first",
        ("time (UTC)", "account", "key", "kind", "balance", "threshold", "status", "attempts",
         "targets", "last error"),
        right=("balance", "threshold", "attempts"),
    )  # fmt: skip
    for n in found:
        targets = ", ".join(f"{d['target']} {d['status']}" for d in n.get("deliveries") or [])
        status = str(n.get("status"))
        table.add_row(
            Text(str(n.get("created") or "")[:19].replace("T", " ")),
            cell(n.get("account")),
            cell(n.get("key_id")),
            Text(str(n.get("kind")), style="red" if n.get("kind") == "zero" else "yellow"),
            Text(money(n.get("balance"))),
            Text(money(n.get("threshold"))),
            Text(status, style=_STATUS_STYLE.get(status, "dim")),
            cell(n.get("attempts")),
            Text(targets) if targets else cell(None, none="none"),
            cell(n.get("last_error")),
        )
    console.print(table)
    for d in data.get("deferred") or []:
        console.print(
            f"deferred: {d['account']}/{d['key_id']} {d['kind']} (seen {d['detected']});"
            f" fires when the window opens at {d['window_opens']} if still true",
            markup=False,
        )
