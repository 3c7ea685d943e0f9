"""Defensive check of a *normalized* team config before anything is written.

``solverfleet.teamconfig.parse`` is the full validator; this second, smaller check guards the
database against callers that skip it (tests, scripts, a future CLI): exact field sets, types,
no unresolved ``ENV:`` values, parseable CIDRs, exact non-negative amounts, unique ids.
It returns the config with amounts as micros and CIDRs in canonical form.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from solverfleet.collector.problems import ConfigInvalid
from solverfleet.money import MoneyError, to_micros

ROLES = ("admin", "user", "service")
MAX_AMOUNT_MICROS = 10**15
MAX_COUNT = 10**9
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SECRET_RE = re.compile(r"^[!-~]{8,512}$")

ROOT_FIELDS = ("account", "low_balance_alert", "prices", "users")
USER_FIELDS = ("id", "email", "role", "daily_limit", "active", "keys")
KEY_FIELDS = (
    "id",
    "secret",
    "project",
    "environment",
    "balance",
    "allowed_types",
    "cpm",
    "ip_allowlist",
    "active",
)


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path or '(top level)'}: {message}")

    def fields(self, data: Any, path: str, allowed: tuple[str, ...]) -> dict:
        if not isinstance(data, dict):
            self.fail(path, "must be a mapping")
            return {}
        for key in data:
            if key not in allowed:
                self.fail(f"{path}.{key}" if path else str(key), "unknown field")
        return data

    def env_refs(self, value: Any, path: str) -> None:
        if isinstance(value, str) and value.startswith("ENV:"):
            self.fail(path, "unresolved ENV: reference (resolve it before applying)")
        elif isinstance(value, dict):
            for k, v in value.items():
                self.env_refs(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.env_refs(v, f"{path}[{i}]")

    def ident(self, value: Any, path: str, default: str | None = None) -> str | None:
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or not _ID_RE.match(value):
            self.fail(path, f"not a valid id: {value!r}")
            return None
        return value

    def text(self, value: Any, path: str, limit: int) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value) > limit:
            self.fail(path, f"must be a string of 1 to {limit} characters")
        return value

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {value!r}")
        return value

    def count(self, value: Any, path: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            self.fail(path, f"must be a whole number from 0 to {MAX_COUNT}, not {value!r}")
            return None
        return value

    def amount(self, value: Any, path: str, default: int | None = None) -> int:
        if value is None and default is not None:
            return default
        try:
            micros = to_micros(value)
        except (MoneyError, ArithmeticError) as exc:
            self.fail(path, str(exc) if isinstance(exc, MoneyError) else "not an amount")
            return 0
        if micros > MAX_AMOUNT_MICROS:
            self.fail(path, f"amount too large: {value!r}")
        return micros

    def strings(self, value: Any, path: str, pattern: re.Pattern[str]) -> list[str] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(path, "must be a list or null")
            return None
        for i, item in enumerate(value):
            if not isinstance(item, str) or not pattern.match(item):
                self.fail(f"{path}[{i}]", f"not a valid name: {item!r}")
        if len(set(map(str, value))) != len(value):
            self.fail(path, "has duplicates")
        return list(value)

    def cidrs(self, value: Any, path: str) -> list[str] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(path, "must be a list of CIDRs or null")
            return None
        out = []
        for i, item in enumerate(value):
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except (TypeError, ValueError):
                self.fail(f"{path}[{i}]", f"not a CIDR: {item!r}")
        return out


def check(config: Any) -> dict:
    """Validate a normalized team config; raise ``ConfigInvalid`` listing every problem."""
    c = _Checker()
    root = c.fields(config, "", ROOT_FIELDS)
    c.env_refs(root, "")
    out: dict[str, Any] = {"account": c.ident(root.get("account"), "account", "default")}

    alert = root.get("low_balance_alert")
    out["low_balance_alert"] = None
    if alert is not None:
        alert = c.fields(alert, "low_balance_alert", ("enabled", "threshold"))
        out["low_balance_alert"] = {
            "enabled": c.boolean(alert.get("enabled"), "low_balance_alert.enabled", True),
            "threshold_micros": c.amount(alert.get("threshold"), "low_balance_alert.threshold", 0),
        }

    prices = root.get("prices") or {}
    out["prices"] = {}
    if not isinstance(prices, dict):
        c.fail("prices", "must be a mapping of captcha type to price")
        prices = {}
    for type_, price in prices.items():
        if not isinstance(type_, str) or not _TYPE_RE.match(type_):
            c.fail(f"prices.{type_}", "not a captcha type name")
        out["prices"][type_] = c.amount(price, f"prices.{type_}")

    users = root.get("users") or []
    if not isinstance(users, list):
        c.fail("users", "must be a list")
        users = []
    out["users"] = []
    seen_users: set[str] = set()
    seen_keys: set[str] = set()
    for i, raw_user in enumerate(users):
        path = f"users[{i}]"
        user = c.fields(raw_user, path, USER_FIELDS)
        uid = c.ident(user.get("id"), f"{path}.id")
        if uid in seen_users:
            c.fail(f"{path}.id", f"duplicate user id {uid!r}")
        seen_users.add(uid or "")
        role = user.get("role") or "user"
        if role not in ROLES:
            c.fail(f"{path}.role", f"unknown role {role!r} (one of {', '.join(ROLES)})")
        keys = user.get("keys") or []
        if not isinstance(keys, list):
            c.fail(f"{path}.keys", "must be a list")
            keys = []
        out_user = {
            "id": uid,
            "email": c.text(user.get("email"), f"{path}.email", 254),
            "role": role,
            "daily_limit": c.count(user.get("daily_limit"), f"{path}.daily_limit"),
            "active": c.boolean(user.get("active"), f"{path}.active", True),
            "keys": [],
        }
        for k, raw_key in enumerate(keys):
            kpath = f"{path}.keys[{k}]"
            key = c.fields(raw_key, kpath, KEY_FIELDS)
            kid = c.ident(key.get("id"), f"{kpath}.id")
            if kid in seen_keys:
                c.fail(f"{kpath}.id", f"duplicate key id {kid!r}")
            seen_keys.add(kid or "")
            secret = key.get("secret")
            if secret is not None and (not isinstance(secret, str) or not _SECRET_RE.match(secret)):
                c.fail(f"{kpath}.secret", "must be 8 to 512 printable ASCII characters")
            out_user["keys"].append(
                {
                    "id": kid,
                    "secret": secret,
                    "project": c.text(key.get("project"), f"{kpath}.project", 128),
                    "environment": c.text(key.get("environment"), f"{kpath}.environment", 128),
                    "balance_micros": c.amount(key.get("balance"), f"{kpath}.balance", 0),
                    "allowed_types": c.strings(
                        key.get("allowed_types"), f"{kpath}.allowed_types", _TYPE_RE
                    ),
                    "cpm": c.count(key.get("cpm"), f"{kpath}.cpm"),
                    "ip_allowlist": c.cidrs(key.get("ip_allowlist"), f"{kpath}.ip_allowlist"),
                    "active": c.boolean(key.get("active"), f"{kpath}.active", True),
                }
            )
        out["users"].append(out_user)
    if c.errors:
        raise ConfigInvalid(c.errors)
    return out
