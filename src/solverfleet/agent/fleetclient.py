"""HTTP client for the collector's fleet protocol (``/agent/v1/*``), bearer-authenticated.

An ``https`` collector is verified against ``ca_file`` (the agent's ``collector_ca_file``) or,
when that is empty, the system trust store — never against nothing.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

import requests

log = logging.getLogger(__name__)


class CollectorError(Exception):
    """The collector could not be reached or did not answer 200; ``status`` None = no answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def system_ca() -> str | bool:
    """The system trust store as ``requests`` takes it: OpenSSL's default CA file or directory
    (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), else ``True`` (requests' own bundle)."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return paths.cafile
    if paths.capath and os.path.isdir(paths.capath):
        return paths.capath
    return True


def tls_verify(url: str, ca_file: str = "") -> str | bool:
    """What to pass as ``requests``' ``verify=`` for ``url``: the CA file, else the system store.

    Passed on every call, not only set on the session: ``requests`` lets ``REQUESTS_CA_BUNDLE``
    override a session's ``verify``, so a configured CA file would silently be ignored.
    """
    if not url.lower().startswith("https://"):
        return True  # unused for plain HTTP
    return ca_file or system_ca()


def failure_reason(exc: requests.RequestException) -> str:
    """A short reason for a failed call; certificate problems are named as such."""
    inner: BaseException | None = exc
    for _ in range(10):
        if inner is None:
            break
        if isinstance(inner, ssl.SSLCertVerificationError):
            detail = inner.verify_message or inner.reason or str(inner)
            return f"TLS certificate verification failed: {detail}"
        if isinstance(inner, ssl.SSLError):
            return f"TLS error: {inner.reason or inner}"
        nested = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        inner = nested or getattr(inner, "reason", None) or inner.__context__
        if not isinstance(inner, BaseException):
            break
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    return type(exc).__name__


class FleetClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float,
        *,
        ca_file: str = "",
        token_file: str = "",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.verify = tls_verify(self.base_url, ca_file)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.verify = self.verify
        self.token_file = token_file
        self._token_stamp = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        if not self.token_file:
            return None
        try:
            st = os.stat(self.token_file)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _follow_token_file(self) -> None:
        """A rotated credential (the file replaced) is used from the next call on."""
        stamp = self._stamp()
        if stamp is None or stamp == self._token_stamp:
            return
        try:
            with open(self.token_file) as fh:
                token = fh.read().strip()
        except OSError:
            return
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
            self._token_stamp = stamp
            log.info("fleet credential reloaded from %s", self.token_file)

    def post(self, path: str, payload: dict[str, Any], timeout: float | None = None) -> Any:
        self._follow_token_file()
        try:
            resp = self.session.post(
                self.base_url + path,
                json=payload,
                timeout=timeout or self.timeout,
                verify=self.verify,
            )
        except requests.RequestException as exc:
            # The reason can carry the URL but never the token (it is a header).
            raise CollectorError(f"{path}: {failure_reason(exc)}") from None
        if resp.status_code != 200:
            raise CollectorError(f"{path}: HTTP {resp.status_code}", resp.status_code)
        try:
            return resp.json()
        except ValueError:
            raise CollectorError(f"{path}: answer is not JSON", resp.status_code) from None

    def close(self) -> None:
        self.session.close()
