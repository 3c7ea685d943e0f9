"""Calls the local solver worker: ``POST {worker_url}/work`` with the solve body.

Worker 2xx with a JSON ``result`` = success; any other answer or a connection error =
``worker_failed`` (502); no answer within ``worker_timeout`` = ``worker_timeout`` (504).
Neither failure is charged. One urllib3 connection pool: under gevent each call is a greenlet
waiting on a socket, and connections are reused instead of opened per solve. urllib3 rather
than requests because requests' per-call environment and proxy merging cost more than the
rest of the hot path together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError


@dataclass(slots=True)
class WorkerOutcome:
    ok: bool
    result: Any = None
    error: str | None = None  # "worker_failed" | "worker_timeout"
    message: str | None = None


class WorkerClient:
    def __init__(self, base_url: str, timeout: float, pool_size: int = 10000) -> None:
        parts = urlsplit(base_url.rstrip("/") + "/work")
        self.path = parts.path
        self.pool = urllib3.connection_from_url(
            f"{parts.scheme}://{parts.netloc}",
            maxsize=pool_size,
            timeout=urllib3.Timeout(connect=min(5.0, timeout), read=timeout),
            retries=False,
        )

    def solve(self, body: dict[str, Any], request_id: str) -> WorkerOutcome:
        headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
        try:
            resp = self.pool.urlopen(
                "POST", self.path, body=json.dumps(body).encode(), headers=headers
            )
        except NewConnectionError as exc:  # a subclass of ConnectTimeoutError, but "refused"
            message = f"the solver worker is unreachable ({type(exc).__name__})"
            return WorkerOutcome(False, error="worker_failed", message=message)
        except TimeoutError:
            return WorkerOutcome(
                False, error="worker_timeout", message="the solver worker timed out"
            )
        except HTTPError as exc:
            message = f"the solver worker is unreachable ({type(exc).__name__})"
            return WorkerOutcome(False, error="worker_failed", message=message)
        if not 200 <= resp.status < 300:
            return WorkerOutcome(
                False,
                error="worker_failed",
                message=f"the solver worker answered HTTP {resp.status}",
            )
        try:
            result = json.loads(resp.data)["result"]
        except (ValueError, KeyError, TypeError):
            message = "the solver worker answered without a result"
            return WorkerOutcome(False, error="worker_failed", message=message)
        return WorkerOutcome(True, result=result)

    def close(self) -> None:
        self.pool.close()
