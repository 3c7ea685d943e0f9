"""``solverfleet tokens ...``: bearer tokens for the admin API and the fleet protocol.

Roles: ``admin`` (the whole admin API), ``user`` (that user's own keys, usage and reports),
``service`` (agents' ``fleet_token`` alternative; with ``--agent AGENT_ID`` bound to that one
agent: the per-host credential). A token is printed once, when created.
"""

from __future__ import annotations

import click

from solverfleet.adminclient import AdminClient
from solverfleet.cli.common import admin_options, console, idempotency_option, show_secret
from solverfleet.cli.output import Column, format_option, render

ROLES = ("admin", "user", "service")


@click.group("tokens")
def tokens_group() -> None:
    """Admin API and fleet tokens: create, list, revoke."""


TOKEN_COLUMNS = (
    Column("id", "id", "count"),
    Column("role", "role"),
    Column("user", "user_id", "id"),
    Column("agent", "agent_id", "id"),
    Column("label", "label"),
    Column("created (UTC)", "created", "time"),
    Column("by", "created_by"),
    Column("last used (UTC)", "last_used", "time"),
    Column("revoked (UTC)", "revoked", "time", none="active"),
)


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
@format_option
@idempotency_option
@admin_options
def tokens_create(
    client: AdminClient,
    role: str,
    user_id: str | None,
    agent_id: str | None,
    label: str | None,
    fmt: str,
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
    token = result.get("token") or {}
    if fmt != "table":
        columns = (*TOKEN_COLUMNS[:-1], Column("token", "secret", field="secret"))
        render(fmt, [{**token, "secret": result.get("secret")}], columns, title="", data=result)
        return
    owner = f" for user {token.get('user_id')}" if token.get("user_id") else ""
    if token.get("agent_id"):
        owner = f" bound to agent {token.get('agent_id')}"
    console.print(f"Created {role} token {token.get('id')}{owner}.", markup=False)
    show_secret("Token", result)


@tokens_group.command("list")
@format_option
@admin_options
def tokens_list(client: AdminClient, fmt: str) -> None:
    """Every token with its role, owner and use (never the token itself)."""
    tokens = client.list_tokens()
    title = f"{len(tokens)} token(s)"
    render(fmt, tokens, TOKEN_COLUMNS, title=title, data={"tokens": tokens})


@tokens_group.command("revoke")
@click.argument("token_id", type=click.IntRange(min=1))
@admin_options
def tokens_revoke(client: AdminClient, token_id: int) -> None:
    """Revoke TOKEN_ID: refused from its next request on."""
    token = client.revoke_token(token_id)
    console.print(f"token {token.get('id', token_id)}: revoked", markup=False)
