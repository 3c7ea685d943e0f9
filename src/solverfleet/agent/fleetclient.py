"""HTTP client for the collector's fleet protocol (``/agent/v1/*``), bearer-authenticated."""

from __future__ import annotations

from typing import Any

import requests


class CollectorError(Exception):
    """The collector could not be reached or did not answer 200; ``status`` None = no answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FleetClient:
    def __init__(self, base_url: str, token: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def post(self, path: str, payload: dict[str, Any], timeout: float | None = None) -> Any:
        try:
            resp = self.session.post(
                self.base_url + path, json=payload, timeout=timeout or self.timeout
            )
        except requests.RequestException as exc:
            # The exception text can carry the URL but never the token (it is a header).
            raise CollectorError(f"{path}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise CollectorError(f"{path}: HTTP {resp.status_code}", resp.status_code)
        try:
            return resp.json()
        except ValueError:
            raise CollectorError(f"{path}: answer is not JSON", resp.status_code) from None

    def close(self) -> None:
        self.session.close()
