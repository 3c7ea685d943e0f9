"""Team config as code: read, validate and normalize a team's accounts, users, keys and prices.

Two input formats normalize to one form (docs/ARCHITECTURE.md, "Team config"):

- the full format: ``account``, ``low_balance_alert``, ``prices`` and ``users`` with ``keys``;
- the seed's shorthand: a user with ``api_key`` instead of ``keys`` gets one key named after
  the user, with that secret and an opening balance of 0.

Every problem is reported with its path (``users[0].keys[1].ip_allowlist[0]: ...``), all of
them at once, and nothing is returned unless the whole document is valid. Secret values never
appear in messages, nor does any value that came from an ``ENV:`` reference.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from solverfleet.money import MAX_AMOUNT_MICROS, MoneyError, format_micros, to_micros

ROLES = ("admin", "user", "service")
ENV_PREFIX = "ENV:"
MAX_COUNT = 10**9
MAX_ERRORS = 50
MAX_DEPTH = 20
MIN_SECRET_LENGTH = 8
MAX_SECRET_LENGTH = 512

# Ids end up in admin URLs (/admin/v1/keys/<id>), so no slashes, spaces or leading dots.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Plain decimal notation only: "1e3" or "1_000" in a price list is more likely a typo than intent.
_AMOUNT_RE = re.compile(r"^-?\d+(\.\d+)?$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
# Secrets travel in HTTP headers: printable ASCII, no whitespace.
_SECRET_RE = re.compile(r"^[!-~]+$")
_URL_CHARS = re.compile(r"^[!-~]+$")

# ``lowBalanceAlert`` is the seed's spelling of ``low_balance_alert``; either may be given.
_ROOT_FIELDS = ("account", "low_balance_alert", "lowBalanceAlert", "prices", "users")
_ALERT_FIELDS = ("enabled", "threshold", "webhooks")
_WEBHOOK_FIELDS = ("url", "secret")
MAX_WEBHOOKS = 10
MAX_URL_LENGTH = 2048
MIN_WEBHOOK_SECRET_LENGTH = 16  # an HMAC key: long enough not to be guessed
_USER_FIELDS = ("id", "email", "role", "daily_limit", "active", "keys")
_SEED_USER_FIELDS = ("id", "email", "role", "daily_limit", "active", "api_key")
_KEY_FIELDS = (
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


class TeamConfigError(ValueError):
    """An invalid team config. ``errors`` lists every problem as ``"path: message"``."""

    def __init__(self, errors: list[str] | str) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        if len(self.errors) == 1:
            text = self.errors[0]
        else:
            text = f"{len(self.errors)} problems:\n" + "\n".join(f"  {e}" for e in self.errors)
        super().__init__(text)


class _Invalid(Exception):
    """Internal: one field failed; already recorded."""


def load_file(path: str | os.PathLike[str], env: Mapping[str, str] | None = os.environ) -> dict:
    """Read a YAML or JSON team config file, resolve ``ENV:`` references from ``env``, validate.

    Messages are prefixed with the file name. Returns the normalized form.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TeamConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TeamConfigError(f"{name}: not UTF-8 text") from None
    try:
        data = loads(text)
        return parse(data, env=env)
    except TeamConfigError as exc:
        raise TeamConfigError([f"{name}: {e}" for e in exc.errors]) from None


def loads(text: str) -> Any:
    """Parse YAML or JSON text (chosen by content) into plain data, refusing duplicate keys."""
    if not text.strip():
        raise TeamConfigError("empty document")
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text, object_pairs_hook=_json_pairs)
        except json.JSONDecodeError as exc:
            json_error = f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        except _DuplicateKey as exc:
            raise TeamConfigError(f"duplicate key {exc.key!r}") from None
        # A YAML flow mapping also starts with "{"; only blame JSON if YAML fails as well.
        try:
            return yaml.load(text, Loader=_StrictLoader)
        except (yaml.YAMLError, _DuplicateKey):
            raise TeamConfigError(json_error) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as exc:
        raise TeamConfigError(f"duplicate key {exc.key!r}{exc.where}") from None
    except yaml.YAMLError as exc:
        raise TeamConfigError(f"invalid YAML{_yaml_where(exc)}") from None


def parse(data: Any, env: Mapping[str, str] | None = None) -> dict:
    """Validate already-loaded data and return the normalized form.

    ``ENV:NAME`` strings anywhere are replaced by ``env[NAME]``; with ``env=None`` any
    ``ENV:`` value is an error (the collector parses what the CLI already resolved).
    """
    return _Parser(env).parse(data)


# --- loading helpers -------------------------------------------------------------------------


class _DuplicateKey(Exception):
    def __init__(self, key: Any, where: str = "") -> None:
        self.key = key
        self.where = where


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key; let PyYAML report it
                break
            if duplicate:
                mark = key_node.start_mark
                raise _DuplicateKey(key, f" at line {mark.line + 1} column {mark.column + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
    return f"{where}: {problem}" if problem else where


# --- validation ------------------------------------------------------------------------------


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


class _Parser:
    def __init__(self, env: Mapping[str, str] | None) -> None:
        self.env = env
        self.errors: list[str] = []
        self.failed: set[str] = set()
        self.env_paths: dict[str, str] = {}  # path -> ENV name, so messages hide the value

    # error recording

    def fail(self, path: str, message: str) -> _Invalid:
        # One message per path: an unresolved ENV: value is not also "not a decimal amount".
        if path not in self.failed and len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{path or '(top level)'}: {message}")
        self.failed.add(path)
        return _Invalid()

    def show(self, path: str, value: Any) -> str:
        if path in self.env_paths:
            return f"(value of ENV:{self.env_paths[path]})"
        return repr(value)

    def field(self, fn, *args: Any) -> Any:
        """Run one field validator; on failure keep going so every problem is reported."""
        try:
            return fn(*args)
        except _Invalid:
            return None

    # ENV: references

    def resolve(self, value: Any, path: str) -> Any:
        if not (isinstance(value, str) and value.startswith(ENV_PREFIX)):
            return value
        name = value[len(ENV_PREFIX) :]
        if not name:
            raise self.fail(path, "empty ENV: reference")
        if self.env is None:
            raise self.fail(path, f"ENV:{name} is not resolved (no environment here)")
        if name not in self.env:
            raise self.fail(path, f"environment variable {name} is not set")
        self.env_paths[path] = name
        return self.env[name]

    def resolve_all(self, value: Any, path: str, depth: int = 0) -> Any:
        # Resolve field by field so one unset variable does not hide the others.
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            # A valid config is 5 levels deep; this keeps hostile input from recursing away.
            self.fail(path, "nested too deeply")
            return None
        if isinstance(value, dict):
            return {
                k: self.resolve_all(v, _join(path, str(k)), depth + 1) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.resolve_all(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        try:
            return self.resolve(value, path)
        except _Invalid:
            return value

    # top level

    def parse(self, data: Any) -> dict:
        out = self.root(self.resolve_all(data, ""))
        if self.failed:
            raise TeamConfigError(self.errors)
        return out

    def root(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise TeamConfigError(
                f"(top level): a team config must be a mapping, not {_kind(data)}"
            )
        self.check_fields(data, "", _ROOT_FIELDS)
        prices = self.field(self.prices, data.get("prices"), "prices")
        users = self.field(self.users, data.get("users"), "users", prices)
        return {
            "account": self.field(self.ident, data.get("account"), "account", "default"),
            "low_balance_alert": self.field(self.alert_section, data),
            "prices": prices if prices is not None else {},
            "users": users if users is not None else [],
        }

    def check_fields(self, data: dict, path: str, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key in allowed:
                continue
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            label = key if isinstance(key, str) else repr(key)
            self.fail(_join(path, str(label)), f"unknown field{suffix}")

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
                path, f"must be a mapping with enabled, threshold and webhooks, not {_kind(value)}"
            )
        self.check_fields(value, path, _ALERT_FIELDS)
        enabled = self.field(self.boolean, value.get("enabled"), _join(path, "enabled"), True)
        threshold = self.field(self.amount, value.get("threshold"), _join(path, "threshold"), "0")
        webhooks = self.field(self.webhooks, value.get("webhooks"), _join(path, "webhooks"))
        return {"enabled": enabled, "threshold": threshold, "webhooks": webhooks or []}

    def webhooks(self, value: Any, path: str) -> list[dict]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of {{url, secret}} mappings, not {_kind(value)}")
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
                self.fail(_join(where, "url"), f"duplicate webhook URL (also {seen[hook['url']]})")
                continue
            seen[hook["url"]] = where
            out.append(hook)
        if len(out) != len(value):
            raise _Invalid()
        return out

    def webhook(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(
                path, f"a webhook must be a mapping with url and secret, not {_kind(value)}"
            )
        self.check_fields(value, path, _WEBHOOK_FIELDS)
        url = self.field(self.url, value.get("url"), _join(path, "url"))
        secret = self.field(self.webhook_secret, value.get("secret"), _join(path, "secret"))
        if url is None or secret is None:
            raise _Invalid()
        return {"url": url, "secret": secret}

    def url(self, value: Any, path: str) -> str:
        # Messages never repeat the URL: webhook URLs often carry a token of their own.
        if value is None:
            raise self.fail(path, "required")
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, not {_kind(value)}")
        if len(value) > MAX_URL_LENGTH:
            raise self.fail(path, f"longer than {MAX_URL_LENGTH} characters")
        if not _URL_CHARS.fullmatch(value):
            raise self.fail(path, "must be printable ASCII without spaces (percent-encode)")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise self.fail(path, "not a valid URL") from None
        if parts.scheme not in ("http", "https"):
            raise self.fail(path, "must be an http:// or https:// URL")
        if not parts.hostname:
            raise self.fail(path, "has no host")
        if parts.fragment:
            raise self.fail(path, "must not have a #fragment")
        return value

    def webhook_secret(self, value: Any, path: str) -> str:
        # Like API key secrets: never echoed, even malformed; name the ENV: source instead.
        if value is None:
            raise self.fail(path, "required: the key that signs deliveries (HMAC-SHA256)")
        source = f" (value of ENV:{self.env_paths[path]})" if path in self.env_paths else ""
        if not isinstance(value, str):
            raise self.fail(path, f"a secret must be a string, not {_kind(value)}")
        if not _SECRET_RE.fullmatch(value):
            raise self.fail(path, f"a secret must be printable ASCII without spaces{source}")
        if not MIN_WEBHOOK_SECRET_LENGTH <= len(value) <= MAX_SECRET_LENGTH:
            raise self.fail(
                path,
                f"a webhook secret must have {MIN_WEBHOOK_SECRET_LENGTH} to {MAX_SECRET_LENGTH}"
                f" characters{source}",
            )
        return value

    def prices(self, value: Any, path: str) -> dict[str, str] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping of captcha type to price, not {_kind(value)}")
        out: dict[str, str] = {}
        bad = False
        for type_, price in value.items():
            where = _join(path, str(type_))
            if not isinstance(type_, str) or not _TYPE_RE.match(type_):
                self.fail(where, f"not a captcha type name: {type_!r}")
                bad = True
                continue
            amount = self.field(self.amount, price, where, None)
            if amount is None:
                bad = True
            else:
                out[type_] = amount
        if bad:
            raise _Invalid()
        return out

    def users(self, value: Any, path: str, prices: dict | None) -> list[dict] | None:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of users, not {_kind(value)}")
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

    def user(self, value: Any, path: str, prices: dict | None) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"a user must be a mapping, not {_kind(value)}")
        seed = "api_key" in value
        if seed and "keys" in value:
            raise self.fail(
                path, "give either api_key (one key named after the user) or keys, not both"
            )
        self.check_fields(value, path, _SEED_USER_FIELDS if seed else _USER_FIELDS)
        user_id = self.field(self.ident, value.get("id"), _join(path, "id"), None)
        user = {
            "id": user_id,
            "email": self.field(self.email, value.get("email"), _join(path, "email")),
            "role": self.field(self.role, value.get("role"), _join(path, "role")),
            "daily_limit": self.field(
                self.count, value.get("daily_limit"), _join(path, "daily_limit")
            ),
            "active": self.field(self.boolean, value.get("active"), _join(path, "active"), True),
        }
        if seed:
            secret = self.field(self.secret, value.get("api_key"), _join(path, "api_key"))
            keys = [] if user_id is None else [_seed_key(user_id, secret)]
        else:
            keys = self.field(self.keys, value.get("keys"), _join(path, "keys"), prices) or []
        if user_id is None:
            raise _Invalid()
        user["keys"] = keys
        return user

    def keys(self, value: Any, path: str, prices: dict | None) -> list[dict]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of keys, not {_kind(value)}")
        out = []
        for i, item in enumerate(value):
            key = self.field(self.key, item, f"{path}[{i}]", prices)
            if key is not None:
                out.append(key)
        return out

    def key(self, value: Any, path: str, prices: dict | None) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"a key must be a mapping, not {_kind(value)}")
        self.check_fields(value, path, _KEY_FIELDS)
        f = self.field

        def at(name: str) -> str:
            return _join(path, name)

        key = {
            "id": f(self.ident, value.get("id"), at("id"), None),
            "secret": f(self.secret, value.get("secret"), at("secret")),
            "project": f(self.label, value.get("project"), at("project")),
            "environment": f(self.label, value.get("environment"), at("environment")),
            "balance": f(self.amount, value.get("balance"), at("balance"), "0"),
            "allowed_types": f(self.types, value.get("allowed_types"), at("allowed_types"), prices),
            "cpm": f(self.count, value.get("cpm"), at("cpm")),
            "ip_allowlist": f(self.cidrs, value.get("ip_allowlist"), at("ip_allowlist")),
            "active": f(self.boolean, value.get("active"), at("active"), True),
        }
        if key["id"] is None:
            raise _Invalid()
        return key

    # scalars

    def ident(self, value: Any, path: str, default: str | None) -> str:
        if value is None:
            if default is None:
                raise self.fail(path, "required")
            return default
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, not {_kind(value)}")
        if not _ID_RE.match(value):
            raise self.fail(
                path,
                f"not a valid id: {self.show(path, value)} (letters, digits, '_', '.', '@', '-'; "
                "starts with a letter or digit; at most 128 characters)",
            )
        return value

    def label(self, value: Any, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, not {_kind(value)}")
        if not value.strip() or len(value) > 128 or not value.isprintable():
            raise self.fail(path, "must be 1 to 128 printable characters")
        return value

    def email(self, value: Any, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, not {_kind(value)}")
        if not _EMAIL_RE.match(value) or len(value) > 254:
            raise self.fail(path, f"not an email address: {self.show(path, value)}")
        return value

    def role(self, value: Any, path: str) -> str:
        if value is None:
            return "user"
        if not isinstance(value, str) or value not in ROLES:
            raise self.fail(
                path, f"unknown role {self.show(path, value)} (one of {', '.join(ROLES)})"
            )
        return value

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, not {self.show(path, value)}")
        return value

    def count(self, value: Any, path: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be a whole number, not {self.show(path, value)}")
        if value < 0:
            raise self.fail(path, f"must not be negative: {value}")
        if value > MAX_COUNT:
            raise self.fail(path, f"too large: {value} (at most {MAX_COUNT})")
        return value

    def amount(self, value: Any, path: str, default: str | None) -> str:
        """A money amount as a canonical decimal string ("25.00", "0.003"; zero is "0")."""
        if value is None:
            if default is None:
                raise self.fail(path, "required")
            return default
        if isinstance(value, float):
            raise self.fail(
                path, f'must be a decimal string such as "{value}" (quoted), not a float'
            )
        if isinstance(value, str) and not _AMOUNT_RE.match(value.strip()):
            raise self.fail(path, f"not a decimal amount: {self.show(path, value)}")
        try:
            micros = to_micros(value)
        except MoneyError as exc:
            message = str(exc) if path not in self.env_paths else "invalid amount"
            raise self.fail(path, message) from None
        if micros > MAX_AMOUNT_MICROS:
            raise self.fail(path, f"amount too large: {self.show(path, value)}")
        return "0" if micros == 0 else format_micros(micros)

    def secret(self, value: Any, path: str) -> str | None:
        # Never echo a secret, even a malformed one; name its ENV: source instead.
        if value is None:
            return None
        source = f" (value of ENV:{self.env_paths[path]})" if path in self.env_paths else ""
        if not isinstance(value, str):
            raise self.fail(path, f"a secret must be a string, not {_kind(value)}")
        if not _SECRET_RE.match(value):
            raise self.fail(path, f"a secret must be printable ASCII without spaces{source}")
        if not MIN_SECRET_LENGTH <= len(value) <= MAX_SECRET_LENGTH:
            raise self.fail(
                path,
                f"a secret must have {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters{source}",
            )
        return value

    def types(self, value: Any, path: str, prices: dict | None) -> list[str] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of captcha types, not {_kind(value)}")
        out: list[str] = []
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            if not isinstance(item, str) or not _TYPE_RE.match(item):
                self.fail(where, f"not a captcha type name: {self.show(where, item)}")
            elif item in out:
                self.fail(where, f"duplicate type {item!r}")
            elif prices and item not in prices:
                self.fail(
                    where, f"type {item!r} has no price (priced: {', '.join(sorted(prices))})"
                )
            else:
                out.append(item)
        if len(out) != len(value):
            raise _Invalid()
        return out

    def cidrs(self, value: Any, path: str) -> list[str] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of CIDRs, not {_kind(value)}")
        out: list[str] = []
        for i, item in enumerate(value):
            network = self.field(self.cidr, item, f"{path}[{i}]")
            if network is None:
                continue
            if network in out:
                self.fail(f"{path}[{i}]", f"duplicate network {network}")
            out.append(network)
        if len(out) != len(value) or len(set(out)) != len(out):
            raise _Invalid()
        return out

    def cidr(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"not a CIDR: {self.show(path, value)}")
        try:
            return str(ipaddress.ip_network(value.strip(), strict=True))
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise self.fail(path, f"not a CIDR: {self.show(path, value)}") from None
        raise self.fail(path, f"host bits set in {self.show(path, value)} (did you mean {loose}?)")


def _seed_key(user_id: str, secret: str | None) -> dict:
    return {
        "id": user_id,
        "secret": secret,
        "project": None,
        "environment": None,
        "balance": "0",
        "allowed_types": None,
        "cpm": None,
        "ip_allowlist": None,
        "active": True,
    }


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    names.update({int: "a number", float: "a number"})
    return names.get(type(value), type(value).__name__)
