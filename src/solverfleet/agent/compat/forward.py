"""res.php and getTaskResult behind any balancer: another agent's task is fetched from it.

A task id starts with its agent's node id (tasks.py); the fleet loop keeps the node id ->
address map of live agents from the collector (sync.py ``peers``), so no request asks the
collector. A request naming another node's task is sent on, unchanged (the client's key, the
same fields or JSON body), to that agent's own ``/res.php`` or ``/getTaskResult``, over HTTPS
verified with the fleet CA (``collector_ca_file``), with ``peer_timeout`` and no redirects
followed. The owner authenticates the key and charges on its first delivery, as for any of
its tasks: one charge, whoever delivers. The forwarded request carries ``FORWARDED``, and such
a request is never forwarded again (no loops), and ``X-Forwarded-For`` with the client's
address (the owner honours it when this agent is in its ``trusted_proxies``).

When the owner cannot answer (docs/PROTOCOLS.md, "Any balancer"): a known node that is
unreachable, times out or answers other than 200 is ``CAPCHA_NOT_READY`` (the client polls
again; the task waits on its owner); a node id no live agent has is ``ERROR_WRONG_CAPTCHA_ID``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from flask import Response

from solverfleet.agent import metrics
from solverfleet.agent.compat import answers
from solverfleet.agent.compat.tasks import SUFFIX_DIGITS
from solverfleet.agent.fleetclient import failure_reason, tls_verify

if TYPE_CHECKING:
    from solverfleet.agent.lifecycle import Agent

log = logging.getLogger(__name__)
FORWARDED = "X-Solverfleet-Forwarded"
LOCAL, UNKNOWN = "local", "unknown"


@dataclass(frozen=True, slots=True)
class Reply:
    """The owner's answer, passed on as it is."""

    body: bytes
    mimetype: str


def node_of(task_id: str) -> int | None:
    """The node id a task id starts with; None when it has none (too short)."""
    head = task_id[:-SUFFIX_DIGITS]
    return int(head) if len(task_id) > SUFFIX_DIGITS and head.isdigit() else None


def route(task_id: str, own: int, peers: Mapping[int, str], forwarded: bool) -> str:
    """``LOCAL`` (look it up here), ``UNKNOWN`` (no live agent has that node id), or the
    owner's address. A forwarded request is always answered here."""
    node = node_of(task_id)
    if forwarded or node is None or node == own:
        return LOCAL
    return peers.get(node, UNKNOWN)


class Peers:
    """HTTP to other agents: one pooled session, the fleet CA, bounded, no redirects."""

    def __init__(self, ca_file: str, timeout: float) -> None:
        self.ca_file = ca_file
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment between agents

    def ask(self, url: str, client_ip: str, **body: Any) -> Reply | None:
        """POST ``body`` (``data=`` or ``json=``) to ``url``; None when no 200 answer came."""
        headers = {FORWARDED: "1", "X-Forwarded-For": client_ip}
        try:
            resp = self.session.post(
                url, headers=headers, timeout=self.timeout, allow_redirects=False,
                verify=tls_verify(url, self.ca_file), **body,
            )  # fmt: skip
        except requests.RequestException as exc:
            log.warning("peer %s not reachable (%s)", url, failure_reason(exc))
            metrics.FORWARDS.labels("unreachable").inc()
            return None
        if resp.status_code != 200:  # 503: the owner has no key data yet (``unready``)
            log.warning("peer %s answered HTTP %d", url, resp.status_code)
            metrics.FORWARDS.labels("unreachable").inc()
            return None
        metrics.FORWARDS.labels("answered").inc()
        return Reply(resp.content, resp.headers.get("Content-Type", "text/plain"))

    def close(self) -> None:
        self.session.close()


def _is_forwarded(headers: Mapping[str, str]) -> bool:
    return headers.get(FORWARDED) == "1"


def unready(agent: Agent, headers: Mapping[str, str]) -> Response | None:
    """A forwarded request to an agent without key data yet (just restarted), or stopping (its
    tasks handed over to the next process), gets HTTP 503, which the forwarding agent answers
    as not ready: its client polls again, instead of being told ``ERROR_NO_SLOT_AVAILABLE``
    or ``ERROR_WRONG_CAPTCHA_ID`` for a task that is waiting for this node."""
    if _is_forwarded(headers) and (agent.keystore.snapshot is None or agent.tasks.handed_over):
        return Response("no key data yet", 503, mimetype="text/plain")
    return None


def res_one(agent: Agent, fields: dict[str, str], headers: Mapping[str, str], ip: str) -> Any:
    """For ``res.php`` naming one task (``id=``): None to answer here, the owner's ``Reply``,
    or a protocol text to answer with."""
    action = fields.get("action", "").strip().lower()
    unreachable = answers.NOT_READY if action in ("get", "get2") else answers.REPORT_NOT_RECORDED
    task_id = fields.get("id", "").strip()
    return _ask_owner(agent, task_id, "/res.php", headers, ip, unreachable, data=fields)


def res_many(
    agent: Agent, fields: dict[str, str], headers: Mapping[str, str], ids: list[str], ip: str
) -> dict[str, str]:
    """For ``res.php?ids=``: the answer slot of every id another agent owns (one request per
    owner); the ids left out are answered here."""
    by_owner: dict[str, list[str]] = {}
    slots: dict[str, str] = {}
    for task_id in ids:
        where = route(task_id, agent.settings.node_id, agent.loop.peers, _is_forwarded(headers))
        if where == UNKNOWN:
            slots[task_id] = answers.WRONG_ID
        elif where != LOCAL:
            by_owner.setdefault(where, []).append(task_id)
    base = {k: v for k, v in fields.items() if k not in ("ids", "id", "json", "header_acao")}
    for url, owned in by_owner.items():
        reply = agent.peers.ask(f"{url}/res.php", ip, data={**base, "ids": ",".join(owned)})
        if reply is None:
            slots.update(dict.fromkeys(owned, answers.NOT_READY))
            continue
        parts = reply.body.decode("utf-8", "replace").split("|")
        if len(parts) != len(owned):  # an answer holding "|", or a refusal: one at a time
            parts = [_one_slot(agent, url, {**base, "id": task_id}, ip) for task_id in owned]
        slots.update(zip(owned, parts, strict=True))
    return slots


def _one_slot(agent: Agent, url: str, fields: dict[str, str], ip: str) -> str:
    reply = agent.peers.ask(f"{url}/res.php", ip, data=fields)
    if reply is None:
        return answers.NOT_READY
    text = reply.body.decode("utf-8", "replace")
    return text[3:] if text.startswith("OK|") else text


def json_task(agent: Agent, body: dict[str, Any], task_id: str, path: str,
              headers: Mapping[str, str], ip: str) -> Any:  # fmt: skip
    """For ``getTaskResult`` and the JSON reports: None to answer here, the owner's ``Reply``,
    or a protocol text (an error, or ``NOT_READY`` for "processing")."""
    unreachable = answers.NOT_READY if path == "/getTaskResult" else answers.REPORT_NOT_RECORDED
    return _ask_owner(agent, task_id, path, headers, ip, unreachable, json=body)


def _ask_owner(agent: Agent, task_id: str, path: str, headers: Mapping[str, str], ip: str,
               unreachable: str, **payload: Any) -> Any:  # fmt: skip
    """None when ``task_id`` is ours, WRONG_ID when no known agent owns it, else the owner's
    answer to ``path`` with ``payload``, or ``unreachable`` when it gives none."""
    where = route(task_id, agent.settings.node_id, agent.loop.peers, _is_forwarded(headers))
    if where == LOCAL:
        return None
    if where == UNKNOWN:
        return answers.WRONG_ID
    reply = agent.peers.ask(f"{where}{path}", ip, **payload)
    return unreachable if reply is None else reply
