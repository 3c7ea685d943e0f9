"""Shared pieces of the CLI: error reporting, admin connection options, money display."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from solverfleet.adminclient import AdminClient, AdminError, url_problem
from solverfleet.money import MoneyError, format_micros, to_micros

# Exit codes (docs/operations.md, "CLI"): 0 ok, 1 the collector answered with an error,
# 2 usage (click's own), 3 the collector could not be reached (refused, timeout, TLS).
EXIT_UNREACHABLE = 3

# Piped output (logs, CI, tests) is not squeezed into rich's default 80 columns.
_PIPED_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(highlight=False, width=_PIPED_WIDTH)


class CliError(click.ClickException):
    """Shown as ``error: <message>`` on stderr, with ``exit_code`` (1 unless told)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def money(value: Any) -> str:
    """A decimal amount from the API, shown canonically ("25.00", "0.003"); never via float."""
    if value is None:
        return "-"
    if isinstance(value, float):  # the API promises strings; do not round a float silently
        return repr(value)
    try:
        micros = to_micros(
            value if isinstance(value, str | int | Decimal) else str(value), allow_negative=True
        )
    except (MoneyError, ArithmeticError):
        return str(value)
    return format_micros(micros)


def read_stack_file(path: str) -> dict:
    """``stack.json`` written by ``solverfleet local`` (a file, or the state dir holding it)."""
    file = Path(path)
    if file.is_dir():
        file = file / "stack.json"
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise CliError(
            f"cannot read {file}: {exc.strerror} (is `solverfleet local` running?)"
        ) from None
    except ValueError:
        raise CliError(f"{file} is not valid JSON") from None
    if not isinstance(data, dict) or "collector" not in data or "admin_token" not in data:
        raise CliError(f"{file} is not a stack file (needs collector and admin_token)")
    return data


def admin_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--collector/--token/--stack/--timeout/--ca-file; the command receives
    ``client: AdminClient``."""

    @click.option(
        "--collector",
        envvar="SOLVERFLEET_COLLECTOR",
        metavar="URL",
        help="Collector base URL (env SOLVERFLEET_COLLECTOR).",
    )
    @click.option(
        "--token",
        envvar="SOLVERFLEET_TOKEN",
        metavar="TOKEN",
        help="Admin bearer token (env SOLVERFLEET_TOKEN).",
    )
    @click.option(
        "--stack",
        "stack_file",
        envvar="SOLVERFLEET_STACK",
        metavar="PATH",
        help="Take URL and token from a `solverfleet local` stack.json (or its directory).",
    )
    @click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=30.0,
        show_default=True,
        help="Seconds.",
    )
    @click.option(
        "--ca-file",
        envvar="SOLVERFLEET_CA_FILE",
        type=click.Path(exists=True, dir_okay=False, readable=True),
        metavar="PEM",
        help="CA bundle that verifies an https collector (env SOLVERFLEET_CA_FILE); "
        "default: the system trust store.",
    )
    @functools.wraps(fn)
    def wrapper(
        collector: str | None,
        token: str | None,
        stack_file: str | None,
        timeout: float,
        ca_file: str | None,
        **kw: Any,
    ) -> Any:
        if stack_file:
            stack = read_stack_file(stack_file)
            collector = collector or stack["collector"]
            token = token or stack["admin_token"]
        if not collector:
            raise CliError(
                "no collector URL: give --collector, SOLVERFLEET_COLLECTOR or --stack", 2
            )
        problem = url_problem(collector)
        if problem:
            raise CliError(f"--collector: {problem}", 2)
        if not token:
            raise CliError("no admin token: give --token, SOLVERFLEET_TOKEN or --stack", 2)
        with AdminClient(collector, token, timeout=timeout, ca_file=ca_file) as client:
            try:
                return fn(client=client, **kw)
            except AdminError as exc:
                raise CliError(str(exc), EXIT_UNREACHABLE if exc.unreachable else 1) from None

    return wrapper


def idempotency_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--idempotency-key KEY``: the command receives ``idempotency_key`` (None: a new uuid4)."""
    return click.option(
        "--idempotency-key",
        "idempotency_key",
        metavar="KEY",
        help="Idempotency-Key to send (default: a new random one). Repeating the command with "
        "the same key and arguments within 24 h does nothing again and shows the first answer.",
    )(fn)


def show_secret(label: str, result: dict) -> None:
    """Print a one-time secret, or why a replayed answer has none. Plain ``click.echo``, not
    rich: the secret stays on one unbroken line whatever the terminal's width."""
    if result.get("secret") is not None:
        click.echo(f"{label} (shown once, store it now): {result['secret']}")
        return
    note = result.get("secret_withheld") or "the answer holds no secret"
    console.print(f"{label}: not shown: {note}", markup=False)
