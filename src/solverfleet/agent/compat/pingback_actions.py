"""``res.php?action=add_pingback|get_pingback|del_pingback`` (docs/PROTOCOLS.md).

The list lives in the collector (collector/pingbacks.py) and reaches every agent with the
config sync. A change goes to the collector with this agent's fleet credential, for the key's
owner (options.owner); the agent then waits (at most ``collector_timeout``) for one sync so
that its own snapshot, which ``get_pingback`` and ``in.php`` read, already holds the change.
An address is checked here (pingback_url.check: http(s), resolves to public addresses or the
operator's allowed ranges) before it is stored.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from solverfleet.agent.compat import answers, options, pingback_url
from solverfleet.agent.fleetclient import CollectorError

if TYPE_CHECKING:
    from solverfleet.agent.keystore import Key, User
    from solverfleet.agent.lifecycle import Agent

log = logging.getLogger(__name__)
ACTIONS = ("add_pingback", "get_pingback", "del_pingback")


def listed(agent: Agent, key: Key, user: User) -> list[str]:
    snap = agent.keystore.snapshot
    return [] if snap is None else sorted(snap.pingbacks.get(options.owner(key, user), ()))


def run(agent: Agent, key: Key, user: User, action: str, addr: str) -> tuple[bool, Any]:
    """``(ok, answer)``: get_pingback's list, ``OK``, or an error text."""
    if action == "get_pingback":
        return True, listed(agent, key, user)
    addr = addr.strip()
    if action == "del_pingback" and addr.lower() == "all":
        return _change(agent, key, user, "del_all", None)
    try:
        if action == "add_pingback":
            pingback_url.check(addr, pingback_url.parse_cidrs(agent.settings.pingback_allow_cidrs))
        else:
            pingback_url.check_syntax(addr)
    except pingback_url.Refused:
        return False, answers.BAD_PINGBACK
    return _change(agent, key, user, "add" if action == "add_pingback" else "del", addr)


def _change(agent: Agent, key: Key, user: User, action: str, url: str | None) -> tuple[bool, Any]:
    payload = {"agent_id": agent.settings.agent_id, "owner": options.owner(key, user),
               "action": action, "url": url}  # fmt: skip
    try:
        agent.client.post("/agent/v1/pingbacks", payload)
    except CollectorError as exc:
        if exc.status == 409:
            return False, answers.TOO_MANY_PINGBACKS
        if exc.status == 400:
            return False, answers.BAD_PINGBACK
        log.warning("pingback change not stored: %s", exc)
        return False, answers.NO_SLOT  # the collector is away: try again
    round_no = agent.loop.next_round()  # starts after the change committed: it brings it
    agent.loop.trigger()
    agent.loop.wait_round(round_no, agent.settings.collector_timeout)
    return True, answers.PINGBACK_OK
