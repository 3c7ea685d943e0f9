"""Bearer-token checks for the two surfaces: agents (fleet token) and operators (admin token)."""

from __future__ import annotations

from flask import request

from solverfleet.collector.problems import Unauthorized
from solverfleet.keyhash import tokens_equal


def bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def require(expected: str, what: str) -> None:
    # tokens_equal is constant-time (hmac.compare_digest), so timing reveals nothing.
    if not tokens_equal(bearer(), expected):
        raise Unauthorized(f"missing or wrong {what} bearer token")
