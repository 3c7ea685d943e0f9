"""``solverfleet log``: the solve log, newest first, filtered, one page or all of them.

Pages come from ``GET /admin/v1/log``; ``--cursor`` continues where a page ended, ``--all``
follows the cursors to the end. The collector checks every filter (unknown status, bad time,
bad cursor) and its message is shown as is.
"""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from solverfleet.adminclient import AdminClient
from solverfleet.cli.common import admin_options, console, money
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
    "id", "ts", "user_id", "user_email", "key_id", "account", "project", "environment", "type",
    "url", "status", "error", "message", "source_ip", "duration_ms", "cost", "agent_id",
    "request_id", "event_id", "soft_id",
)  # fmt: skip
FILTERS = ("user", "key", "project", "environment", "type", "status")


@click.command("log")
@click.option("--user", metavar="USER_ID", help="Only this user's calls.")
@click.option("--key", metavar="KEY_ID", help="Only calls with this API key.")
@click.option("--project", help="Only keys of this project.")
@click.option("--environment", help="Only keys of this environment.")
@click.option("--type", "type_", metavar="TYPE", help="Only this captcha type slug.")
@click.option("--status", help="success, failed, report_good or report_bad.")
@with_range("the whole log")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LIMIT),
    help="Calls per page (default 100; 1000 with --all).",
)
@click.option("--cursor", help="Continue after the page that printed this cursor.")
@click.option("--all", "all_pages", is_flag=True, help="Follow the cursor to the oldest call.")
@format_option
@admin_options
def log_command(
    client: AdminClient,
    type_: str | None,
    limit: int | None,
    cursor: str | None,
    all_pages: bool,
    fmt: str,
    **filters: Any,
) -> None:
    """Every call that reached a solver worker: who, what, where, outcome, time and cost."""
    filters["type"] = type_
    limit = limit or (MAX_LIMIT if all_pages else 100)
    pages = _pages(client, filters, limit, cursor, all_pages)
    if fmt == "csv":
        writer = csv_writer()
        writer.writerow(CSV_FIELDS)
        last = None
        for page in pages:  # streamed: --all over a long log holds one page at a time
            writer.writerows([csv_value(e.get(f)) for f in CSV_FIELDS] for e in page["events"])
            last = page
        if last and last["next_cursor"]:
            click.echo(f"more: --cursor {last['next_cursor']}", err=True)
        return
    events: list[dict] = []
    next_cursor = None
    for page in pages:
        events.extend(page["events"])
        next_cursor = page["next_cursor"]
    if fmt == "json":
        print_json({"events": events, "count": len(events), "next_cursor": next_cursor})
        return
    _table(events, next_cursor)


def _pages(
    client: AdminClient, filters: dict, limit: int, cursor: str | None, all_pages: bool
) -> Any:
    while True:
        page = client.solve_log(limit=limit, cursor=cursor, **filters)
        yield page
        cursor = page.get("next_cursor")
        if not all_pages or not cursor:
            return


def _table(events: list[dict], next_cursor: str | None) -> None:
    table = new_table(
        f"{len(events)} call(s), newest first",
        ("time (UTC)", "user", "key", "type", "status", "ms", "cost", "project/env", "agent",
         "source ip", "soft id", "url", "error"),
        right=("ms", "cost"),
    )  # fmt: skip
    for e in events:
        ok = e["status"] == "success"
        where = "/".join(str(e.get(f) or "-") for f in ("project", "environment"))
        problem = ": ".join(str(x) for x in (e.get("error"), e.get("message")) if x)
        table.add_row(
            Text(e["ts"][:19].replace("T", " ")),
            cell(e.get("user_id")),
            cell(e.get("key_id")),
            cell(e.get("type")),
            Text(e["status"], style="green" if ok else "red"),
            cell(e.get("duration_ms")),
            money(e.get("cost")),
            Text(where),
            cell(e.get("agent_id")),
            cell(e.get("source_ip")),
            cell(e.get("soft_id")),
            Text(e.get("url") or "-", overflow="ellipsis", no_wrap=True),
            Text(problem) if problem else cell(None),
        )
    console.print(table)
    if next_cursor:
        console.print(f"more: --cursor {next_cursor}", markup=False)
