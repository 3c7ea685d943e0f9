"""API-key secrets: generated once, shown once, stored and compared only as hashes.

Secrets are 32 random bytes, so a fast hash is enough (no dictionary to attack) and keeps the
agent's hot path at about a microsecond per lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_PREFIX = "sk_"


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_token() -> str:
    """A bearer token for admin or fleet use."""
    return secrets.token_urlsafe(32)


def tokens_equal(given: str | None, expected: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
