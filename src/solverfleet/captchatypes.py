"""Captcha type names: the built-in aliases and how a name resolves to its canonical slug.

The seeds call Cloudflare's Turnstile ``cloudflare-turnstile``; our slug (and the worker's, and
``in.php``'s ``method=turnstile``) is ``turnstile``. An alias is only another spelling: it is
priced, allowed, limited and recorded as its canonical slug. A team config may add its own
aliases (``type_aliases``, per account) beside these; it may not redefine a built-in one.
Standard library only: the team config parser, the collector and the agent's hot path share it.
"""

from __future__ import annotations

from collections.abc import Mapping

# alias -> canonical slug
BUILTIN_ALIASES: dict[str, str] = {"cloudflare-turnstile": "turnstile"}

# The type name a price table uses for "any type without its own price" (not a valid type name,
# so it cannot collide with one).
DEFAULT_TYPE = "*"


def canonical(slug: str, aliases: Mapping[str, str] | None = None) -> str:
    """``slug``'s canonical name: through ``aliases`` (an account's), then the built-in ones."""
    if aliases:
        slug = aliases.get(slug, slug)
    return BUILTIN_ALIASES.get(slug, slug)


def resolve_price(
    prices: Mapping[str, int], own: Mapping[str, int] | None, slug: str
) -> int | None:
    """A call's price: the account's (``own``) for ``slug``, else the account's default, else
    the global one for ``slug``, else the global default; None: the type has no price."""
    if own:
        price = own.get(slug, own.get(DEFAULT_TYPE))
        if price is not None:
            return price
    return prices.get(slug, prices.get(DEFAULT_TYPE))
