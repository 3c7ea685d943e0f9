"""A stand-in for the collector's admin API, for CLI unit tests: records every request and
answers from a table of canned responses. Real HTTP on loopback, so the CLI's client, timeouts
and error handling run for real."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Recorded:
    method: str
    path: str  # without the query string, still percent-encoded
    query: dict
    headers: dict
    body: object


class FakeAdmin:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._routes: dict[tuple[str, str], tuple[int, bytes, str]] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PATCH(self) -> None:
                fake._handle(self, "PATCH")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def answer(self, method: str, path: str, body: object, status: int = 200) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        ctype = "text/html" if isinstance(body, bytes) else "application/json"
        self._routes[(method, path)] = (status, data, ctype)

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        self.requests.append(
            Recorded(
                method,
                parts.path,
                parse_qs(parts.query),
                dict(handler.headers),
                json.loads(raw) if raw else None,
            )
        )
        status, data, ctype = self._routes.get(
            (method, parts.path),
            (
                404,
                json.dumps({"error": "not_found", "message": "no such route"}).encode(),
                "application/json",
            ),
        )
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def start(self) -> FakeAdmin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake_admin():
    server = FakeAdmin().start()
    yield server
    server.stop()
