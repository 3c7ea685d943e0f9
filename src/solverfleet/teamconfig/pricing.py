"""A team config's price section: ``prices``, ``default_price``, ``type_aliases``, ``prices_scope``
and the seed format's defaults.

- ``prices`` name types by their canonical slug or an alias (built-in or the file's own); they
  come out under the canonical slug. ``default_price`` prices every type without its own price.
- ``type_aliases`` (``{alias: canonical type}``) add spellings for this account; a built-in
  alias (``captchatypes.BUILTIN_ALIASES``) may not be redefined, an alias may not point to an
  alias, nor be priced under its own name.
- ``prices_scope``: ``account`` (the default) prices apply to this file's account only;
  ``global`` they are the fleet-wide prices every account without its own falls back to.
- The seed's format (every user given with ``api_key``) gets the seed manager's defaults, made
  explicit in the normalized form: ``daily_limit`` 500 for a user that leaves it out and
  ``default_price`` 0.003 when the file leaves it out (an explicit ``null`` turns either off).
  Our own format has no such magic: no daily limit and no default price unless given.
"""

from __future__ import annotations

from typing import Any

from solverfleet.captchatypes import BUILTIN_ALIASES
from solverfleet.teamconfig.fields import TYPE_RE, Fields, kind
from solverfleet.teamconfig.problems import Invalid

SEED_DAILY_LIMIT = 500
SEED_DEFAULT_PRICE_MICROS = 3_000  # 0.003 per call
PRICE_SCOPES = ("account", "global")


def is_seed_format(data: dict) -> bool:
    """Every user is written in the seed's shorthand (``api_key``), and there is one at least."""
    users = data.get("users")
    return (
        isinstance(users, list)
        and bool(users)
        and all(isinstance(u, dict) and "api_key" in u for u in users)
    )


def seed_user(value: Any) -> Any:
    """A seed user with the seed's default daily limit filled in when it leaves it out."""
    if isinstance(value, dict) and "daily_limit" not in value:
        return {**value, "daily_limit": SEED_DAILY_LIMIT}
    return value


class PricingFields(Fields):
    """The price section's validators (mixed into the document parser)."""

    def pricing(self, data: dict, seed: bool) -> dict:
        aliases = self.field(self.type_aliases, data.get("type_aliases"), "type_aliases")
        aliases = aliases if aliases is not None else {}
        prices = self.field(self.prices, data.get("prices"), "prices", aliases)
        default: int | None = None
        if seed and "default_price" not in data:
            default = SEED_DEFAULT_PRICE_MICROS
        elif data.get("default_price") is not None:
            default = self.field(self.amount, data["default_price"], "default_price", None)
        scope = self.field(self.scope, data.get("prices_scope"), "prices_scope")
        return {
            "prices": prices,
            "default_price": default,
            "type_aliases": aliases,
            "prices_scope": scope or "account",
        }

    def scope(self, value: Any, path: str) -> str:
        if value is None:
            return "account"
        if value not in PRICE_SCOPES:
            raise self.fail(path, f"must be one of {', '.join(PRICE_SCOPES)}, not {value!r}")
        return value

    def type_name(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not TYPE_RE.fullmatch(value):
            raise self.fail(path, f"not a captcha type name: {self.show(path, value)}")
        return value

    def type_aliases(self, value: Any, path: str) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping of alias to captcha type, not {kind(value)}")
        out: dict[str, str] = {}
        for alias, target in value.items():
            where = f"{path}.{alias}"
            if self.field(self.type_name, alias, where) is None:
                continue
            if alias in BUILTIN_ALIASES:
                self.fail(where, f"{alias!r} is a built-in alias of {BUILTIN_ALIASES[alias]!r}")
            elif self.field(self.type_name, target, where) is None:
                continue
            elif target == alias:
                self.fail(where, "an alias cannot name itself")
            elif target in value or target in BUILTIN_ALIASES:
                self.fail(where, f"{target!r} is an alias itself: name the canonical type")
            else:
                out[alias] = target
        if len(out) != len(value):
            raise Invalid()
        return out

    def prices(self, value: Any, path: str, aliases: dict[str, str]) -> dict[str, int]:
        """Prices by canonical type (an alias in the file is priced as its type)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping of captcha type to price, not {kind(value)}")
        out: dict[str, int] = {}
        named: dict[str, str] = {}
        bad = False
        for type_, price in value.items():
            where = f"{path}.{type_}"
            if self.field(self.type_name, type_, where) is None:
                bad = True
                continue
            slug = BUILTIN_ALIASES.get(aliases.get(type_, type_), aliases.get(type_, type_))
            amount = self.field(self.amount, price, where, None)
            if slug in named:
                self.fail(where, f"{type_!r} and {named[slug]!r} both price {slug!r}")
                bad = True
            elif amount is None:
                bad = True
            else:
                named[slug] = type_
                out[slug] = amount
        if bad:
            raise Invalid()
        return out
