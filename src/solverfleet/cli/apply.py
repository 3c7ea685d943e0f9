"""``solverfleet apply FILE``: validate a team config locally, then apply it in one transaction."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from solverfleet import teamconfig
from solverfleet.adminclient import AdminClient
from solverfleet.cli.common import CliError, admin_options, console, idempotency_option

_OUTCOMES = (("created", "green"), ("changed", "yellow"), ("unchanged", "dim"))
_LABELS = {"created": "created", "changed": "changed", "unchanged": "left alone"}


@click.command("apply")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@idempotency_option
@admin_options
def apply_command(
    client: AdminClient, file: str, dry_run: bool, idempotency_key: str | None
) -> None:
    """Apply a team config (YAML or JSON) to the collector.

    The file is validated locally first and ENV:NAME references are resolved from this
    environment; on any error nothing is sent. Secrets the collector generates for new keys are
    printed once, here, and never again.
    """
    try:
        config = teamconfig.load_file(file)
    except teamconfig.TeamConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    result = client.apply(config, dry_run=dry_run, idempotency_key=idempotency_key)
    render_result(result, source=file, dry_run=dry_run)
    if not dry_run:
        print_secrets(result.get("secrets") or {})


def render_result(result: dict, *, source: str, dry_run: bool = False) -> None:
    """Table of created / changed / left-alone objects and a one-line summary."""
    counts = {outcome: len(result.get(outcome) or []) for outcome, _ in _OUTCOMES}
    title = f"{'Dry run of ' if dry_run else ''}{source}"
    table = Table(title=title, title_justify="left")
    table.add_column("result")
    table.add_column("kind")
    table.add_column("id")
    table.add_column("changed fields")
    for outcome, style in _OUTCOMES:
        for item in result.get(outcome) or []:
            fields = ", ".join(str(f) for f in item.get("fields") or [])
            table.add_row(
                Text(_LABELS[outcome], style=style),
                Text(str(item.get("kind", ""))),
                Text(str(item.get("id", ""))),
                Text(fields),
            )
    if counts["created"] or counts["changed"]:  # all "left alone" needs no table
        console.print(table)
    verb = "would be" if dry_run else ""
    if counts["created"] == 0 and counts["changed"] == 0:
        console.print(
            f"Nothing {'would change' if dry_run else 'changed'}: all {counts['unchanged']} "
            f"objects already match {source}."
        )
    else:
        parts = [f"{counts[o]} {verb} {_LABELS[o]}".replace("  ", " ") for o, _ in _OUTCOMES]
        console.print(", ".join(parts) + ".")
    if dry_run:
        console.print("Dry run: nothing was changed.")
        if result.get("secrets"):
            console.print(f"{len(result['secrets'])} secret(s) will be generated when applied.")


def print_secrets(secrets: dict[str, Any]) -> None:
    if not secrets:
        return
    if all(secret is None for secret in secrets.values()):
        click.echo("")
        click.echo(
            "This apply was already done with this Idempotency-Key: the secrets generated "
            "then were shown only then (rotate a key whose secret was lost): "
            + ", ".join(sorted(str(k) for k in secrets))
        )
        return
    # Plain echo, not rich: a secret must come out exactly, never wrapped or restyled.
    click.echo("")
    click.echo("Generated API keys. Shown once; store them now (only their hashes are kept):")
    width = max(len(str(k)) for k in secrets)
    for key_id, secret in sorted(secrets.items()):
        click.echo(f"  {str(key_id).ljust(width)}  {secret}")
