"""``solverfleet audit``: who changed what and when, newest first, filtered, one page or all.

Pages come from ``GET /admin/v1/audit`` (admin token); ``--cursor`` continues where a page
ended, ``--all`` follows the cursors to the end. The collector checks every filter and its
message is shown as is. Secrets are never recorded, so none can be printed.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.text import Text

from solverfleet.adminclient import AdminClient
from solverfleet.cli.common import admin_options, console
from solverfleet.cli.output import (
    cell,
    csv_value,
    csv_writer,
    format_option,
    new_table,
    print_json,
    with_range,
)

MAX_LIMIT = 1_000
CSV_FIELDS = (
    "id", "ts", "actor", "action", "target_type", "target_id", "account", "before", "after",
)  # fmt: skip


@click.command("audit")
@click.option("--actor", help='Only changes by this actor: "bootstrap" or "token:<id>".')
@click.option("--action", help="Only this action, e.g. key.topup, config.apply.")
@click.option("--target-type", help="Only changes to this kind: key, user, token, price, account.")
@click.option("--target", "target_id", metavar="ID", help="Only changes to this object id.")
@click.option("--account", help="Only changes in this account.")
@with_range("the whole log")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LIMIT),
    help="Changes per page (default 100; 1000 with --all).",
)
@click.option("--cursor", help="Continue after the page that printed this cursor.")
@click.option("--all", "all_pages", is_flag=True, help="Follow the cursor to the oldest change.")
@format_option
@admin_options
def audit_command(
    client: AdminClient,
    limit: int | None,
    cursor: str | None,
    all_pages: bool,
    fmt: str,
    **filters: Any,
) -> None:
    """Every admin change: who (token id or bootstrap), when, what, before and after."""
    limit = limit or (MAX_LIMIT if all_pages else 100)
    entries: list[dict] = []
    next_cursor = None
    while True:
        page = client.audit(limit=limit, cursor=cursor, **filters)
        entries.extend(page["entries"])
        next_cursor = cursor = page.get("next_cursor")
        if not all_pages or not cursor:
            break
    if fmt == "json":
        print_json({"entries": entries, "count": len(entries), "next_cursor": next_cursor})
        return
    if fmt == "csv":
        writer = csv_writer()
        writer.writerow(CSV_FIELDS)
        for e in entries:
            writer.writerow(csv_value(_text(e.get(f))) for f in CSV_FIELDS)
        if next_cursor:
            click.echo(f"more: --cursor {next_cursor}", err=True)
        return
    table = new_table(
        f"{len(entries)} change(s), newest first",
        ("time (UTC)", "actor", "action", "target", "account", "before", "after"),
    )
    for e in entries:
        table.add_row(
            Text(e["ts"][:19].replace("T", " ")),
            cell(e.get("actor")),
            cell(e.get("action")),
            Text(f"{e.get('target_type')} {e.get('target_id') or ''}".strip()),
            cell(e.get("account")),
            cell(_fields(e.get("before"))),
            cell(_fields(e.get("after"))),
        )
    console.print(table)
    if next_cursor:
        console.print(f"more: --cursor {next_cursor}", markup=False)


def _text(value: Any) -> Any:
    # before/after are objects: one JSON cell each in CSV.
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict) else value


def _fields(values: Any) -> str | None:
    if not isinstance(values, dict):
        return None
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in sorted(values.items()))
