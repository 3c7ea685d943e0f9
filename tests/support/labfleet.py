"""The deployed lab fleet shared by the lab test modules: one lab (lb1, collector1, solver1..3)
brought to a serving fleet by one playbooks/site.yml run from bare hosts, for the whole session.

The wheelhouse is built fresh from this checkout (what `make wheelhouse` builds) and installed
offline on the hosts by the roles. The test balancer runs with `retries 0` and no redispatch, so
a request cut by a missing drain shows up as a failure instead of being retried on another
agent. Modules that change the fleet (stop an agent, switch colour) put it back before they end.

Load tracked per request and the ledger check on this fleet are in tests.support.labledger.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from solverfleet_dev.lab import Lab
from solverfleet_dev.lab.config import GATEWAY
from tests.support.ansible import (
    PlaybookRun,
    build_wheelhouse,
    controller_request,
    run_playbook,
)
from tests.support.lab import SOLVERS, lab_name, reap_stale_test_labs, running_lab, skip_reason

# The lab hosts share /usr with the machine: what the roles run must be installed here first.
_PACKAGES = {"/usr/bin/supervisord": "supervisor", "/usr/sbin/haproxy": "haproxy"}
_MISSING = sorted(pkg for path, pkg in _PACKAGES.items() if not Path(path).exists())
SKIP = skip_reason() or (
    f"lab hosts need {' '.join(_MISSING)}: apt-get install -y {' '.join(_MISSING)}"
    if _MISSING
    else None
)

AGENT_PORT = 8600
COLLECTOR_PORT = 8400
ADMIN_PORT = 8443  # HAProxy's operators' frontend to the collector (solverfleet_lb_admin_port)
# The fleet CA on every host (roles/solverfleet_pki); scripts run inside hosts verify with it.
HOST_CA = "/etc/solverfleet/tls/ca.pem"
# The test balancer: no retries, no redispatch (a cut request must show as a failure).
TEST_LB = {"solverfleet_lb_retries": 0, "solverfleet_lb_redispatch": False}
# Never run the package manager inside a lab host: /usr is the machine's.
# Pingbacks to the controller (the lab's gateway address), where the tests' receiver listens:
# a private range, so allowed explicitly, as an operator would.
LAB_AGENT = {"pingback_allow_cidrs": [f"{GATEWAY}/32"]}
LAB_VARS = {
    "solverfleet_manage_packages": False,
    "solverfleet_agent_settings": LAB_AGENT,
    **TEST_LB,
}
# The lab's price list and apply_key's key.
LAB_PRICE = "0.002"
LAB_KEY_ID, LAB_OPENING = "alice-lab", "100.00"


@dataclass
class Fleet:
    lab: Lab
    extra: dict
    first: PlaybookRun
    admin_token: str
    fleet_token: str
    api_key: str = ""
    cafile: str = ""

    def host(self, group: str):
        return next(h for h in self.lab.hosts if h.group == group)

    @property
    def fleet_ca(self) -> str:
        """The fleet's private CA, made on the controller beside the lab inventory."""
        return str(Path(self.lab.state_dir) / ".pki" / "ca.pem")

    def agent_url(self, address: str, port: int = AGENT_PORT) -> str:
        return f"https://{address}:{port}"

    @property
    def collector_url(self) -> str:
        return f"https://{self.host('collector').address}:{COLLECTOR_PORT}"

    def get(self, url: str, **kwargs):
        """GET from the controller namespace, verifying fleet hosts with the fleet CA."""
        return controller_request(self.lab, "GET", url, cafile=self.fleet_ca, **kwargs)

    @property
    def solvers(self):
        return [h for h in self.lab.hosts if h.group == "solvers"]


@pytest.fixture(scope="session", name="lab_wheelhouse")
def lab_wheelhouse_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheels the lab hosts install, built once per session from this checkout."""
    if SKIP:
        pytest.skip(SKIP)
    return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture(scope="session", name="fleet")
def fleet_fixture(lab_wheelhouse: Path) -> Iterator[Fleet]:
    """A lab deployed by one site.yml run from bare hosts, shared by the lab modules."""
    reap_stale_test_labs()
    with deployed_fleet(lab_name("site"), lab_wheelhouse) as fleet:
        yield fleet


@contextlib.contextmanager
def deployed_fleet(
    name: str, wheelhouse: Path, solvers: int = SOLVERS, init: str = "systemd"
) -> Iterator[Fleet]:
    """A lab named ``name`` (hosts booting ``init``) brought up and deployed by site.yml from
    ``wheelhouse`` inside the block, taken down (with the files the plays left in its state
    dir) after it."""
    state_dir = None
    try:
        with running_lab(name, solvers, init) as lab:
            state_dir = Path(lab.state_dir)
            extra = {"solverfleet_wheelhouse_dir": str(wheelhouse), **LAB_VARS}
            first = run_playbook(lab, "site.yml", extra_vars=extra)
            first.assert_ok()
            # Tokens were generated once into the lab state dir, on the controller.
            secrets_dir = state_dir / "secrets"
            yield Fleet(
                lab,
                extra,
                first,
                admin_token=(secrets_dir / "admin_token").read_text().strip(),
                fleet_token=(secrets_dir / "fleet_token").read_text().strip(),
            )
    finally:
        # `down` keeps files it did not make: the generated tokens, the CA copy, Ansible's temp.
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


def wait_for_response(fetch, ok, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        resp = fetch()
        if ok(resp):
            return resp
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: still {resp.status} {resp.body[:300]!r} after {timeout}s"
            )
        time.sleep(0.5)


def apply_lab_key(
    fleet: Fleet,
    *,
    account: str,
    user: str,
    key_id: str,
    secret: str,
    balance: str,
    prices: dict[str, str] | None = None,
) -> None:
    """One account with one user holding one key (``prices``, default turnstile at LAB_PRICE),
    through the admin API."""
    applied = controller_request(
        fleet.lab,
        "POST",
        f"{fleet.collector_url}/admin/v1/apply",
        cafile=fleet.fleet_ca,
        headers={"Authorization": f"Bearer {fleet.admin_token}"},
        body={
            "account": account,
            "prices": prices or {"turnstile": LAB_PRICE},
            "users": [
                {
                    "id": user,
                    "email": f"{user}@example.com",
                    "keys": [{"id": key_id, "secret": secret, "balance": balance}],
                }
            ],
        },
    )
    assert applied.status == 200, applied


def apply_key(fleet: Fleet) -> None:
    """A key created through the collector's admin API, and the lb certificate to verify TLS."""
    if fleet.api_key:
        return
    api_key = register_secret(LAB_KEY_ID, "sk-lab-" + secrets.token_urlsafe(24))
    apply_lab_key(
        fleet, account="labco", user="alice", key_id=LAB_KEY_ID, secret=api_key, balance=LAB_OPENING
    )
    fleet.api_key, fleet.cafile = api_key, lb_certificate(fleet)


def lb_certificate(fleet: Fleet) -> str:
    """The balancer's (self-signed) public certificate, saved to verify TLS against it."""
    lb = fleet.host("lb")
    cert = fleet.lab.ssh(lb.name, ["cat", "/etc/haproxy/certs/solverfleet.pem"], check=True)
    cafile = Path(fleet.lab.state_dir) / "lb-ca.pem"
    cafile.write_text(cert.stdout)
    return str(cafile)


def solve(fleet: Fleet, key: str = "", *, base: str = "", cafile: str = ""):
    """One turnstile /solve with ``key`` (the lab key), through the balancer unless ``base``
    names another HTTPS endpoint (verified with ``cafile``, the balancer's certificate)."""
    return controller_request(
        fleet.lab,
        "POST",
        f"{base or 'https://' + fleet.host('lb').address}/solve",
        headers={"Authorization": f"Bearer {key or fleet.api_key}"},
        body={"type": "turnstile", "url": "https://example.com/login"},
        cafile=cafile or fleet.cafile,
    )


def haproxy_command(fleet: Fleet, command: str) -> str:
    """One command on HAProxy's runtime API socket on the lb host; its answer."""
    query = (
        f"printf '{command}\\n' | python3 -c \"import socket, sys; "
        "s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
        's.sendall(sys.stdin.buffer.read()); print(s.makefile().read())"'
    )
    return fleet.lab.ssh(fleet.host("lb").name, [query], check=True).stdout


def haproxy_servers(fleet: Fleet) -> str:
    """`show servers state` from HAProxy's runtime API socket on the lb host."""
    return haproxy_command(fleet, "show servers state solverfleet_agents")


# Bounded load from the controller namespace: `threads` clients, each call holding the worker
# `latency_ms` (so drains have in-flight solves to wait for), until the stop file appears or
# `seconds` pass. Prints one JSON line of status counts.
_LOAD = r"""
import collections, json, os, ssl, sys, threading, time, urllib.error, urllib.request
url, key, cafile, stop, seconds, threads, latency = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=cafile)
deadline = time.monotonic() + float(seconds)
counts, errors, lock = collections.Counter(), [], threading.Lock()
body = json.dumps({"type": "turnstile", "url": "https://example.com/",
                   "params": {"demo": {"latency_ms": int(latency)}}}).encode()
def client():
    while time.monotonic() < deadline and not os.path.exists(stop):
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Authorization": "Bearer " + key, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
                code, text = resp.status, ""
        except urllib.error.HTTPError as exc:
            code, text = exc.code, exc.read()[:200].decode(errors="replace")
        except Exception as exc:
            code, text = type(exc).__name__, str(exc)[:200]
        with lock:
            counts[str(code)] += 1
            if code != 200:
                errors.append(f"{code} {text}")
ts = [threading.Thread(target=client) for _ in range(int(threads))]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps({"counts": counts, "errors": errors[:10]}))
"""


def start_load(
    fleet: Fleet, stop: Path, *, seconds: int = 600, threads: int = 6, latency_ms: int = 1500
) -> subprocess.Popen:
    """Bounded /solve load through the balancer until ``stop`` exists; see finish_load."""
    return subprocess.Popen(
        fleet.lab.controller_argv(
            [sys.executable, "-c", _LOAD, f"https://{fleet.host('lb').address}/solve",
             fleet.api_key, fleet.cafile, str(stop), str(seconds), str(threads), str(latency_ms)]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish_load(load: subprocess.Popen, stop: Path) -> dict:
    """Stop the load and return its ``{"counts": {status: n}, "errors": [...]}``."""
    stop.touch()
    out, err = load.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {"counts": {}, "err": err}


def wait_in_flight(fleet: Fleet, *, timeout: float = 30, port: int = AGENT_PORT) -> None:
    """Wait until every solver's agent (on ``port``) has a solve in flight."""

    def busy(host) -> bool:
        resp = fleet.get(f"{fleet.agent_url(host.address, port)}/readyz")
        return resp.status == 200 and resp.json().get("in_flight", 0) > 0

    deadline = time.monotonic() + timeout
    idle = list(fleet.solvers)
    while idle:
        idle = [h for h in idle if not busy(h)]
        if idle and time.monotonic() > deadline:
            raise AssertionError(f"no solve in flight on {[h.name for h in idle]} after {timeout}s")


def admin_get(fleet: Fleet, path: str):
    """GET on the collector's admin API with the lab's admin token."""
    return fleet.get(
        f"{fleet.collector_url}/admin/v1/{path}",
        headers={"Authorization": f"Bearer {fleet.admin_token}"},
    )


def key_successes(fleet: Fleet, key_id: str = "alice-lab") -> int:
    """Successful solves of one key recorded at the collector (exactly-once summary)."""
    resp = admin_get(fleet, "summary")
    assert resp.status == 200, resp
    return resp.json()["keys"][key_id]["successes"]


_BACKLOG = (
    'python3 -c "import json, ssl, sys, urllib.request\n'
    f"ctx = ssl.create_default_context(cafile='{HOST_CA}')\n"
    "for port in sys.argv[1:]:\n"
    "    try:\n"
    "        r = urllib.request.urlopen('https://127.0.0.1:%s/admin/status' % port, timeout=5,"
    " context=ctx)\n"
    "    except OSError:\n"
    "        continue  # that colour's agent is not running\n"
    "    print(json.load(r)['spool_backlog'])\" "
)


def settled_successes(fleet: Fleet, *, timeout: float = 60) -> int:
    """The lab key's successes at the collector once every agent (both colours) has shipped its
    spool, so a count taken before a test's load includes the solves made just before it."""
    deadline = time.monotonic() + timeout
    ports = f"{AGENT_PORT} {AGENT_PORT + 1}"
    while True:
        backlog = {
            host.name: fleet.lab.ssh(host.name, [_BACKLOG + ports], check=True).stdout.split()
            for host in fleet.solvers
        }
        if all(n == "0" for ns in backlog.values() for n in ns):
            return key_successes(fleet)
        if time.monotonic() > deadline:
            raise AssertionError(f"agents' spools not shipped after {timeout}s: {backlog}")
        time.sleep(0.5)


def wait_usage_equals(fleet: Fleet, expected: int, *, timeout: float = 60) -> int:
    """Wait until the collector holds ``expected`` successes of the lab key (agents ship within
    seconds); return the final count, which the caller asserts (more would be a double charge)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = key_successes(fleet)
        if seen >= expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


# --- secrets used in the session (tests/lab/test_secret_scan.py looks for every one) -----------

KEY = "key"  # an API key secret: found nowhere but in the client's hands
TOKEN = "token"  # an admin or fleet token: in the hosts' settings files (0640), nowhere else


@dataclass(frozen=True)
class SessionSecret:
    label: str
    value: str
    kind: str  # KEY or TOKEN
    host: str = ""  # a host's own credential: allowed in that host's settings only


_SECRETS: dict[str, SessionSecret] = {}


def register_secret(label: str, value: str, kind: str = KEY) -> str:
    """Record a secret where a lab module makes or learns it; returns it unchanged."""
    if kind not in (KEY, TOKEN):
        raise ValueError(f"kind must be {KEY!r} or {TOKEN!r}, got {kind!r}")
    if value:
        _SECRETS[label] = SessionSecret(label, value, kind)
    return value


def session_secrets(fleet: Fleet) -> list[SessionSecret]:
    """Every secret of this session: those registered, the fleet's tokens, and whatever the
    playbooks generated into the lab's secrets dir on the controller (tokens, API keys)."""
    found = dict(_SECRETS)
    found.setdefault("admin_token", SessionSecret("admin_token", fleet.admin_token, TOKEN))
    found.setdefault("fleet_token", SessionSecret("fleet_token", fleet.fleet_token, TOKEN))
    secrets_dir = Path(fleet.lab.state_dir) / "secrets"
    known = {s.value for s in found.values()}
    for path in sorted(p for p in secrets_dir.rglob("*") if p.is_file()):
        value = path.read_text().strip()
        if value and value not in known:
            rel = path.relative_to(secrets_dir)
            kind = KEY if rel.parts[0] == "keys" else TOKEN
            found[f"secrets/{rel}"] = SessionSecret(f"secrets/{rel}", value, kind)
            known.add(value)
    for host, files in agent_credentials(fleet).items():
        for path, value in files.items():
            found[f"{host}:{path}"] = SessionSecret(f"{host}:{path}", value, TOKEN, host)
    return list(found.values())


def agent_credentials(fleet: Fleet) -> dict[str, dict[str, str]]:
    """Each solver host's own agent credentials (one file per colour deployed there)."""
    found = {}
    for host in fleet.solvers:
        listing = fleet.lab.host_exec(
            host.name,
            ["sh", "-c", "for f in /etc/solverfleet/agent*.credential; do echo $f; cat $f; done"],
            check=True,
        ).stdout.split()
        found[host.name] = dict(zip(listing[::2], listing[1::2], strict=True))
    return found
