"""``solverfleet report team|projects|keys|stats``: who spent what, where, and how well it went.

Each command prints one ``GET /admin/v1/reports/<name>`` answer as a table, JSON or CSV. Money
is printed as the API's exact decimal strings, never through a float.
"""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from solverfleet.adminclient import AdminClient
from solverfleet.cli.common import admin_options, console, money
from solverfleet.cli.output import (
    cell,
    format_option,
    new_table,
    period,
    print_json,
    with_range,
    write_csv,
)

TOTAL = "TOTAL"


@click.group("report")
def report_group() -> None:
    """Spend and quality over a time range: today (UTC) unless --since/--until say otherwise."""


def _name(value: Any) -> str:
    return "(none)" if value is None else str(value)


def _total_row(table: Any, *cells: Any) -> None:
    table.add_section()
    table.add_row(Text(TOTAL, style="bold"), *cells, style="bold")


@report_group.command("team")
@with_range("today (UTC)")
@format_option
@admin_options
def team(client: AdminClient, since: str | None, until: str | None, fmt: str) -> None:
    """Per user: solves, failures, cost, today's solves and daily limit, with a TOTAL row."""
    data = client.report("team", since, until)
    if fmt == "json":
        print_json(data)
        return
    users, total = data["users"], data["total"]
    if fmt == "csv":
        rows = [
            [u["user_id"], u["email"], u["solves"], u["failed"], money(u["cost"]), u["today"],
             u["daily_limit"]]
            for u in users
        ]  # fmt: skip
        rows.append([TOTAL, None, total["solves"], total["failed"], money(total["cost"]),
                     total["today"], None])  # fmt: skip
        write_csv(("user", "email", "solves", "failed", "cost", "today", "daily_limit"), rows)
        return
    table = new_table(
        f"Team report, {period(data)} (today = {data['today']} UTC)",
        ("user", "email", "solves", "failed", "cost", "today", "daily limit"),
        right=("solves", "failed", "cost", "today", "daily limit"),
    )
    for u in users:
        name = Text(_name(u["user_id"]))
        if u.get("active") is False:
            name.append(" (inactive)", style="dim")
        table.add_row(
            name, cell(u["email"]), str(u["solves"]), str(u["failed"]), money(u["cost"]),
            str(u["today"]), cell(u["daily_limit"], none="none"),
        )  # fmt: skip
    _total_row(
        table, "", str(total["solves"]), str(total["failed"]), money(total["cost"]),
        str(total["today"]), "",
    )  # fmt: skip
    console.print(table)


@report_group.command("projects")
@with_range("today (UTC)")
@format_option
@admin_options
def projects(client: AdminClient, since: str | None, until: str | None, fmt: str) -> None:
    """Spend by project and by environment, each with a TOTAL row."""
    data = client.report("projects", since, until)
    if fmt == "json":
        print_json(data)
        return
    total = data["total"]
    dimensions = (("project", data["projects"]), ("environment", data["environments"]))
    if fmt == "csv":
        rows = [
            [dim, row[dim], row["solves"], row["failed"], money(row["cost"])]
            for dim, items in dimensions
            for row in items
        ]
        rows.append(["total", None, total["solves"], total["failed"], money(total["cost"])])
        write_csv(("dimension", "name", "solves", "failed", "cost"), rows)
        return
    for dim, items in dimensions:
        table = new_table(
            f"Cost by {dim}, {period(data)}",
            (dim, "solves", "failed", "cost"),
            right=("solves", "failed", "cost"),
        )
        for row in items:
            table.add_row(
                Text(_name(row[dim])), str(row["solves"]), str(row["failed"]), money(row["cost"])
            )
        _total_row(table, str(total["solves"]), str(total["failed"]), money(total["cost"]))
        console.print(table)


@report_group.command("keys")
@with_range("today (UTC)")
@format_option
@admin_options
def keys(client: AdminClient, since: str | None, until: str | None, fmt: str) -> None:
    """Per API key: owner, project, environment, spend and current balance, with a TOTAL row."""
    data = client.report("keys", since, until)
    if fmt == "json":
        print_json(data)
        return
    total = data["total"]
    fields = ("key_id", "user_id", "project", "environment", "solves", "failed")
    if fmt == "csv":
        rows = [
            [*(k[f] for f in fields), money(k["cost"]), money(k["balance"]), k["active"]]
            for k in data["keys"]
        ]
        rows.append([TOTAL, None, None, None, total["solves"], total["failed"],
                     money(total["cost"]), None, None])  # fmt: skip
        write_csv((*fields, "cost", "balance", "active"), rows)
        return
    table = new_table(
        f"Keys, {period(data)}",
        ("key", "user", "project/env", "solves", "failed", "cost", "balance now", "active"),
        right=("solves", "failed", "cost", "balance now"),
    )
    for k in data["keys"]:
        where = "/".join(str(k[f] or "-") for f in ("project", "environment"))
        table.add_row(
            Text(_name(k["key_id"])), cell(k["user_id"]), Text(where), str(k["solves"]),
            str(k["failed"]), money(k["cost"]), money(k["balance"]), cell(k["active"]),
        )  # fmt: skip
    _total_row(
        table, "", "", str(total["solves"]), str(total["failed"]), money(total["cost"]), "", ""
    )
    console.print(table)


@report_group.command("stats")
@with_range("today (UTC)")
@format_option
@click.option(
    "--hourly", is_flag=True, help="csv: the solves-per-hour series instead of the type table."
)
@admin_options
def stats(
    client: AdminClient, since: str | None, until: str | None, fmt: str, hourly: bool
) -> None:
    """Per captcha type: success rate and p50/p95 duration; solves per UTC hour."""
    data = client.report("stats", since, until)
    if fmt == "json":
        print_json(data)
        return
    columns = ("calls", "solves", "failed", "success_rate", "p50_ms", "p95_ms")
    if fmt == "csv":
        if hourly:
            write_csv(("hour", "solves", "failed"), ([h["hour"], h["solves"], h["failed"]]
                                                      for h in data["hourly"]))  # fmt: skip
            return
        rows = [[t["type"], *(t[c] for c in columns)] for t in data["types"]]
        rows.append([TOTAL, *(data["total"][c] for c in columns)])
        write_csv(("type", *columns), rows)
        return
    headers = ("type", "calls", "solves", "failed", "success %", "p50 ms", "p95 ms")
    table = new_table(f"Solve stats by type, {period(data)}", headers, right=headers[1:])
    for t in data["types"]:
        table.add_row(Text(_name(t["type"])), *(cell(t[c]) for c in columns))
    _total_row(table, *(cell(data["total"][c]) for c in columns))
    console.print(table)
    table = new_table(
        "Solves per UTC hour (hours without calls left out)",
        ("hour", "solves", "failed"),
        right=("solves", "failed"),
    )
    for h in data["hourly"]:
        table.add_row(h["hour"][:13].replace("T", " ") + ":00", str(h["solves"]), str(h["failed"]))
    console.print(table)
