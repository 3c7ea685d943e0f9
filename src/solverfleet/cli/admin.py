"""``solverfleet keys ...`` and ``solverfleet users ...``: day-to-day admin of the collector."""

from __future__ import annotations

import re
from typing import Any

import click

from solverfleet.adminclient import AdminClient
from solverfleet.cli.common import admin_options, console, idempotency_option, money, show_secret
from solverfleet.cli.output import Column, format_option, iso_time, render
from solverfleet.money import MoneyError, format_micros, to_micros
from solverfleet.teamconfig import ROLES

_PLAIN_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


@click.group("keys")
def keys_group() -> None:
    """API keys: create, list, set limits, rotate, top up, activate, deactivate, delete."""


@click.group("users")
def users_group() -> None:
    """Users: create, list, activate, deactivate."""


def _amount(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Plain decimal notation only, as in team configs: "1e3" is more likely a typo than intent.
    if value is None:
        return None
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
@idempotency_option
@admin_options
def keys_topup(
    client: AdminClient,
    key_id: str,
    amount: str,
    reason: str | None,
    idempotency_key: str | None,
) -> None:
    """Add AMOUNT (a decimal such as 10.00) to KEY_ID's balance (once per --idempotency-key)."""
    result = client.topup(key_id, amount, reason, idempotency_key=idempotency_key)
    again = " (already done: this is the first answer again)" if client.last_replayed else ""
    console.print(
        f"Topped up {key_id} by {amount}: balance now {money(result.get('balance'))}"
        f" (transaction {result.get('transaction_id')}){again}.",
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


def _where(key: dict) -> str:
    return "/".join(str(key.get(f) or "-") for f in ("project", "environment"))


KEY_COLUMNS = (
    Column("key", "id", "id"),
    Column("user", "user_id", "id"),
    Column("account", "account"),
    Column("project/env", _where, only="table"),
    Column("project", "project", only="csv"),
    Column("environment", "environment", only="csv"),
    Column("balance", "balance", "money"),
    Column("types", "allowed_types", "list", none="all"),
    Column("cpm", "cpm", "count"),
    Column("ips", "ip_allowlist", "list", none="any"),
    Column("expires_at", "expires_at", "time", only="csv"),  # the list's table stays narrow
    Column("active", "active", "flag"),
)
# One key in a table has room for its expiry.
SHOW_KEY_COLUMNS = (*KEY_COLUMNS, Column("expires (UTC)", "expires_at", "time", none="never"))
USER_COLUMNS = (
    Column("user", "id", "id"),
    Column("email", "email"),
    Column("account", "account"),
    Column("role", "role"),
    Column("daily limit", "daily_limit", "count", none="none"),
    Column("active", "active", "flag"),
)
SECRET_KEY_COLUMNS = (*KEY_COLUMNS, Column("secret", "secret"))
ROTATE_COLUMNS = (
    Column("key", "key"),
    Column("secret", "secret"),
    Column("old secret valid until", "previous_valid_until", "time"),
)
TRANSACTION_COLUMNS = (
    Column("id", "id", "count"),
    Column("when (UTC)", "created", "time"),
    Column("amount", "amount", "money"),
    Column("balance after", "balance_after", "money"),
    Column("reason", "reason"),
    Column("by", "actor"),
)


@keys_group.command("list")
@format_option
@admin_options
def keys_list(client: AdminClient, fmt: str) -> None:
    """Every key with its balance and limits (never secrets)."""
    keys = client.list_keys()
    render(fmt, keys, KEY_COLUMNS, title=f"{len(keys)} key(s)", data={"keys": keys})


@keys_group.command("show")
@click.argument("key_id")
@format_option
@admin_options
def keys_show(client: AdminClient, key_id: str, fmt: str) -> None:
    """KEY_ID's balance, limits and state (never its secret)."""
    key = client.get_key(key_id)
    render(fmt, [key], SHOW_KEY_COLUMNS, title=f"key {key_id}", data=key)


@users_group.command("create")
@click.argument("user_id")
@click.option("--account", help="An existing account (default: default).")
@click.option("--email")
@click.option("--role", type=click.Choice(ROLES), help="Default: user.")
@click.option("--daily-limit", type=click.IntRange(min=0), help="Calls per day (default: none).")
@click.option("--inactive", is_flag=True, help="Create it deactivated.")
@format_option
@idempotency_option
@admin_options
def users_create(
    client: AdminClient,
    user_id: str,
    account: str | None,
    email: str | None,
    role: str | None,
    daily_limit: int | None,
    inactive: bool,
    fmt: str,
    idempotency_key: str | None,
) -> None:
    """Create USER_ID (checked as a team config's user is); give it keys with `keys create`."""
    fields = {"id": user_id, "account": account, "email": email, "role": role,
              "daily_limit": daily_limit, "active": False if inactive else None}  # fmt: skip
    result = client.create_user(fields, idempotency_key=idempotency_key)
    user = result.get("user") or {}
    title = f"Created user {user.get('id', user_id)}"
    if client.last_replayed:
        title += " (already done: this is the first answer again)"
    render(fmt, [user], USER_COLUMNS, title=title, data=result)


@users_group.command("list")
@format_option
@admin_options
def users_list(client: AdminClient, fmt: str) -> None:
    """Every user with role, daily limit and state."""
    users = client.list_users()
    render(fmt, users, USER_COLUMNS, title=f"{len(users)} user(s)", data={"users": users})


# --- key lifecycle: create, set, rotate, transactions ----------------------------------------


def _balance(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    if not _PLAIN_DECIMAL.match(value.strip()):
        raise click.BadParameter(f"not a decimal amount such as 10.00: {value!r}")
    try:
        return format_micros(to_micros(value))
    except (MoneyError, ArithmeticError) as exc:
        raise click.BadParameter(str(exc)) from None


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


_limit_options = [
    click.option("--project", help="Project label."),
    click.option("--environment", help="Environment label (e.g. prod)."),
    click.option("--types", help="Comma-separated captcha types the key may use."),
    click.option("--cpm", type=click.IntRange(min=0), help="Calls-per-minute ceiling."),
    click.option("--ips", help="Comma-separated CIDRs calls may come from."),
    click.option(
        "--expires-at",
        metavar="TIME",
        help="Refuse the key from this ISO-8601 UTC time on, e.g. 2026-12-31T00:00:00Z.",
    ),
    click.option(
        "--refill",
        "refill_amount",
        callback=_amount,
        metavar="AMOUNT",
        help="Top the balance up to AMOUNT at 00:00 UTC each period (see --refill-interval).",
    ),
    click.option(
        "--refill-interval",
        type=click.Choice(["daily", "monthly"]),
        default="daily",
        show_default=True,
        help="With --refill: every day, or monthly on --refill-day.",
    ),
    click.option(
        "--refill-day",
        type=click.IntRange(1, 31),
        help="With --refill-interval monthly: day of the month (31: the last day). Default 1.",
    ),
]


def _refill(amount: str | None, interval: str, day: int | None) -> dict | None:
    """The ``refill`` field from the options, or None when --refill is not given."""
    if amount is None:
        if day is not None:
            raise click.UsageError("--refill-day needs --refill AMOUNT")
        return None
    if day is not None and interval != "monthly":
        raise click.UsageError("--refill-day is for --refill-interval monthly")
    return {"amount": amount, "interval": interval, "day": day}


def _with_limit_options(fn: Any) -> Any:
    for option in reversed(_limit_options):
        fn = option(fn)
    return fn


@keys_group.command("create")
@click.argument("user_id")
@click.option("--id", "key_id", help="Key id (default: USER_ID-<random>).")
@_with_limit_options
@click.option("--balance", callback=_balance, help="Opening balance, e.g. 10.00 (default 0).")
@click.option("--inactive", is_flag=True, help="Create it deactivated.")
@format_option
@idempotency_option
@admin_options
def keys_create(
    client: AdminClient,
    user_id: str,
    key_id: str | None,
    project: str | None,
    environment: str | None,
    types: str | None,
    cpm: int | None,
    ips: str | None,
    expires_at: str | None,
    refill_amount: str | None,
    refill_interval: str,
    refill_day: int | None,
    balance: str | None,
    inactive: bool,
    fmt: str,
    idempotency_key: str | None,
) -> None:
    """Create a key for USER_ID and print its secret (shown this once; stored hashed).

    Without --types, --cpm or --ips the key has no such limit.
    """
    result = client.create_key(
        user_id,
        id=key_id,
        project=project,
        environment=environment,
        balance=balance,
        allowed_types=_csv(types),
        cpm=cpm,
        ip_allowlist=_csv(ips),
        expires_at=expires_at,
        refill=_refill(refill_amount, refill_interval, refill_day),
        active=False if inactive else None,
        idempotency_key=idempotency_key,
    )
    key = result.get("key") or {}
    if fmt != "table":
        render(fmt, [{**key, "secret": result.get("secret")}], SECRET_KEY_COLUMNS, title="",
               data=result)  # fmt: skip
        return
    console.print(
        f"Created key {key.get('id')} for {key.get('user_id')}"
        f" (balance {money(key.get('balance'))}).",
        markup=False,
    )
    show_secret("Secret", result)


@keys_group.command("set")
@click.argument("key_id")
@_with_limit_options
@click.option("--no-project", is_flag=True, help="Remove the project label.")
@click.option("--no-environment", is_flag=True, help="Remove the environment label.")
@click.option("--all-types", is_flag=True, help="Allow every priced captcha type.")
@click.option("--no-cpm", is_flag=True, help="Lift the calls-per-minute ceiling.")
@click.option("--any-ip", is_flag=True, help="Accept calls from any address.")
@click.option("--no-expiry", is_flag=True, help="Remove the expiry time.")
@click.option("--no-refill", is_flag=True, help="Stop the automatic refill.")
@admin_options
def keys_set(client: AdminClient, key_id: str, **opts: Any) -> None:
    """Change KEY_ID's limits, labels, expiry and refill; agents apply them within about a
    second. --refill replaces the whole schedule (amount, interval and day)."""
    refill = _refill(opts["refill_amount"], opts["refill_interval"], opts["refill_day"])
    pairs = {
        "project": ("project", "no_project", opts["project"]),
        "environment": ("environment", "no_environment", opts["environment"]),
        "allowed_types": ("types", "all_types", _csv(opts["types"])),
        "cpm": ("cpm", "no_cpm", opts["cpm"]),
        "ip_allowlist": ("ips", "any_ip", _csv(opts["ips"])),
        "expires_at": ("expires-at", "no_expiry", opts["expires_at"]),
        "refill": ("refill", "no_refill", refill),
    }
    changes: dict[str, Any] = {}
    for field, (name, lift, value) in pairs.items():
        if opts[lift] and value is not None:
            flag = lift.replace("_", "-")
            raise click.UsageError(f"--{name} and --{flag} contradict each other")
        if opts[lift]:
            changes[field] = None
        elif value is not None:
            changes[field] = value
    if not changes:
        raise click.UsageError("nothing to change: give at least one option (see --help)")
    result = client.update_key(key_id, changes)
    changed = result.get("changed") or []
    summary = ", ".join(changed) if changed else "nothing (already so)"
    console.print(f"{key_id}: changed {summary}.", markup=False)


@keys_group.command("delete")
@click.argument("key_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@admin_options
def keys_delete(client: AdminClient, key_id: str, yes: bool) -> None:
    """Delete KEY_ID: its secret stops working on every agent within about a second and is
    purged; its usage and ledger stay in reports. Cannot be undone, and the id is not reused."""
    if not yes:
        click.confirm(f"Delete key {key_id}? Its secret stops working at once", abort=True)
    result = client.delete_key(key_id)
    console.print(
        f"Deleted {key_id} (balance at deletion {money(result.get('balance'))}).", markup=False
    )


@keys_group.command("rotate")
@click.argument("key_id")
@click.option(
    "--grace",
    type=click.IntRange(0, 30 * 86400),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="How long the old secret keeps working (0: refused at once).",
)
@format_option
@idempotency_option
@admin_options
def keys_rotate(
    client: AdminClient, key_id: str, grace: int, fmt: str, idempotency_key: str | None
) -> None:
    """Give KEY_ID a new secret (printed once); the old one works for --grace seconds."""
    result = client.rotate_key(key_id, grace, idempotency_key=idempotency_key)
    if fmt != "table":
        row = {"key": key_id, **result}
        render(fmt, [row], ROTATE_COLUMNS, title="", data=result)
        return
    console.print(f"Rotated {key_id}.", markup=False)
    show_secret("New secret", result)
    until = result.get("previous_valid_until")
    if until is None:
        console.print("The old secret is refused from now on.", markup=False)
    else:
        console.print(f"The old secret works until {iso_time(until)} ({grace} s).", markup=False)


@keys_group.command("transactions")
@click.argument("key_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@format_option
@admin_options
def keys_transactions(client: AdminClient, key_id: str, limit: int, fmt: str) -> None:
    """KEY_ID's ledger: opening balance and top-ups, newest first, with who and why."""
    rows = client.key_transactions(key_id, limit)
    title = f"{key_id}: {len(rows)} transaction(s)"
    data = {"key": key_id, "transactions": rows}
    render(fmt, rows, TRANSACTION_COLUMNS, title=title, data=data)
