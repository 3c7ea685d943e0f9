"""Team config field validators: one value at a path in, its normalized form out.

Each validator returns the normalized value or records a problem at its path and raises
``Invalid`` (see ``problems``). Money leaves here as integer micros: amounts are converted once,
at this edge. Secrets and webhook URLs are never echoed in a message.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import re
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from solverfleet.money import MAX_AMOUNT_MICROS, MoneyError, to_micros
from solverfleet.teamconfig.problems import Invalid, Problems

ROLES = ("admin", "user", "service")
MAX_COUNT = 10**9
MAX_LIST = 1_000  # entries in an ip_allowlist or allowed_types (docs/ARCHITECTURE.md)
MIN_SECRET_LENGTH = 8
MAX_SECRET_LENGTH = 512
MAX_URL_LENGTH = 2048
MIN_WEBHOOK_SECRET_LENGTH = 16  # an HMAC key: long enough not to be guessed
REFILL_INTERVALS = ("daily", "monthly")
_REFILL_FIELDS = ("amount", "interval", "day")
# Timestamps from 2000 to 9999: a typo such as year 20260 or 1026 is caught, not stored.
_MIN_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Ids end up in admin URLs (/admin/v1/keys/<id>), so no slashes, spaces or leading dots.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Plain decimal notation only: "1e3" or "1_000" in a price list is more likely a typo than intent.
_AMOUNT_RE = re.compile(r"-?\d+(\.\d+)?")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")
# Secrets travel in HTTP headers: printable ASCII, no whitespace.
_SECRET_RE = re.compile(r"[!-~]+")
_URL_CHARS = re.compile(r"[!-~]+")


def kind(value: Any) -> str:
    """What sort of value this is, for a message (never the value itself)."""
    if value is None:
        return "null"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    names.update({int: "a number", float: "a number"})
    return names.get(type(value), type(value).__name__)


class Fields(Problems):
    """The validators of single fields, recording their problems."""

    def ident(self, value: Any, path: str, default: str | None) -> str:
        if value is None:
            if default is None:
                raise self.fail(path, "required")
            return default
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, not {kind(value)}")
        if not _ID_RE.fullmatch(value):
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
            raise self.fail(path, f"must be a string, not {kind(value)}")
        if not value.strip() or len(value) > 128 or not value.isprintable():
            raise self.fail(path, "must be 1 to 128 printable characters")
        return value

    def email(self, value: Any, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, not {kind(value)}")
        if not _EMAIL_RE.fullmatch(value) or len(value) > 254:
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

    def amount(self, value: Any, path: str, default: int | None) -> int:
        """A money amount (a decimal string such as "25.00" or "0.003") as integer micros."""
        if value is None:
            if default is None:
                raise self.fail(path, "required")
            return default
        if isinstance(value, float):
            raise self.fail(
                path, f'must be a decimal string such as "{value}" (quoted), not a float'
            )
        if isinstance(value, str) and not _AMOUNT_RE.fullmatch(value.strip()):
            raise self.fail(path, f"not a decimal amount: {self.show(path, value)}")
        try:
            micros = to_micros(value)
        except MoneyError as exc:
            message = str(exc) if path not in self.env_paths else "invalid amount"
            raise self.fail(path, message) from None
        if micros > MAX_AMOUNT_MICROS:
            raise self.fail(path, f"amount too large: {self.show(path, value)}")
        return micros

    def timestamp(self, value: Any, path: str) -> str | None:
        """An ISO-8601 time with its UTC offset ("2026-12-31T00:00:00Z"), normalized to UTC
        with a ``Z``; YAML's own timestamps (unquoted) are taken too."""
        if value is None:
            return None
        when = value
        if isinstance(value, str):
            text = value.strip()
            try:
                when = dt.datetime.fromisoformat(_offset(text))
            except ValueError:
                when = None
        if not isinstance(when, dt.datetime):
            raise self.fail(
                path,
                f'must be an ISO-8601 UTC time such as "2026-12-31T00:00:00Z", not '
                f"{self.show(path, value)}",
            )
        if when.tzinfo is None or when.utcoffset() is None:
            raise self.fail(path, f'needs a UTC offset ("Z" or "+00:00"): {self.show(path, value)}')
        try:
            when = when.astimezone(dt.UTC)
        except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
            raise self.fail(path, f"too far in the future: {self.show(path, value)}") from None
        if when < _MIN_TIME:
            raise self.fail(path, f"before the year 2000: {self.show(path, value)}")
        return format_time(epoch_ms(when))

    def refill(self, value: Any, path: str) -> dict | None:
        """``{amount, interval: daily|monthly, day}``: top the key up to ``amount`` at 00:00 UTC
        of each day, or of day ``day`` (1-31, the month's last day in shorter months) monthly."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(
                path, f"must be a mapping with amount, interval, day, not {kind(value)}"
            )
        for name in value:
            if name not in _REFILL_FIELDS:
                self.fail(f"{path}.{name}", "unknown field (amount, interval, day)")
        amount = self.field(self.amount, value.get("amount"), f"{path}.amount", None)
        interval = value.get("interval")
        if interval not in REFILL_INTERVALS:
            self.fail(
                f"{path}.interval", f"must be daily or monthly, not {self.show(path, interval)}"
            )
            interval = None
        day = value.get("day")
        if interval == "monthly":
            if day is None:
                day = 1
            if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= 31:
                self.fail(f"{path}.day", f"must be a day of the month from 1 to 31, not {day!r}")
                day = None
        elif interval == "daily" and day is not None:
            self.fail(f"{path}.day", "only for a monthly refill")
        if amount is None or interval is None or (interval == "monthly" and day is None):
            raise Invalid()
        if any(name not in _REFILL_FIELDS for name in value):
            raise Invalid()
        if amount <= 0:
            raise self.fail(f"{path}.amount", "must be greater than zero")
        return {
            "amount": amount,
            "interval": interval,
            "day": day if interval == "monthly" else None,
        }

    def secret(self, value: Any, path: str) -> str | None:
        """An API key's secret."""
        if value is None:
            return None
        return self.secret_text(value, path, MIN_SECRET_LENGTH, "a secret")

    def webhook_secret(self, value: Any, path: str) -> str:
        """The key that signs a webhook's deliveries."""
        if value is None:
            raise self.fail(path, "required: the key that signs deliveries (HMAC-SHA256)")
        secret = self.secret_text(value, path, MIN_WEBHOOK_SECRET_LENGTH, "a webhook secret")
        if secret.startswith("whsec_"):  # Standard Webhooks: the key is the base64 after it
            try:
                key = base64.b64decode(secret[6:], validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) < 16:
                raise self.fail(
                    path, f"a whsec_ secret must be base64 of at least 16 bytes{self.source(path)}"
                )
        return secret

    def secret_text(self, value: Any, path: str, min_length: int, what: str) -> str:
        # Never echo a secret, even a malformed one; name its ENV: source instead.
        source = self.source(path)
        if not isinstance(value, str):
            raise self.fail(path, f"a secret must be a string, not {kind(value)}")
        if not _SECRET_RE.fullmatch(value):
            raise self.fail(path, f"a secret must be printable ASCII without spaces{source}")
        if not min_length <= len(value) <= MAX_SECRET_LENGTH:
            raise self.fail(
                path, f"{what} must have {min_length} to {MAX_SECRET_LENGTH} characters{source}"
            )
        return value

    def url(self, value: Any, path: str) -> str:
        # Messages never repeat the URL: webhook URLs often carry a token of their own.
        if value is None:
            raise self.fail(path, "required")
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, not {kind(value)}")
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

    def types(self, value: Any, path: str, prices: Collection[str] | None) -> list[str] | None:
        """Captcha type names; with ``prices`` (the priced types), only those."""
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of captcha types, not {kind(value)}")
        if len(value) > MAX_LIST:
            raise self.fail(path, f"at most {MAX_LIST} entries, got {len(value)}")
        out: list[str] = []
        seen: set[str] = set()  # a set: a duplicate check over the list is quadratic
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            if not isinstance(item, str) or not TYPE_RE.fullmatch(item):
                self.fail(where, f"not a captcha type name: {self.show(where, item)}")
            elif item in seen:
                self.fail(where, f"duplicate type {item!r}")
            elif prices and item not in prices:
                self.fail(
                    where, f"type {item!r} has no price (priced: {', '.join(sorted(prices))})"
                )
            else:
                out.append(item)
                seen.add(item)
        if len(out) != len(value):
            raise Invalid()
        return out

    def cidrs(self, value: Any, path: str) -> list[str] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of CIDRs, not {kind(value)}")
        if len(value) > MAX_LIST:
            raise self.fail(path, f"at most {MAX_LIST} entries, got {len(value)}")
        out: list[str] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            network = self.field(self.cidr, item, f"{path}[{i}]")
            if network is None:
                continue
            if network in seen:
                self.fail(f"{path}[{i}]", f"duplicate network {network}")
            out.append(network)
            seen.add(network)
        if len(out) != len(value) or len(set(out)) != len(out):
            raise Invalid()
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


def _offset(text: str) -> str:
    # fromisoformat before Python 3.11 does not take a "Z" suffix.
    return text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text


def format_time(ms: int) -> str:
    """Unix milliseconds as the normalized ISO-8601 UTC text ("2026-12-31T00:00:00Z")."""
    when = dt.datetime.fromtimestamp(ms // 1000, dt.UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def parse_time(text: str) -> int:
    """The normalized text of ``format_time`` (or any ISO-8601 time with an offset) as unix
    milliseconds."""
    text = text.strip()
    when = dt.datetime.fromisoformat(_offset(text))
    return epoch_ms(when)


def epoch_ms(when: dt.datetime) -> int:
    """An aware datetime as whole unix milliseconds (integer arithmetic: no float rounding)."""
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)
