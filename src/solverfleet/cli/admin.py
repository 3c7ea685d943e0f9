"""``solverfleet keys ...`` and ``solverfleet users ...``: day-to-day admin of the collector."""

from __future__ import annotations

import json
import re
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from solverfleet.cli.adminclient import AdminClient
from solverfleet.cli.common import admin_options, console, money
from solverfleet.money import MoneyError, format_micros, to_micros

_PLAIN_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


@click.group("keys")
def keys_group() -> None:
    """API keys: list, top up, activate, deactivate."""


@click.group("users")
def users_group() -> None:
    """Users: list, activate, deactivate."""


def _amount(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # Plain decimal notation only, as in team configs: "1e3" is more likely a typo than intent.
    if not _PLAIN_DECIMAL.match(value.strip()):
        raise click.BadParameter(f"not a decimal amount such as 10.00: {value!r}")
    try:
        micros = to_micros(value)
    except (MoneyError, ArithmeticError) as exc:
        raise click.BadParameter(str(exc)) from None
    if micros <= 0:
        raise click.BadParameter("must be greater than zero")
    return format_micros(micros)


@keys_group.command("topup")
@click.argument("key_id")
@click.argument("amount", callback=_amount)
@click.option("--reason", help="Recorded with the top-up transaction.")
@admin_options
def keys_topup(client: AdminClient, key_id: str, amount: str, reason: str | None) -> None:
    """Add AMOUNT (a decimal such as 10.00) to KEY_ID's balance."""
    result = client.topup(key_id, amount, reason)
    console.print(
        f"Topped up {key_id} by {amount}: balance now {money(result.get('balance'))}"
        f" (transaction {result.get('transaction_id')}).",
        markup=False,
    )


def _set_active_command(group: click.Group, kind: str, active: bool, help: str) -> None:
    """Add ``activate`` or ``deactivate`` (of a ``"key"`` or ``"user"``) to ``group``."""

    @group.command("activate" if active else "deactivate", help=help)
    @click.argument("ident", metavar=f"{kind.upper()}_ID")
    @admin_options
    def command(client: AdminClient, ident: str) -> None:
        result = getattr(client, f"set_{kind}_active")(ident, active)
        now = result.get("active")
        state = "active" if now else "deactivated" if now is False else "unknown"
        console.print(f"{kind} {result.get(kind, ident)}: {state}", markup=False)


_set_active_command(
    keys_group,
    "key",
    False,
    "Refuse every call with KEY_ID (on every agent within about a second).",
)
_set_active_command(keys_group, "key", True, "Accept calls with KEY_ID again.")
_set_active_command(users_group, "user", False, "Refuse every call with any of USER_ID's keys.")
_set_active_command(users_group, "user", True, "Accept calls with USER_ID's keys again.")

_json_flag = click.option(
    "--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table."
)


@keys_group.command("list")
@_json_flag
@admin_options
def keys_list(client: AdminClient, as_json: bool) -> None:
    """Every key with its balance and limits (never secrets)."""
    keys = client.list_keys()
    if as_json:
        _print_json({"keys": keys})
        return
    table = Table(title=f"{len(keys)} key(s)", title_justify="left")
    for name in ("key", "user", "account", "project/env", "balance", "types", "cpm", "ips"):
        table.add_column(
            name,
            justify="right" if name in ("balance", "cpm") else "left",
            no_wrap=name in ("key", "balance", "cpm"),
        )
    table.add_column("active", no_wrap=True)
    for key in keys:
        where = "/".join(str(key.get(f) or "-") for f in ("project", "environment"))
        table.add_row(
            _cell(key.get("id")),
            _cell(key.get("user_id")),
            _cell(key.get("account")),
            Text(where),
            Text(money(key.get("balance"))),
            _cell(key.get("allowed_types"), none="all"),
            _cell(key.get("cpm"), none="-"),
            _cell(key.get("ip_allowlist"), none="any"),
            _active(key.get("active")),
        )
    console.print(table)


@users_group.command("list")
@_json_flag
@admin_options
def users_list(client: AdminClient, as_json: bool) -> None:
    """Every user with role, daily limit and state."""
    users = client.list_users()
    if as_json:
        _print_json({"users": users})
        return
    table = Table(title=f"{len(users)} user(s)", title_justify="left")
    for name in ("user", "email", "account", "role", "daily limit"):
        table.add_column(name, justify="right" if name == "daily limit" else "left")
    table.add_column("active")
    for user in users:
        table.add_row(
            *(_cell(user.get(f)) for f in ("id", "email", "account", "role")),
            _cell(user.get("daily_limit"), none="none"),
            _active(user.get("active")),
        )
    console.print(table)


def _cell(value: Any, none: str = "-") -> Text:
    if value is None:
        return Text(none, style="dim")
    if isinstance(value, list):
        return Text(", ".join(str(v) for v in value) or "(none)")
    return Text(str(value))


def _active(value: Any) -> Text:
    return Text("yes", style="green") if value else Text("no", style="red")


def _print_json(data: Any) -> None:
    # default=str keeps Decimal values (from the client's exact parsing) exact in the output.
    click.echo(json.dumps(data, indent=2, default=str))
