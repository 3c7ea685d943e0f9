"""Output formats shared by every command that lists or shows something (``--format``): a rich
table for people, JSON (the collector's objects as they are) and CSV for spreadsheets and
scripts (a header row, one row per item, plain values: money as decimal strings, times as
ISO 8601 UTC). A command declares its columns (``Column``) and calls ``render``."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from solverfleet.cli.common import console, money

FORMATS = ("table", "json", "csv")

format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people; json is the admin API's answer; csv for spreadsheets.",
)


@dataclass(frozen=True)
class Column:
    """One column: its table header, how to get the value from an item (a field name or a
    function), and its ``kind``: text, id (never wrapped), money, time (epoch seconds or ISO
    text), count, list or flag. CSV headers are the API's field names (``field``, default
    ``get``), as scripts want."""

    name: str
    get: str | Callable[[dict], Any]
    kind: str = "text"
    none: str = "-"  # what the table shows for a missing value
    style: Callable[[Any], str] | None = None  # the table cell's style from the value
    field: str | None = None  # the CSV header when ``get`` is a function
    only: str | None = None  # "table" or "csv": a column just one of them shows

    @property
    def csv_name(self) -> str:
        return self.field or (self.get if isinstance(self.get, str) else self.name)

    def value(self, item: dict) -> Any:
        return item.get(self.get) if isinstance(self.get, str) else self.get(item)


def iso_time(value: Any) -> str:
    """Epoch seconds (or an ISO string from the API) as ISO 8601 UTC, ``…Z``."""
    if isinstance(value, str):
        return value
    stamp = dt.datetime.fromtimestamp(float(value), dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(column: Column, value: Any) -> Any:
    if value is None:
        return ""
    if column.kind == "money":
        return money(value)
    if column.kind == "time":
        return iso_time(value)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return csv_value(value)


def _table_cell(column: Column, value: Any) -> Text:
    if value is None:
        return Text(column.none, style="dim")
    if column.kind == "flag" or isinstance(value, bool):
        return cell(bool(value))
    text = _plain(column, value)
    if column.kind == "time":
        text = text.replace("T", " ")
    if isinstance(value, list) and not value:
        text = "(none)"
    if isinstance(value, list):
        text = text.replace(",", ", ")
    return Text(str(text), style=column.style(value) if column.style else "")


def render(
    fmt: str, items: Sequence[dict], columns: Sequence[Column], *, title: str, data: Any
) -> None:
    """Print ``items`` as a table, as ``data`` (the API's answer) in JSON, or as CSV."""
    if fmt == "json":
        print_json(data)
        return
    columns = [c for c in columns if c.only in (None, fmt)]
    if fmt == "csv":
        write_csv(
            [c.csv_name for c in columns],
            [[_plain(c, c.value(item)) for c in columns] for item in items],
        )
        return
    right = [c.name for c in columns if c.kind in ("money", "count")]
    whole = [c.name for c in columns if c.kind == "id"]
    table = new_table(title, [c.name for c in columns], right=right, whole=whole)
    for item in items:
        table.add_row(*(_table_cell(c, c.value(item)) for c in columns))
    console.print(table)


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


def _mark(value: Any, tag: str) -> Any:
    # A Decimal becomes "<tag><digits>" while dumping, unquoted to a bare number after.
    if isinstance(value, Decimal):
        return f"{tag}{value}"
    if isinstance(value, dict):
        return {k: _mark(v, tag) for k, v in value.items()}
    if isinstance(value, list):
        return [_mark(v, tag) for v in value]
    return value


def print_json(data: Any) -> None:
    """The collector's objects as they are: a number it sent (parsed exactly, as a Decimal)
    comes out as the same number, digit for digit, never rounded through a float."""
    tag = f"number-{uuid.uuid4().hex}:"  # unguessable: no string from the API looks like it
    text = json.dumps(_mark(data, tag), indent=2)
    click.echo(re.sub(f'"{tag}([^"]*)"', r"\1", text))


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


def new_table(
    title: str, columns: Sequence[str], right: Iterable[str] = (), whole: Iterable[str] = ()
) -> Table:
    """A table whose ``right`` columns (numbers, money) are right-aligned and never wrapped,
    like its ``whole`` ones (ids: a broken id cannot be copied)."""
    right, whole = set(right), set(whole)
    table = Table(title=title, title_justify="left", min_width=len(title))
    for name in columns:
        numeric = name in right
        table.add_column(
            name, justify="right" if numeric else "left", no_wrap=numeric or name in whole
        )
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
