"""``solverfleet tokens ...``: bearer tokens for the admin API and the fleet protocol.

Roles: ``admin`` (the whole admin API), ``user`` (that user's own keys, usage and reports),
``service`` (agents' ``fleet_token`` alternative; with ``--agent AGENT_ID`` bound to that one
agent: the per-host credential). A token is printed once, when created.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from solverfleet.adminclient import AdminClient
from solverfleet.cli.admin import _cell, _json_flag, _print_json
from solverfleet.cli.common import admin_options, console, idempotency_option, show_secret

ROLES = ("admin", "user", "service")


@click.group("tokens")
def tokens_group() -> None:
    """Admin API and fleet tokens: create, list, revoke."""


def _when(seconds: Any) -> Text:
    if seconds is None:
        return Text("-", style="dim")
    stamp = dt.datetime.fromtimestamp(float(seconds), dt.UTC)
    return Text(stamp.strftime("%Y-%m-%d %H:%M:%SZ"))


@tokens_group.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may do.")
@click.option(
    "--user",
    "user_id",
    metavar="USER_ID",
    help="The user the token speaks for (required for user tokens). The user's role in the "
    "team config caps the token's: an admin token needs an admin user.",
)
@click.option(
    "--agent",
    "agent_id",
    metavar="AGENT_ID",
    help="Bind a service token to one agent (per-host credential): it may act for no other.",
)
@click.option("--label", help="A note for the token list (e.g. who or what holds it).")
@_json_flag
@idempotency_option
@admin_options
def tokens_create(
    client: AdminClient,
    role: str,
    user_id: str | None,
    agent_id: str | None,
    label: str | None,
    as_json: bool,
    idempotency_key: str | None,
) -> None:
    """Create a token and print it (shown this once; stored hashed)."""
    if role == "user" and not user_id:
        raise click.UsageError("a user token needs --user USER_ID")
    if role == "service" and user_id:
        raise click.UsageError("--user is only for admin and user tokens, not service tokens")
    if role != "service" and agent_id:
        raise click.UsageError(f"--agent is only for service tokens, not {role} tokens")
    result = client.create_token(role, user_id, label, agent_id, idempotency_key=idempotency_key)
    if as_json:
        _print_json(result)
        return
    token = result.get("token") or {}
    owner = f" for user {token.get('user_id')}" if token.get("user_id") else ""
    if token.get("agent_id"):
        owner = f" bound to agent {token.get('agent_id')}"
    console.print(f"Created {role} token {token.get('id')}{owner}.", markup=False)
    show_secret("Token", result)


@tokens_group.command("list")
@_json_flag
@admin_options
def tokens_list(client: AdminClient, as_json: bool) -> None:
    """Every token with its role, owner and use (never the token itself)."""
    tokens = client.list_tokens()
    if as_json:
        _print_json({"tokens": tokens})
        return
    table = Table(title=f"{len(tokens)} token(s)", title_justify="left")
    columns = ("id", "role", "user", "agent", "label", "created (UTC)", "by", "last used", "state")
    for name in columns:
        table.add_column(name, justify="right" if name == "id" else "left")
    for token in tokens:
        revoked = token.get("revoked")
        table.add_row(
            _cell(token.get("id")),
            _cell(token.get("role")),
            _cell(token.get("user_id")),
            _cell(token.get("agent_id")),
            _cell(token.get("label")),
            _when(token.get("created")),
            _cell(token.get("created_by")),
            _when(token.get("last_used")),
            Text("active", style="green")
            if revoked is None
            else Text(f"revoked {_when(revoked)}", style="red"),
        )
    console.print(table)


@tokens_group.command("revoke")
@click.argument("token_id", type=click.IntRange(min=1))
@admin_options
def tokens_revoke(client: AdminClient, token_id: int) -> None:
    """Revoke TOKEN_ID: refused from its next request on."""
    token = client.revoke_token(token_id)
    console.print(f"token {token.get('id', token_id)}: revoked", markup=False)
