"""``solverfleet audit``: who changed what and when, newest first, filtered, one page or all.

Pages come from ``GET /admin/v1/audit`` (admin token); ``--cursor`` continues where a page
ended, ``--all`` follows the cursors to the end. The collector checks every filter and its
message is shown as is. Secrets are never recorded, so none can be printed.
"""

from __future__ import annotations

import json
from typing import Any

import click

from solverfleet.adminclient import AdminClient
from solverfleet.cli.common import admin_options, console
from solverfleet.cli.output import Column, format_option, render, with_range

MAX_LIMIT = 1_000


def _text(value: Any) -> Any:
    # before/after are objects: one JSON cell each in CSV.
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict) else value


def _fields(values: Any) -> str | None:
    if not isinstance(values, dict):
        return None
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in sorted(values.items()))


def _both(name: str, field: str) -> tuple[Column, Column]:
    """``before``/``after``: ``k=v`` pairs in the table, one JSON object per CSV cell."""
    return (
        Column(name, lambda e: _fields(e.get(field)), only="table"),
        Column(name, lambda e: _text(e.get(field)), field=field, only="csv"),
    )


COLUMNS = (
    Column("id", "id", only="csv"),
    Column("time (UTC)", lambda e: str(e.get("ts") or "")[:19].replace("T", " "), only="table"),
    Column("ts", "ts", only="csv"),
    Column("actor", "actor"),
    Column("action", "action"),
    Column("target", lambda e: f"{e.get('target_type')} {e.get('target_id') or ''}".strip(),
           only="table"),
    Column("target_type", "target_type", only="csv"),
    Column("target_id", "target_id", only="csv"),
    Column("account", "account"),
    *_both("before", "before"),
    *_both("after", "after"),
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
    data = {"entries": entries, "count": len(entries), "next_cursor": next_cursor}
    render(fmt, entries, COLUMNS, title=f"{len(entries)} change(s), newest first", data=data)
    if next_cursor and fmt == "csv":  # stdout holds only the rows
        click.echo(f"more: --cursor {next_cursor}", err=True)
    elif next_cursor and fmt == "table":  # JSON carries it
        console.print(f"more: --cursor {next_cursor}", markup=False)
