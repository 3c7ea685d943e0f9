"""The team config parser: a whole document (or one key) in, the normalized form out.

``parse_micros`` is what the collector applies: amounts as integer micros. ``parse`` and
``load_file`` give the normalized document, the form ``POST /admin/v1/apply`` takes, with
amounts as canonical decimal strings. ``parse_key`` checks the fields of one key, as the admin
API takes them, by the same rules and with paths that name the fields (``cpm: ...``).
Nothing is returned unless everything is valid; ``TeamConfigError`` lists every problem.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Mapping
from importlib.resources.abc import Traversable
from typing import Any

from solverfleet.captchatypes import BUILTIN_ALIASES
from solverfleet.money import format_micros
from solverfleet.teamconfig.fields import kind
from solverfleet.teamconfig.load import loads, read_text, resolve_env
from solverfleet.teamconfig.pricing import PricingFields, is_seed_format, seed_user
from solverfleet.teamconfig.problems import Invalid, TeamConfigError, join

# ``lowBalanceAlert`` is the seed's spelling of ``low_balance_alert``; either may be given.
_ROOT_FIELDS = (
    "account",
    "low_balance_alert",
    "lowBalanceAlert",
    "prices",
    "default_price",
    "type_aliases",
    "prices_scope",
    "users",
)
_ALERT_FIELDS = ("enabled", "threshold", "webhooks")
_WEBHOOK_FIELDS = ("url", "secret")
MAX_WEBHOOKS = 10
_USER_FIELDS = ("id", "email", "role", "daily_limit", "active", "keys")
_SEED_USER_FIELDS = ("id", "email", "role", "daily_limit", "active", "api_key")
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
    "expires_at",
    "refill",
)
# How deep a user's id and a key sit in a document (root, users, a user, its keys, a key):
# one key checked on its own gets the nesting allowance it has in a file.
_USER_ID_DEPTH = 3
_KEY_DEPTH = 4


def load_file(
    path: str | os.PathLike[str] | Traversable, env: Mapping[str, str] | None = os.environ
) -> dict:
    """Read a YAML or JSON team config file, resolve ``ENV:`` references from ``env``, validate.

    Messages are prefixed with the file name. Returns the normalized document.
    """
    try:
        return parse(loads(read_text(path)), env=env)
    except TeamConfigError as exc:
        raise TeamConfigError([f"{path}: {e}" for e in exc.errors]) from None


def parse(data: Any, env: Mapping[str, str] | None = None) -> dict:
    """Validate already-loaded data and return the normalized document (amounts as strings).

    ``ENV:NAME`` strings anywhere are replaced by ``env[NAME]``; with ``env=None`` any
    ``ENV:`` value is an error (the collector parses what the CLI already resolved).
    """
    return _document(parse_micros(data, env))


def parse_micros(data: Any, env: Mapping[str, str] | None = None) -> dict:
    """``parse``, with every amount (prices, threshold, balances) as integer micros."""
    return _Parser(env).parse(data)


def parse_key(fields: Any, *, user_id: Any, prices: Collection[str] | None = None) -> dict:
    """One key's fields (``id`` included), normalized as in a team config (balance in micros).

    ``user_id`` is the key's owner, checked as a user id; ``prices`` are the priced captcha
    types (when there are any, ``allowed_types`` must be among them). Problems are reported
    at the fields' own paths: ``user_id: ...``, ``cpm: ...``, ``allowed_types[0]: ...``.
    """
    parser = _Parser(None)
    owner = resolve_env(user_id, None, parser, "user_id", _USER_ID_DEPTH)
    resolved = resolve_env(fields, None, parser, "", _KEY_DEPTH)
    parser.field(parser.ident, owner, "user_id", None)
    key = parser.field(parser.key, resolved, "", prices)
    parser.check()
    return key


USER_CREATE_FIELDS = ("id", "account", "email", "role", "daily_limit", "active")


def parse_user(fields: Any) -> dict:
    """One user without keys (``POST /admin/v1/users``), checked by the rules a team config's
    user obeys, plus its ``account`` (default ``"default"``, as in a file). Problems are
    reported at the fields' own paths: ``role: ...``, ``daily_limit: ...``."""
    parser = _Parser(None)
    resolved = resolve_env(fields, None, parser, "", _KEY_DEPTH)
    if not isinstance(resolved, dict):
        raise TeamConfigError(f"(top level): a user must be a mapping, not {kind(resolved)}")
    parser.check_fields(resolved, "", USER_CREATE_FIELDS)
    account = parser.field(parser.ident, resolved.get("account"), "account", "default")
    mine = {k: v for k, v in resolved.items() if k != "account"}
    user = parser.field(parser.user, mine, "", None)
    parser.check()
    user.pop("keys")
    return {**user, "account": account}


def _document(config: dict) -> dict:
    """A config from ``parse_micros`` with its amounts as canonical decimal strings."""
    alert = config["low_balance_alert"]
    if alert is not None:
        alert = {**alert, "threshold": _decimal(alert["threshold"])}
    users = [
        {**user, "keys": [_document_key(key) for key in user["keys"]]} for user in config["users"]
    ]
    prices = {type_: _decimal(price) for type_, price in config["prices"].items()}
    default = config["default_price"]
    return {
        **config,
        "low_balance_alert": alert,
        "prices": prices,
        "default_price": None if default is None else _decimal(default),
        "users": users,
    }


def _document_key(key: dict) -> dict:
    refill = key["refill"]
    if refill is not None:
        refill = {**refill, "amount": _decimal(refill["amount"])}
    return {**key, "balance": _decimal(key["balance"]), "refill": refill}


def _decimal(micros: int) -> str:
    # "25.00", "0.003"; zero is "0".
    return "0" if micros == 0 else format_micros(micros)


def _priced(pricing: dict) -> set[str] | None:
    """The type names ``allowed_types`` may use: every priced type and its aliases (None: any,
    when a default price prices every type)."""
    if pricing["default_price"] is not None:
        return None
    prices = pricing["prices"]
    aliases = {**BUILTIN_ALIASES, **pricing["type_aliases"]}
    return set(prices) | {alias for alias, slug in aliases.items() if slug in prices}


def _canonical_types(types: list[str] | None, aliases: dict[str, str]) -> list[str] | None:
    if types is None:
        return None
    out: dict[str, None] = {}  # ordered and linear: "turnstile" and "cloudflare-turnstile" are one
    for name in types:
        out.setdefault(BUILTIN_ALIASES.get(aliases.get(name, name), aliases.get(name, name)))
    return list(out)


class _Parser(PricingFields):
    def __init__(self, env: Mapping[str, str] | None) -> None:
        super().__init__()
        self.env = env

    def parse(self, data: Any) -> dict:
        out = self.root(resolve_env(data, self.env, self))
        self.check()
        return out

    def root(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise TeamConfigError(f"(top level): a team config must be a mapping, not {kind(data)}")
        self.check_fields(data, "", _ROOT_FIELDS)
        seed = is_seed_format(data)
        if seed:
            data = {**data, "users": [seed_user(u) for u in data["users"]]}
        pricing = self.pricing(data, seed)
        if pricing["prices"] is None:
            pricing["prices"] = {}
            priced = None  # reported already; don't add "has no price" to every key
        else:
            priced = _priced(pricing)
        users = self.field(self.users, data.get("users"), "users", priced) or []
        for user in users:
            for key in user["keys"]:
                key["allowed_types"] = _canonical_types(
                    key["allowed_types"], pricing["type_aliases"]
                )
        return {
            "account": self.field(self.ident, data.get("account"), "account", "default"),
            "low_balance_alert": self.field(self.alert_section, data),
            **pricing,
            "users": users,
        }

    def check_fields(self, data: dict, path: str, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key in allowed:
                continue
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            label = key if isinstance(key, str) else repr(key)
            self.fail(join(path, str(label)), f"unknown field{suffix}")

    # sections

    def alert_section(self, data: dict) -> dict | None:
        if "low_balance_alert" in data and "lowBalanceAlert" in data:
            raise self.fail(
                "lowBalanceAlert",
                "give low_balance_alert or lowBalanceAlert (the seed's spelling), not both",
            )
        name = "lowBalanceAlert" if "lowBalanceAlert" in data else "low_balance_alert"
        return self.alert(data.get(name), name)

    def alert(self, value: Any, path: str) -> dict | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(
                path, f"must be a mapping with enabled, threshold and webhooks, not {kind(value)}"
            )
        self.check_fields(value, path, _ALERT_FIELDS)
        enabled = self.field(self.boolean, value.get("enabled"), join(path, "enabled"), True)
        threshold = self.field(self.amount, value.get("threshold"), join(path, "threshold"), 0)
        webhooks = self.field(self.webhooks, value.get("webhooks"), join(path, "webhooks"))
        return {"enabled": enabled, "threshold": threshold, "webhooks": webhooks or []}

    def webhooks(self, value: Any, path: str) -> list[dict]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of {{url, secret}} mappings, not {kind(value)}")
        if len(value) > MAX_WEBHOOKS:
            raise self.fail(path, f"at most {MAX_WEBHOOKS} webhooks, got {len(value)}")
        out: list[dict] = []
        seen: dict[str, str] = {}
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            hook = self.field(self.webhook, item, where)
            if hook is None:
                continue
            if hook["url"] in seen:
                self.fail(join(where, "url"), f"duplicate webhook URL (also {seen[hook['url']]})")
                continue
            seen[hook["url"]] = where
            out.append(hook)
        if len(out) != len(value):
            raise Invalid()
        return out

    def webhook(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(
                path, f"a webhook must be a mapping with url and secret, not {kind(value)}"
            )
        self.check_fields(value, path, _WEBHOOK_FIELDS)
        url = self.field(self.url, value.get("url"), join(path, "url"))
        secret = self.field(self.webhook_secret, value.get("secret"), join(path, "secret"))
        if url is None or secret is None:
            raise Invalid()
        return {"url": url, "secret": secret}

    def users(self, value: Any, path: str, prices: Collection[str] | None) -> list[dict] | None:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of users, not {kind(value)}")
        out = []
        user_ids: dict[str, str] = {}
        key_ids: dict[str, str] = {}
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            user = self.field(self.user, item, where, prices)
            if user is None:
                continue
            if user["id"] in user_ids:
                self.fail(
                    f"{where}.id", f"duplicate user id {user['id']!r} (also {user_ids[user['id']]})"
                )
            else:
                user_ids[user["id"]] = f"{where}"
            for k, key in enumerate(user["keys"]):
                if key["id"] in key_ids:
                    first = key_ids[key["id"]]
                    self.fail(
                        self.key_id_path(item, where, k),
                        f"duplicate key id {key['id']!r} (also {first})",
                    )
                else:
                    key_ids[key["id"]] = self.key_id_path(item, where, k)
            out.append(user)
        return out

    @staticmethod
    def key_id_path(item: dict, where: str, k: int) -> str:
        # A seed user's key is named after the user.
        return f"{where}.id" if "api_key" in item else f"{where}.keys[{k}].id"

    def user(self, value: Any, path: str, prices: Collection[str] | None) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"a user must be a mapping, not {kind(value)}")
        seed = "api_key" in value
        if seed and "keys" in value:
            raise self.fail(
                path, "give either api_key (one key named after the user) or keys, not both"
            )
        self.check_fields(value, path, _SEED_USER_FIELDS if seed else _USER_FIELDS)
        user_id = self.field(self.ident, value.get("id"), join(path, "id"), None)
        user = {
            "id": user_id,
            "email": self.field(self.email, value.get("email"), join(path, "email")),
            "role": self.field(self.role, value.get("role"), join(path, "role")),
            "daily_limit": self.field(
                self.count, value.get("daily_limit"), join(path, "daily_limit")
            ),
            "active": self.field(self.boolean, value.get("active"), join(path, "active"), True),
        }
        if seed:
            secret = self.field(self.secret, value.get("api_key"), join(path, "api_key"))
            keys = [] if user_id is None else [_seed_key(user_id, secret)]
        else:
            keys = self.field(self.keys, value.get("keys"), join(path, "keys"), prices) or []
        if user_id is None:
            raise Invalid()
        user["keys"] = keys
        return user

    def keys(self, value: Any, path: str, prices: Collection[str] | None) -> list[dict]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of keys, not {kind(value)}")
        out = []
        for i, item in enumerate(value):
            key = self.field(self.key, item, f"{path}[{i}]", prices)
            if key is not None:
                out.append(key)
        return out

    def key(self, value: Any, path: str, prices: Collection[str] | None) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"a key must be a mapping, not {kind(value)}")
        self.check_fields(value, path, KEY_FIELDS)
        f = self.field

        def at(name: str) -> str:
            return join(path, name)

        key = {
            "id": f(self.ident, value.get("id"), at("id"), None),
            "secret": f(self.secret, value.get("secret"), at("secret")),
            "project": f(self.label, value.get("project"), at("project")),
            "environment": f(self.label, value.get("environment"), at("environment")),
            "balance": f(self.amount, value.get("balance"), at("balance"), 0),
            "allowed_types": f(self.types, value.get("allowed_types"), at("allowed_types"), prices),
            "cpm": f(self.count, value.get("cpm"), at("cpm")),
            "ip_allowlist": f(self.cidrs, value.get("ip_allowlist"), at("ip_allowlist")),
            "active": f(self.boolean, value.get("active"), at("active"), True),
            "expires_at": f(self.timestamp, value.get("expires_at"), at("expires_at")),
            "refill": f(self.refill, value.get("refill"), at("refill")),
        }
        if key["id"] is None:
            raise Invalid()
        return key


def _seed_key(user_id: str, secret: str | None) -> dict:
    return {
        "id": user_id,
        "secret": secret,
        "project": None,
        "environment": None,
        "balance": 0,
        "allowed_types": None,
        "cpm": None,
        "ip_allowlist": None,
        "active": True,
        "expires_at": None,
        "refill": None,
    }
