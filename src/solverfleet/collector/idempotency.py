"""``Idempotency-Key`` on the admin API's POSTs that move money or create something.

As Stripe and draft-ietf-httpapi-idempotency-key-header: a request with the header is done at
most once per (caller's credential, method, path, key). Its record lives in the database
(``idempotency_keys``, 24 h) and goes through three states:

- ``running``: claimed in its own transaction before the work starts. A repeat now is a 409
  (``idempotency_key_in_progress``), never a second run.
- ``applied``: written by ``Claim.guard`` inside the very transaction that makes the change, so
  a change never commits without its record (and a claim taken over meanwhile rolls it back).
- ``done``: the answer (status and body) stored after the change; a repeat with the same body
  gets it again with ``Idempotent-Replayed: true`` and changes nothing.

A request that fails before its change commits (a 4xx or 5xx: the change was rolled back)
releases its claim, so the same key may be retried. A claim whose process died is taken over
after ``STALE_MS``. The same key with another body (or query) is a 409
(``idempotency_key_reused``). One-time secrets are never stored: a replay shows them as null,
with ``secret_withheld`` saying why (docs/ARCHITECTURE.md, "Idempotent requests").
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Response, current_app, g, request

from solverfleet import jsonbody
from solverfleet.collector import auth
from solverfleet.collector.context import current
from solverfleet.collector.errors import bad_request, error_response
from solverfleet.collector.problems import Conflict
from solverfleet.collector.store import Database, Tx

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 255
KEEP_MS = 24 * 3600 * 1000  # records are kept this long, then pruned
# A claim still "running" after this was left by a process that died before its change
# committed (a committed change marks it "applied"): a repeat may take it over.
STALE_MS = 60_000
PRUNE_EVERY_MS = 60_000
WITHHELD = (
    "a one-time secret is shown only in the first answer and is not stored; this is a replay "
    "of that answer. If the secret was lost, rotate the key (or create a new token)."
)
_G = "solverfleet_idempotency"
_next_prune: dict[str, int] = {}  # per database URL: when this process prunes next
_prune_lock = threading.Lock()


@dataclass
class Claim:
    """This request's hold on its record; ``guard`` goes into the change's transaction."""

    scope: str
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    def guard(self, tx: Tx) -> None:
        """Mark the record applied in ``tx``; a claim lost to a takeover rolls ``tx`` back."""
        changed = tx.execute(
            "UPDATE idempotency_keys SET state = 'applied'"
            " WHERE scope_hash = ? AND claim = ? AND state = 'running'",
            (self.scope, self.token),
        )
        if changed != 1:
            raise Conflict(
                "another request with this Idempotency-Key took over; nothing was changed",
                "idempotency_key_in_progress",
            )


@dataclass(frozen=True)
class Replay:
    status: int
    body: str


def check_key(values: list[str]) -> str:
    """The header's key: 1 to 255 printable ASCII characters (a quoted sf-string is unquoted)."""
    if len(values) != 1:
        raise bad_request(f"send one {HEADER} header, not {len(values)}", "invalid_idempotency_key")
    value = values[0].strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not 0 < len(value) <= MAX_KEY or not all(" " <= ch <= "~" for ch in value):
        raise bad_request(
            f"{HEADER} must be 1 to {MAX_KEY} printable ASCII characters",
            "invalid_idempotency_key",
        )
    return value


def scope_hash(actor: str, method: str, path: str, key: str) -> str:
    return hashlib.sha256("\0".join((actor, method, path, key)).encode()).hexdigest()


def fingerprint(query: bytes, body: bytes) -> str:
    """The request's identity beyond its scope: query string and body (JSON canonicalized,
    so spacing and field order do not make a different request)."""
    try:  # jsonbody: a hostile body is refused by its view; here it is only kept raw
        data = jsonbody.loads(body, max_items=sys.maxsize)
        canonical = b"json:" + json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    except jsonbody.BodyError:
        canonical = b"raw:" + body
    return hashlib.sha256(query + b"\0" + canonical).hexdigest()


def withhold_secrets(body: Any) -> Any:
    """An answer as it may be stored: one-time secrets (``secret``, ``secrets``) nulled."""
    if not isinstance(body, dict) or not ({"secret", "secrets"} & set(body)):
        return body
    out = dict(body)
    if out.get("secret") is not None:
        out["secret"] = None
        out["secret_withheld"] = WITHHELD
    if isinstance(out.get("secrets"), dict) and out["secrets"]:
        out["secrets"] = {k: None for k in out["secrets"]}
        out["secret_withheld"] = WITHHELD
    return out


# --- records ----------------------------------------------------------------------------------


def begin(
    db: Database, *, actor: str, method: str, path: str, key: str, fp: str, now_ms: int
) -> Claim | Replay:
    """Claim the record, or the stored answer to replay; 409 ``Conflict`` otherwise."""
    scope = scope_hash(actor, method, path, key)
    claim = Claim(scope)

    def work(tx: Tx) -> Claim | Replay:
        row = _locked(tx, scope)
        if row is not None and int(row["created_ms"]) <= now_ms - KEEP_MS:
            tx.execute("DELETE FROM idempotency_keys WHERE scope_hash = ?", (scope,))
            row = None
        if row is None:
            inserted = tx.execute(
                tx.dialect.insert_new(
                    "idempotency_keys",
                    (
                        "scope_hash",
                        "actor",
                        "method",
                        "path",
                        "idem_key",
                        "fingerprint",
                        "state",
                        "claim",
                        "claimed_ms",
                        "created_ms",
                    ),
                    "scope_hash",
                ),
                (scope, actor, method, path, key, fp, "running", claim.token, now_ms, now_ms),
            )
            if inserted == 1:
                return claim
            row = _locked(tx, scope)  # a concurrent repeat inserted it first (now committed)
            if row is None:
                raise _in_progress()
        if row["fingerprint"] != fp:
            raise Conflict(
                f"this {HEADER} was already used for a different request (another body or "
                "query); use a new key for a new request",
                "idempotency_key_reused",
            )
        if row["state"] == "done":
            return Replay(int(row["response_status"]), row["response_body"])
        if row["state"] == "running" and int(row["claimed_ms"]) <= now_ms - STALE_MS:
            tx.execute(
                "UPDATE idempotency_keys SET claim = ?, claimed_ms = ? WHERE scope_hash = ?",
                (claim.token, now_ms, scope),
            )
            return claim
        raise _in_progress()

    return db.transaction(work)


def _in_progress() -> Conflict:
    return Conflict(
        f"a request with this {HEADER} is still being processed; retry in a moment to get "
        "its answer (it will not be done twice)",
        "idempotency_key_in_progress",
    )


def _locked(tx: Tx, scope: str) -> dict | None:
    rows = tx.dicts(
        "SELECT fingerprint, state, claimed_ms, created_ms, response_status, response_body"
        " FROM idempotency_keys WHERE scope_hash = ?" + tx.dialect.for_update,
        (scope,),
    )
    return rows[0] if rows else None


def finish(db: Database, claim: Claim, status: int, body: str) -> None:
    """Store the answer to replay (the change, if any, is committed and marked already)."""
    db.transaction(
        lambda tx: tx.execute(
            "UPDATE idempotency_keys SET state = 'done', response_status = ?, response_body = ?"
            " WHERE scope_hash = ? AND claim = ?",
            (status, body, claim.scope, claim.token),
        )
    )


def release(db: Database, claim: Claim) -> None:
    """Forget a claim whose change did not commit, so the same key can be retried."""
    db.transaction(
        lambda tx: tx.execute(
            "DELETE FROM idempotency_keys WHERE scope_hash = ? AND claim = ? AND state = 'running'",
            (claim.scope, claim.token),
        )
    )


def prune(db: Database, now_ms: int) -> int:
    """Drop records older than ``KEEP_MS``; returns how many."""
    cutoff = now_ms - KEEP_MS
    return db.transaction(
        lambda tx: tx.execute("DELETE FROM idempotency_keys WHERE created_ms < ?", (cutoff,))
    )


def _maybe_prune(db: Database, now_ms: int) -> None:
    url = db.url.redacted()
    with _prune_lock:
        if now_ms < _next_prune.get(url, 0):
            return
        _next_prune[url] = now_ms + PRUNE_EVERY_MS
    try:
        prune(db, now_ms)
    except Exception:  # housekeeping: the next request tries again
        log.warning("pruning idempotency records failed", exc_info=True)


# --- the route decorator ----------------------------------------------------------------------


def guard() -> Callable[[Tx], None] | None:
    """The current request's guard for its change's transaction, or None (no header)."""
    claim = g.get(_G)
    return None if claim is None else claim.guard


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    """Honour ``Idempotency-Key`` on a POST route; the view passes ``guard()`` to its change."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = request.headers.getlist(HEADER)
        if not values:
            return view(*args, **kwargs)
        key = check_key(values)
        c = current()
        now_ms = c.now_ms()
        _maybe_prune(c.db, now_ms)
        fp = fingerprint(request.query_string, request.get_data(cache=True))
        actor = auth.principal().actor
        try:
            found = begin(
                c.db,
                actor=actor,
                method=request.method,
                path=request.path,
                key=key,
                fp=fp,
                now_ms=now_ms,
            )
        except Conflict as exc:
            response = error_response(exc.status, exc.code, exc.message)
            if exc.code == "idempotency_key_in_progress":
                response.headers["Retry-After"] = "1"
            return response
        if isinstance(found, Replay):
            replay = Response(found.body, status=found.status, mimetype="application/json")
            replay.headers[REPLAYED] = "true"
            return replay
        setattr(g, _G, found)
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except BaseException:
            _quietly(release, c.db, found)
            raise
        if response.status_code >= 400:
            _quietly(release, c.db, found)
            return response
        stored = json.dumps(withhold_secrets(response.get_json(silent=True)))
        _quietly(finish, c.db, found, response.status_code, stored)
        return response

    return wrapper


def _quietly(fn: Callable[..., None], *args: Any) -> None:
    # The answer is already decided; a lost release is taken over after STALE_MS, a lost
    # finish leaves the record "applied" (repeats get 409, never a second change).
    try:
        fn(*args)
    except Exception:
        log.warning("idempotency record not updated", exc_info=True)
