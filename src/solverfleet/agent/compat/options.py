"""Client options both protocols accept on a new task: ``soft_id`` (createTask ``softId``) and
``pingback`` (createTask ``callbackUrl``), checked into the task's spec (docs/PROTOCOLS.md).

A pingback is accepted only if its URL is registered for the key's owner in the agent's
config snapshot (collector/pingbacks.py; no collector call per task); its address is checked
again when it is sent (pingback_url.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from solverfleet.agent.compat import answers

if TYPE_CHECKING:
    from solverfleet.agent.compat.methods import TaskSpec
    from solverfleet.agent.keystore import Key, Snapshot, User

MAX_SOFT_ID = 2**31 - 1  # the collector's bound too (ingest.MAX_SOFT_ID)


def owner(key: Key, user: User) -> str:
    """Whose pingback list a key uses: its account's, else its user's."""
    account = key.account if key.account is not None else user.account
    return f"a:{account}" if account is not None else f"u:{user.id}"


def soft_id(value: Any) -> int | str | None:
    """A soft id: an int 0..MAX_SOFT_ID, or its decimal text; None when absent; else the
    error text."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip()) if len(value.strip()) <= 10 else -1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SOFT_ID:
        return answers.BAD_PARAMETERS
    return value


def apply(
    spec: TaskSpec, snap: Snapshot, key: Key, user: User, soft: Any, url: Any, *, json: bool
) -> str | None:
    """Put the options into ``spec``; the error text if one is refused."""
    checked = soft_id(soft)
    if isinstance(checked, str):
        return checked
    spec.soft_id = checked
    if url is None or url == "":
        return None
    if not isinstance(url, str) or url not in snap.pingbacks.get(owner(key, user), ()):
        return answers.PINGBACK_NOT_REGISTERED
    spec.pingback, spec.pingback_json = url, json
    return None
