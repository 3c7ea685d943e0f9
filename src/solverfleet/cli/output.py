"""Output formats shared by ``solverfleet log`` and ``solverfleet report``: a rich table for
people, JSON (the API's own answer) and CSV for spreadsheets and scripts."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "json", "csv")

format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people; json is the admin API's answer; csv for spreadsheets.",
)


def with_range(default: str) -> Any:
    """--since/--until; ``default`` says what a command covers without them."""

    def decorate(fn: Any) -> Any:
        fn = click.option(
            "--until",
            metavar="TIME",
            help="Up to this time (exclusive); a date alone includes that whole day.",
        )(fn)
        return click.option(
            "--since",
            metavar="TIME",
            help="From this time (inclusive): 2026-11-23, 2026-11-23T10:00:00Z, 30m, 24h, 7d,"
            f" today, or all. Without --since and --until: {default}.",
        )(fn)

    return decorate


def print_json(data: Any) -> None:
    # default=str keeps Decimal values (from the client's exact parsing) exact in the output.
    click.echo(json.dumps(data, indent=2, default=str))


def csv_writer() -> Any:
    return csv.writer(sys.stdout, lineterminator="\n")


def csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def write_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    writer = csv_writer()
    writer.writerow(header)
    writer.writerows([csv_value(v) for v in row] for row in rows)


def new_table(title: str, columns: Sequence[str], right: Iterable[str] = ()) -> Table:
    """A table whose ``right`` columns (numbers, money) are right-aligned and never wrapped."""
    right = set(right)
    table = Table(title=title, title_justify="left", min_width=len(title))
    for name in columns:
        numeric = name in right
        table.add_column(name, justify="right" if numeric else "left", no_wrap=numeric)
    return table


def cell(value: Any, none: str = "-") -> Text:
    if value is None:
        return Text(none, style="dim")
    if isinstance(value, bool):
        return Text("yes", style="green") if value else Text("no", style="red")
    return Text(str(value))


def period(data: dict) -> str:
    """``"since … until …"`` or ``"all time"`` for a report's title."""
    since, until = data.get("since"), data.get("until")
    if since is None and until is None:
        return "all time"
    return " ".join(
        part
        for part in (since and f"since {since}", until and f"until {until}")
        if part is not None
    )
