"""Usage events: one per call that reached the worker, in the protocol's exact shape.

Pre-check refusals are not usage events: nothing reached the worker and nothing is owed, and
an abusive client could otherwise flood the spool and the collector with them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from solverfleet.agent.keystore import Key, User


def new_id() -> str:
    return os.urandom(16).hex()  # 32 hex chars, like uuid4().hex, without the object


def build_event(
    *,
    agent_id: str,
    request_id: str,
    key: Key,
    user: User,
    slug: str,
    url: str | None,
    ok: bool,
    error: str | None,
    message: str | None,
    source_ip: str,
    duration_ms: int,
    cost_micros: int,
    status: str | None = None,
    soft_id: int | None = None,
) -> dict[str, Any]:
    """The event; ``status`` (report_good, report_bad) overrides success/failed and costs 0;
    ``soft_id`` (a client's software id, in.php / createTask) only when it sent one."""
    if status is not None:
        cost_micros = 0
    event = {
        "event_id": new_id(),
        "ts_ms": int(time.time() * 1000),
        "request_id": request_id,
        "agent_id": agent_id,
        "key_id": key.id,
        "user_id": user.id,
        "user_email": user.email,
        "account": key.account if key.account is not None else user.account,
        "project": key.project,
        "environment": key.environment,
        "type": slug,
        "url": url,
        "status": status or ("success" if ok else "failed"),
        "error": None if ok else error,
        "message": None if ok else message,
        "source_ip": source_ip,
        "duration_ms": duration_ms,
        "cost_micros": cost_micros if ok else 0,
    }
    if soft_id is not None:
        event["soft_id"] = soft_id
    return event
