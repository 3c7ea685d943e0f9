"""Run the repository's playbooks against a namespace lab, and read what they did.

The fleet addresses (198.51.100.x) answer only inside the lab's controller namespace, so
``ansible-playbook`` runs there (``Lab.controller_exec``) with the lab's generated inventory and
this repository's ``ansible.cfg`` and roles. ``PLAY RECAP`` is parsed into numbers per host.

    run = run_playbook(lab, "site.yml", extra_vars={"solverfleet_wheelhouse_dir": str(wh)})
    run.assert_ok()
    assert run.changed == 0

``controller_request`` makes one HTTP(S) call from the controller namespace (stdlib only, so
no curl is needed), for health checks and API calls against lab hosts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
# The venv running pytest also holds ansible (requirements-ansible.txt).
VENV_BIN = Path(sys.executable).parent

_RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:[a-z]+=\d+\s*)+)$")
_COUNT = re.compile(r"([a-z]+)=(\d+)")


@dataclass(frozen=True)
class HostRecap:
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass
class PlaybookRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    recap: dict[str, HostRecap] = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.recap.values())

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(h for h, r in self.recap.items() if r.failed or r.unreachable)

    def changed_tasks(self) -> list[str]:
        """'TASK [...] host' for every task that reported changed (to explain changed != 0)."""
        found, task = [], ""
        for line in self.stdout.splitlines():
            if line.startswith("TASK ["):
                task = line.rstrip("* ").strip()
            elif line.startswith("changed: ["):
                found.append(f"{task} {line.split(']')[0]}]")
        return found

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def assert_ok(self) -> None:
        if self.returncode != 0 or self.failed_hosts or not self.recap:
            raise AssertionError(
                f"{' '.join(self.argv[:4])} ... exited {self.returncode} "
                f"after {self.seconds:.0f}s; failed/unreachable: {self.failed_hosts}\n"
                f"--- output tail ---\n{self.tail()}"
            )


def parse_recap(text: str) -> dict[str, HostRecap]:
    """Host -> counts from the last PLAY RECAP block of ansible-playbook's output."""
    start = text.rfind("PLAY RECAP")
    if start < 0:
        return {}
    recap: dict[str, HostRecap] = {}
    for line in text[start:].splitlines()[1:]:
        line = line.strip()
        if not line:
            if recap:
                break
            continue
        m = _RECAP_LINE.match(line)
        if not m:
            break
        counts = {k: int(v) for k, v in _COUNT.findall(m.group("counts"))}
        recap[m.group("host")] = HostRecap(**{k: v for k, v in counts.items() if k in _FIELDS})
    return recap


_FIELDS = set(HostRecap.__dataclass_fields__)


def ansible_env(lab: Any, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ansible-playbook in the controller namespace: this repo's config, plain
    output, the venv first on PATH (molecule and ansible-* look for each other there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SOLVERFLEET_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_LOCAL_TEMP=str(Path(lab.state_dir) / "ansible-tmp"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def run_playbook(
    lab: Any,
    playbook: str | os.PathLike[str],
    *,
    extra_vars: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> PlaybookRun:
    """ansible-playbook PLAYBOOK against the lab inventory, inside the controller namespace."""
    path = Path(playbook)
    if not path.is_absolute():
        path = PLAYBOOKS / path
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(lab.inventory_path), str(path)]
    if extra_vars:
        argv += ["-e", json.dumps(dict(extra_vars))]
    argv += list(args)
    started = time.monotonic()
    proc = lab.controller_exec(argv, env=ansible_env(lab, env), cwd=REPO, timeout=timeout)
    seconds = time.monotonic() - started
    return PlaybookRun(
        argv, proc.returncode, proc.stdout, proc.stderr, seconds, parse_recap(proc.stdout)
    )


def build_wheelhouse(dest: Path) -> Path:
    """What `make wheelhouse` builds: the project wheel and every pinned runtime dependency."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(VENV_BIN / "python"), "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
            "-c", str(REPO / "constraints.txt"), "-w", str(dest), str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    return dest


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
    lab: Any,
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
