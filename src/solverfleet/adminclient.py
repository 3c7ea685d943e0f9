"""A small client for the collector's admin API (``/admin/v1/*``, docs/ARCHITECTURE.md).

Every failure — unreachable collector, timeout, HTTP error, a body that is not JSON — becomes an
``AdminError`` with a message fit to show a person. Decimal numbers in answers are parsed as
``Decimal`` so money never passes through a float.

The POSTs that move money or create something (apply, key create/rotate/top-up, token create)
carry an ``Idempotency-Key`` (a uuid4 unless the caller gives one). They alone are retried,
with the same key, after a lost connection, a timeout, a 503 or a 409
``idempotency_key_in_progress``: the collector does such a request at most once and answers a
repeat with the first answer (``last_replayed`` is then True).
"""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import requests

from solverfleet.agent.fleetclient import tls_verify

DEFAULT_TIMEOUT = 30.0  # s; an apply of a large team runs one transaction
DEFAULT_RETRIES = 3  # extra attempts of an idempotent POST
IDEMPOTENCY_HEADER = "Idempotency-Key"


class AdminError(Exception):
    """An admin API call that did not succeed. ``status`` and ``code`` when the server answered."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        transient: bool = False,
        unreachable: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.transient = transient  # no answer (connection lost, timeout): worth a retry
        # no answer at all (refused, timeout, TLS failure): the CLI exits 3, not 1
        self.unreachable = unreachable or transient


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def url_problem(url: str) -> str | None:
    """Why ``url`` is no collector base URL (no http/https scheme), or None when it is one."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return (
            f"collector URL {url!r} has no scheme: did you mean https://{url}? "
            f"(or http://{url} for a collector on loopback)"
        )
    if scheme.lower() not in ("http", "https") or not rest.strip("/"):
        return f"collector URL {url!r} must be http://HOST:PORT or https://HOST:PORT"
    return None


class AdminClient:
    """``ca_file``: PEM CA bundle verifying an https collector; empty: the system trust store."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: str | None = None,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        if not base_url:
            raise AdminError("no collector URL (--collector or SOLVERFLEET_COLLECTOR)")
        if not token:
            raise AdminError("no admin token (--token or SOLVERFLEET_TOKEN)")
        problem = url_problem(base_url)
        if problem:
            raise AdminError(problem)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.last_replayed = False  # the last call's answer was a replay (Idempotent-Replayed)
        self.ca_file = ca_file or ""
        # Passed on every call: a session's verify loses to REQUESTS_CA_BUNDLE in requests.
        self.verify = tls_verify(self.base_url, self.ca_file)
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._session.headers["User-Agent"] = "solverfleet-cli"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # admin API

    def apply(
        self, config: dict, *, dry_run: bool = False, idempotency_key: str | None = None
    ) -> dict:
        params = {"dry_run": "1"} if dry_run else None
        return self._call(
            "POST",
            "/admin/v1/apply",
            json_body=config,
            params=params,
            idempotency_key=idempotency_key or new_idempotency_key(),
        )

    def list_keys(self) -> list[dict]:
        return self._call("GET", "/admin/v1/keys")["keys"]

    def get_key(self, key_id: str) -> dict:
        return self._call("GET", f"/admin/v1/keys/{_seg(key_id)}")

    def topup(
        self,
        key_id: str,
        amount: str,
        reason: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict:
        body: dict[str, Any] = {"amount": amount}
        if reason:
            body["reason"] = reason
        return self._call(
            "POST",
            f"/admin/v1/keys/{_seg(key_id)}/topup",
            json_body=body,
            idempotency_key=idempotency_key or new_idempotency_key(),
        )

    def set_key_active(self, key_id: str, active: bool) -> dict:
        action = "activate" if active else "deactivate"
        return self._call("POST", f"/admin/v1/keys/{_seg(key_id)}/{action}")

    def list_users(self) -> list[dict]:
        return self._call("GET", "/admin/v1/users")["users"]

    def create_user(self, fields: dict[str, Any], *, idempotency_key: str | None = None) -> dict:
        """``POST /admin/v1/users``: ``{"user": {...}}``; ``None`` fields are left out."""
        body = {k: v for k, v in fields.items() if v is not None}
        key = idempotency_key or new_idempotency_key()
        return self._call("POST", "/admin/v1/users", json_body=body, idempotency_key=key)

    def set_user_active(self, user_id: str, active: bool) -> dict:
        action = "activate" if active else "deactivate"
        return self._call("POST", f"/admin/v1/users/{_seg(user_id)}/{action}")

    def usage(self, key_id: str | None = None, limit: int | None = None) -> dict:
        params = {k: v for k, v in (("key_id", key_id), ("limit", limit)) if v is not None}
        return self._call("GET", "/admin/v1/usage", params=params)

    def summary(self) -> dict:
        return self._call("GET", "/admin/v1/summary")

    def agents(self) -> list[dict]:
        return self._call("GET", "/admin/v1/agents")["agents"]

    def forget_agent(self, agent_id: str) -> dict:
        """``DELETE /admin/v1/agents/<id>``: a silent agent's leases return to the pool."""
        return self._call("DELETE", f"/admin/v1/agents/{_seg(agent_id)}")

    # transport

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        # Only a request with an Idempotency-Key is safe to send again: the collector does it
        # at most once and answers a repeat with the first answer.
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        attempts = 1 + (max(0, self.retries) if idempotency_key else 0)
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                resp = self._send(method, path, json_body, params, headers)
            except AdminError as exc:
                if last or not exc.transient:
                    raise
                time.sleep(_backoff(attempt))
                continue
            if not last and _retry_answer(resp):
                time.sleep(_backoff(attempt))
                continue
            break
        self.last_replayed = resp.headers.get("Idempotent-Replayed", "").lower() == "true"
        body = _json(resp)
        if resp.status_code >= 400:
            raise _http_error(resp, body)
        if not isinstance(body, dict):
            raise AdminError(
                f"unexpected answer from {method} {path} (HTTP {resp.status_code}): not JSON"
            )
        return body

    def _send(
        self, method: str, path: str, json_body: Any, params: dict | None, headers: dict | None
    ) -> requests.Response:
        url = self.base_url + path
        try:
            return self._session.request(
                method,
                url,
                json=json_body,
                params=params,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
            )
        except requests.exceptions.SSLError as exc:
            raise AdminError(self._tls_message(exc), unreachable=True) from None
        except requests.Timeout:
            raise AdminError(
                f"no answer from the collector within {self.timeout:g} s ({url})", transient=True
            ) from None
        except requests.RequestException as exc:
            reason = _reason(exc)
            if self.base_url.startswith("http://") and _hung_up(reason):
                reason += f" (does it serve HTTPS? try https://{self.base_url[7:]})"
            raise AdminError(
                f"cannot reach the collector at {self.base_url}: {reason}", transient=True
            ) from None

    def _tls_message(self, exc: requests.exceptions.SSLError) -> str:
        reason = _reason(exc)
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
            detail = reason.split("certificate verify failed:", 1)[-1].split("(_ssl", 1)[0]
            where = (
                f"the CA file {self.ca_file}"
                if self.ca_file
                else "the system trust store (give the collector's CA with --ca-file or "
                "SOLVERFLEET_CA_FILE)"
            )
            return (
                f"cannot verify the collector's TLS certificate at {self.base_url}: "
                f"{detail.strip()}; checked against {where}"
            )
        return f"TLS handshake with the collector at {self.base_url} failed: {reason}"

    # solve log and reports (routes_reports)

    def solve_log(self, **params: Any) -> dict:
        """One page of ``GET /admin/v1/log``; ``None`` parameters are left out."""
        sent = {name: value for name, value in params.items() if value is not None}
        return self._call("GET", "/admin/v1/log", params=sent)

    def report(self, name: str, since: str | None = None, until: str | None = None) -> dict:
        """``GET /admin/v1/reports/<name>``: team, projects, keys or stats."""
        sent = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
        return self._call("GET", f"/admin/v1/reports/{_seg(name)}", params=sent)

    # key lifecycle and tokens (routes_admin)

    def create_key(
        self, user_id: str, *, idempotency_key: str | None = None, **fields: Any
    ) -> dict:
        """``POST /admin/v1/keys``; the answer's ``secret`` is shown this once (a replayed
        answer has ``secret`` null and says why in ``secret_withheld``)."""
        body = {"user_id": user_id, **{k: v for k, v in fields.items() if v is not None}}
        return self._call(
            "POST",
            "/admin/v1/keys",
            json_body=body,
            idempotency_key=idempotency_key or new_idempotency_key(),
        )

    def update_key(self, key_id: str, changes: dict) -> dict:
        """``PATCH /admin/v1/keys/<id>``: ``changes`` may hold nulls (lift a limit)."""
        return self._call("PATCH", f"/admin/v1/keys/{_seg(key_id)}", json_body=changes)

    def delete_key(self, key_id: str) -> dict:
        """``DELETE /admin/v1/keys/<id>``: the secret stops working; usage history stays."""
        return self._call("DELETE", f"/admin/v1/keys/{_seg(key_id)}")

    def rotate_key(
        self, key_id: str, grace_seconds: int, *, idempotency_key: str | None = None
    ) -> dict:
        body = {"grace_seconds": grace_seconds}
        return self._call(
            "POST",
            f"/admin/v1/keys/{_seg(key_id)}/rotate",
            json_body=body,
            idempotency_key=idempotency_key or new_idempotency_key(),
        )

    def key_transactions(self, key_id: str, limit: int | None = None) -> list[dict]:
        params = {"limit": limit} if limit is not None else None
        path = f"/admin/v1/keys/{_seg(key_id)}/transactions"
        return self._call("GET", path, params=params)["transactions"]

    def create_token(
        self,
        role: str,
        user_id: str | None = None,
        label: str | None = None,
        agent_id: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict:
        fields = (("role", role), ("user_id", user_id), ("label", label), ("agent_id", agent_id))
        body = {k: v for k, v in fields if v}
        return self._call(
            "POST",
            "/admin/v1/tokens",
            json_body=body,
            idempotency_key=idempotency_key or new_idempotency_key(),
        )

    def list_tokens(self) -> list[dict]:
        return self._call("GET", "/admin/v1/tokens")["tokens"]

    def revoke_token(self, token_id: int) -> dict:
        return self._call("POST", f"/admin/v1/tokens/{int(token_id)}/revoke")["token"]

    # low-balance notifications (routes_notifications)

    def notifications(
        self, account: str | None = None, since: str | None = None, limit: int | None = None
    ) -> dict:
        params = {k: v for k, v in (("account", account), ("since", since), ("limit", limit)) if v}
        return self._call("GET", "/admin/v1/notifications", params=params)

    # the audit log (routes_admin)

    def audit(self, **params: Any) -> dict:
        """One page of ``GET /admin/v1/audit``; ``None`` parameters are left out."""
        sent = {name: value for name, value in params.items() if value is not None}
        return self._call("GET", "/admin/v1/audit", params=sent)


def _backoff(attempt: int) -> float:
    return min(2.0, 0.25 * 2 ** (attempt - 1))


def _retry_answer(resp: requests.Response) -> bool:
    """An answer that says "not done (yet), ask again": 503, or the first attempt still
    running at the collector (409 idempotency_key_in_progress)."""
    if resp.status_code == 503:
        return True
    if resp.status_code != 409:
        return False
    body = _json(resp)
    return isinstance(body, dict) and body.get("error") == "idempotency_key_in_progress"


def _seg(value: str) -> str:
    return quote(str(value), safe="")


def _json(resp: requests.Response) -> Any:
    try:
        return json.loads(resp.content, parse_float=Decimal)
    except ValueError:
        return None


def _http_error(resp: requests.Response, body: Any) -> AdminError:
    if isinstance(body, dict) and (body.get("message") or body.get("error")):
        code = str(body.get("error") or "")
        message = str(body.get("message") or code)
        return AdminError(message, status=resp.status_code, code=code or None)
    if resp.status_code == 401:
        return AdminError("the collector refused the admin token (HTTP 401)", status=401)
    return AdminError(f"the collector answered HTTP {resp.status_code}", status=resp.status_code)


def _hung_up(reason: str) -> bool:
    """A server that closed the connection on a request: often plain HTTP to a TLS port."""
    text = reason.lower()
    return "reset by peer" in text or "without response" in text or "aborted" in text


def _reason(exc: requests.RequestException) -> str:
    # requests nests the OS error several levels deep; the innermost text is the useful one.
    inner: BaseException = exc
    for _ in range(10):
        nested = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        nested = nested or getattr(inner, "reason", None) or inner.__context__
        if not isinstance(nested, BaseException):
            break
        inner = nested
    text = str(inner)
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text
