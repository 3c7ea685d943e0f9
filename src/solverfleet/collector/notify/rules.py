"""Low-balance notification rules, without I/O: when to fire, how often, how to retry, how
deliveries are signed. The store side is notifications.py, the sender sender.py.

A key's balance is ``api_keys.balance_micros``: what the admin API shows and what agents build
``/balance`` from. It changes on ingest (usage), never on a lease grant (a lease is a slice of
it, not a spend), so crossings are detected where ingest charges, in the same transaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

ZERO = "zero"
THRESHOLD = "threshold"
_SEVERITY = {THRESHOLD: 1, ZERO: 2}

WINDOW_MS = 5 * 60 * 1000  # at most one notification per account in any 5 minutes

# Standard Webhooks (https://www.standardwebhooks.com): id, timestamp and signature.
ID_HEADER = "webhook-id"
STD_TIMESTAMP_HEADER = "webhook-timestamp"
STD_SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
# The headers of the first release, still sent so receivers built on them keep working
# (docs/ARCHITECTURE.md, "Notifications"); new receivers verify the standard ones.
SIGNATURE_HEADER = "X-Solverfleet-Signature"
TIMESTAMP_HEADER = "X-Solverfleet-Timestamp"
DELIVERY_HEADER = "X-Solverfleet-Delivery"
EVENT_HEADER = "X-Solverfleet-Event"
EVENT = "low_balance"


def crossing(before: int, after: int, threshold: int | None) -> str | None:
    """The notification a change of a key's balance from ``before`` to ``after`` calls for.

    ``zero`` when it reaches zero (or goes below), whatever the account's settings;
    ``threshold`` when it falls to or below ``threshold`` (None: alerts disabled). A balance
    that was already at or below the level calls for nothing: a crossing fires once, not on
    every later spend. When one change crosses both, ``zero`` wins.
    """
    if before > 0 >= after:
        return ZERO
    if threshold is not None and before > threshold >= after:
        return THRESHOLD
    return None


def still_due(kind: str, balance: int, threshold: int | None) -> str | None:
    """What a deferred ``kind`` amounts to at ``balance`` now: a top-up may have lifted the key
    above the threshold (nothing left to say) or only above zero (a threshold alert remains)."""
    if kind == ZERO and balance <= 0:
        return ZERO
    if threshold is not None and balance <= threshold:
        return THRESHOLD
    return None


def graver(a: str, b: str) -> str:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


def first_to_fire(candidates: list[tuple[str, int, str]]) -> tuple[str, int, str]:
    """Of ``(kind, detected_ms, key_id)`` candidates, the one a window sends: the gravest,
    then the earliest, then by key id (so every collector picks the same one)."""
    return min(candidates, key=lambda c: (-_SEVERITY[c[0]], c[1], c[2]))


def window_open(last_fired_ms: int | None, now_ms: int) -> bool:
    return last_fired_ms is None or now_ms - last_fired_ms >= WINDOW_MS


def backoff_ms(attempts: int, base_s: float, cap_s: float) -> int:
    """Wait after the ``attempts``-th failed attempt: base, 2 * base, 4 * base, ... capped."""
    if attempts < 1:
        raise ValueError("attempts counts from 1")
    return int(min(base_s * 2 ** min(attempts - 1, 60), cap_s) * 1000)


# --- signing ----------------------------------------------------------------------------------


def body(notification: dict[str, Any]) -> bytes:
    """The webhook body: compact JSON, exactly the bytes that are signed."""
    return json.dumps(notification, separators=(",", ":"), sort_keys=True).encode("utf-8")


def signing_key(secret: str) -> bytes:
    """The HMAC key of a webhook secret: a ``whsec_<base64>`` secret (Standard Webhooks) is its
    decoded bytes; any other secret is its own UTF-8 bytes (secrets of the first release)."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    return secret.encode("utf-8")


def std_signature(secret: str, msg_id: str, timestamp: int, payload: bytes) -> str:
    """``v1,`` + base64 HMAC-SHA256 over ``"<id>.<timestamp>.<body>"`` (Standard Webhooks)."""
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    mac = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signature(secret: str, timestamp: int, payload: bytes) -> str:
    """The first release's signature: ``sha256=`` + hex HMAC-SHA256 over
    ``"<timestamp>.<body>"`` with the secret's UTF-8 bytes.

    The timestamp is inside the signed bytes, so a captured delivery cannot be replayed later
    under a fresh timestamp; receivers refuse timestamps far from their clock.
    """
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(secret: str, timestamp: int, payload: bytes, delivery_id: int) -> dict[str, str]:
    # The delivery id is the same on every attempt, so a receiver dedupes on webhook-id.
    msg_id = str(delivery_id)
    return {
        "Content-Type": "application/json",
        "User-Agent": "solverfleet-collector",
        ID_HEADER: msg_id,
        STD_TIMESTAMP_HEADER: str(timestamp),
        STD_SIGNATURE_HEADER: std_signature(secret, msg_id, timestamp, payload),
        EVENT_HEADER: EVENT,
        DELIVERY_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, payload),
    }
