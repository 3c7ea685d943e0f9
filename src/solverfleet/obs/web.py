"""The Flask side of observability, shared by the agent and the collector.

- ``install(app, counter)``: every request gets a request id (the caller's ``X-Request-Id``
  when well-formed, else a fresh one) for its log lines and echoed in the response header,
  and is counted by endpoint and status code (a WSGI middleware, ``RequestIds``).
- ``metrics_response`` / ``peer_allowed``: the ``/metrics`` body and its access rule.
- ``openapi_document``: a package's ``openapi.yaml`` as the ``/openapi.json`` body.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import yaml
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from solverfleet.obs.logjson import REQUEST_ID, accept_request_id

HEADER = "X-Request-Id"
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
Nets = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def install(app: Flask, counter: Counter) -> None:
    """Request ids and the per-endpoint request counter (``endpoint``, ``code`` labels)."""
    app.wsgi_app = RequestIds(app.wsgi_app, counter)  # type: ignore[method-assign]


class RequestIds:
    """WSGI middleware rather than Flask hooks: with any before/after-request hook Flask
    pays its hook dispatch on every request (measured: ~15 us, more than the hooks' own
    work); this costs one call layer and a ``start_response`` wrapper."""

    def __init__(self, wsgi_app: Any, counter: Counter) -> None:
        self.wsgi_app = wsgi_app
        self.counter = counter
        self.children: dict[tuple[str | None, str], Any] = {}  # labels() locks and str()s

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request_id = accept_request_id(environ.get("HTTP_X_REQUEST_ID"))
        REQUEST_ID.set(request_id)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not any(name.lower() == "x-request-id" for name, _ in headers):
                headers.append((HEADER, request_id))
            # Flask's request object for this environ knows the endpoint it matched.
            flask_request = environ.get("werkzeug.request")
            labels = (getattr(flask_request, "endpoint", None), status[:3])
            child = self.children.get(labels)
            if child is None:
                child = self.children[labels] = self.counter.labels(
                    labels[0] or "unmatched", labels[1]
                )
            child.inc()
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start)
        finally:
            # A reused gthread thread's later server logs must not carry this request's id.
            REQUEST_ID.set(None)


def parse_nets(cidrs: Iterable[str]) -> Nets:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def peer_allowed(nets: Nets) -> bool:
    """A peer inside ``nets`` that no proxy forwarded (a forwarded request is the public's)."""
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    try:
        peer = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return any(peer.version == net.version and peer in net for net in nets)


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


@cache
def openapi_document(package: str) -> dict[str, Any]:
    """``package``'s openapi.yaml, parsed once per process."""
    text = resources.files(package).joinpath("openapi.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)
