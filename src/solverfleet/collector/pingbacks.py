"""Registered pingback URLs (``res.php?action=add_pingback|del_pingback``, docs/PROTOCOLS.md).

An agent asks for a change on behalf of a key's owner (``owner``: "a:<account>", or
"u:<user id>" for a key without an account: the agent decides, the collector stores). Each
change is its own config version, logged as one ``pingback`` change, so it reaches every
agent with the next sync: the whole pingback section (small: at most ``MAX_PER_OWNER`` URLs
of ``MAX_URL`` characters per owner) rides in the delta, like the prices. Agents decide
whether a task's pingback is registered from their snapshot; nobody asks the collector per
task. Addresses are checked by the agent (it knows its operator's allowed ranges); here only
the form: http(s), one printable line, at most ``MAX_URL`` characters.
"""

from __future__ import annotations

import hashlib
from typing import Any

from solverfleet.collector import accounts, configdelta
from solverfleet.collector.problems import Conflict, Invalid
from solverfleet.collector.store import Database, Tx
from solverfleet.textcheck import text_problem

MAX_PER_OWNER = 20
MAX_URL = 2048
MAX_OWNER = 130  # "a:" or "u:" and an id of up to 128 characters
ACTIONS = ("add", "del", "del_all")


def _text(data: dict, name: str, limit: int) -> str:
    value = data.get(name)
    if type(value) is not str or not 0 < len(value) <= limit or text_problem(value):
        raise Invalid(f"{name}: must be a string of 1 to {limit} printable characters")
    if any(c.isspace() for c in value):
        raise Invalid(f"{name}: must not contain whitespace")
    return value


def parse(data: Any) -> tuple[str, str, str, str | None]:
    """``{"agent_id", "owner", "action", "url"}`` -> (agent_id, owner, action, url)."""
    if type(data) is not dict:
        raise Invalid("request body must be a JSON object")
    agent_id = _text(data, "agent_id", 128)
    owner = _text(data, "owner", MAX_OWNER)
    if not owner.startswith(("a:", "u:")):
        raise Invalid("owner: must start with a: (an account) or u: (a user id)")
    action = data.get("action")
    if action not in ACTIONS:
        raise Invalid(f"action: must be one of {', '.join(ACTIONS)}")
    if action == "del_all":
        return agent_id, owner, action, None
    url = _text(data, "url", MAX_URL)
    if not url.lower().startswith(("http://", "https://")):
        raise Invalid("url: only http and https URLs")
    return agent_id, owner, action, url


def _hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def urls(tx: Tx, owner: str) -> list[str]:
    return [
        r[0] for r in tx.all("SELECT url FROM pingbacks WHERE owner = ? ORDER BY url", (owner,))
    ]


def change(db: Database, owner: str, action: str, url: str | None, now_ms: int) -> list[str]:
    """Apply one change; the owner's URLs after it. 409 ``too_many_pingbacks`` over the cap."""

    def work(tx: Tx) -> list[str]:
        if action == "add":
            assert url is not None
            if url not in urls(tx, owner):
                count = tx.scalar("SELECT COUNT(*) FROM pingbacks WHERE owner = ?", (owner,))
                if int(count or 0) >= MAX_PER_OWNER:
                    raise Conflict(
                        f"at most {MAX_PER_OWNER} pingback URLs per account", "too_many_pingbacks"
                    )
                tx.execute(
                    "INSERT INTO pingbacks (owner, url_hash, url, created_ms) VALUES (?, ?, ?, ?)",
                    (owner, _hash(url), url, now_ms),
                )
                accounts.bump_version(tx, [(configdelta.PINGBACKS, "*")])
        else:
            where, params = (
                ("", (owner,)) if url is None else (" AND url_hash = ?", (owner, _hash(url)))
            )
            if tx.execute(f"DELETE FROM pingbacks WHERE owner = ?{where}", params):
                accounts.bump_version(tx, [(configdelta.PINGBACKS, "*")])
        return urls(tx, owner)

    return db.transaction(work)


def agent_pingbacks(tx: Tx) -> dict[str, list[str]]:
    """Every owner's URLs (the ``pingbacks`` section of a snapshot or delta)."""
    out: dict[str, list[str]] = {}
    for owner, url in tx.all("SELECT owner, url FROM pingbacks ORDER BY owner, url"):
        out.setdefault(owner, []).append(url)
    return out
