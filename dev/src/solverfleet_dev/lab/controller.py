"""Work from a lab's controller namespace, where the fleet addresses (198.51.100.x) answer:
``ansible-playbook`` with this checkout's config and roles, and single HTTP(S) calls (stdlib only,
so no curl is needed). Used by the demo and by the lab tests."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solverfleet_dev.lab.lab import Lab

# ansible-playbook and friends sit beside the interpreter running us (the project venv).
VENV_BIN = Path(sys.executable).parent


def ansible_env(lab: Lab, repo: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ansible-playbook in the controller namespace: the checkout's config and
    roles, plain output, the venv first on PATH (molecule and ansible-* look for each other)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SOLVERFLEET_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_CONFIG=str(repo / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(repo / "roles"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_LOCAL_TEMP=str(Path(lab.state_dir) / "ansible-tmp"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def playbook_argv(
    lab: Lab,
    playbook: Path,
    extra_vars: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
) -> list[str]:
    """ansible-playbook PLAYBOOK against the lab inventory (run it in the controller namespace)."""
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(lab.inventory_path), str(playbook)]
    if extra_vars:
        argv += ["-e", json.dumps(dict(extra_vars))]
    return argv + list(args)


_REQUEST_SCRIPT = r"""
import json, ssl, sys, urllib.error, urllib.request
spec = json.loads(sys.stdin.read())
https = spec["url"].startswith("https:")
ctx = ssl.create_default_context(cafile=spec["cafile"]) if https else None
data = None if spec["body"] is None else json.dumps(spec["body"]).encode()
headers = dict(spec["headers"])
if data is not None:
    headers.setdefault("Content-Type", "application/json")
req = urllib.request.Request(spec["url"], data=data, method=spec["method"], headers=headers)
try:
    with urllib.request.urlopen(req, timeout=spec["timeout"], context=ctx) as resp:
        status, body = resp.status, resp.read().decode()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read().decode()
except Exception as exc:
    status, body = -1, f"{type(exc).__name__}: {exc}"
print(json.dumps({"status": status, "body": body}))
"""


@dataclass(frozen=True)
class Response:
    status: int
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def controller_request(
    lab: Lab,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    cafile: str | None = None,
    timeout: float = 10.0,
) -> Response:
    """One HTTP(S) request from the controller namespace. TLS is verified (pass ``cafile`` for
    a self-signed lab certificate). Connection errors come back as status -1."""
    spec = {
        "method": method,
        "url": url,
        "headers": dict(headers or {}),
        "body": body,
        "cafile": cafile,
        "timeout": timeout,
    }
    proc = lab.controller_exec(
        [sys.executable, "-c", _REQUEST_SCRIPT], input=json.dumps(spec), timeout=timeout + 10
    )
    if proc.returncode != 0:
        return Response(-1, proc.stderr.strip())
    out = json.loads(proc.stdout)
    return Response(out["status"], out["body"])
