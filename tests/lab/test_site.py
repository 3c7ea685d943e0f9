"""playbooks/site.yml on bare lab hosts: a serving fleet, TLS through HAProxy, idempotent, quiet
about secrets; then playbooks/rolling_update.yml under load without a failed request.

One module-scoped lab (lb1, collector1, solver1..3) of its own, so other lab tests never see the
fleet this deploys. The wheelhouse is built fresh from this checkout (what `make wheelhouse`
builds) and installed offline on the hosts by the roles. The test balancer runs with `retries 0`
and no redispatch, so a request cut by a missing drain shows up as a failure instead of being
retried on another agent.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from solverfleet.lab import Lab
from tests.support.ansible import (
    PlaybookRun,
    build_wheelhouse,
    controller_request,
    run_playbook,
)
from tests.support.lab import lab_name, reap_stale_test_labs, running_lab, skip_reason

# The lab hosts share /usr with the machine: what the roles run must be installed here first.
_PACKAGES = {"/usr/bin/supervisord": "supervisor", "/usr/sbin/haproxy": "haproxy"}
_MISSING = sorted(pkg for path, pkg in _PACKAGES.items() if not Path(path).exists())
_SKIP = skip_reason() or (
    f"lab hosts need {' '.join(_MISSING)}: apt-get install -y {' '.join(_MISSING)}"
    if _MISSING
    else None
)
pytestmark = [pytest.mark.lab, pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))]

AGENT_PORT = 8600
COLLECTOR_PORT = 8400
# The test balancer: no retries, no redispatch (a cut request must show as a failure).
TEST_LB = {"solverfleet_lb_retries": 0, "solverfleet_lb_redispatch": False}
# Never run the package manager inside a lab host: /usr is the machine's.
LAB_VARS = {"solverfleet_manage_packages": False, **TEST_LB}


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
    def solvers(self):
        return [h for h in self.lab.hosts if h.group == "solvers"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A lab deployed by one site.yml run from bare hosts."""
    wheelhouse = build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))
    reap_stale_test_labs()
    state_dir = None
    try:
        with running_lab(lab_name("site")) as lab:
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


def apply_key(fleet: Fleet) -> None:
    """A key created through the collector's admin API, and the lb certificate to verify TLS."""
    if fleet.api_key:
        return
    collector, lb = fleet.host("collector"), fleet.host("lb")
    api_key = "sk-lab-" + secrets.token_urlsafe(24)
    applied = controller_request(
        fleet.lab,
        "POST",
        f"http://{collector.address}:{COLLECTOR_PORT}/admin/v1/apply",
        headers={"Authorization": f"Bearer {fleet.admin_token}"},
        body={
            "account": "labco",
            "prices": {"turnstile": "0.002"},
            "users": [
                {
                    "id": "alice",
                    "email": "alice@example.com",
                    "keys": [{"id": "alice-lab", "secret": api_key, "balance": "100.00"}],
                }
            ],
        },
    )
    assert applied.status == 200, applied
    cert = fleet.lab.ssh(lb.name, ["cat", "/etc/haproxy/certs/solverfleet.pem"], check=True)
    cafile = Path(fleet.lab.state_dir) / "lb-ca.pem"
    cafile.write_text(cert.stdout)
    fleet.api_key, fleet.cafile = api_key, str(cafile)


def solve(fleet: Fleet):
    return controller_request(
        fleet.lab,
        "POST",
        f"https://{fleet.host('lb').address}/solve",
        headers={"Authorization": f"Bearer {fleet.api_key}"},
        body={"type": "turnstile", "url": "https://example.com/login"},
        cafile=fleet.cafile,
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


@pytest.mark.timeout(900)
def test_site_deploys_a_serving_fleet_idempotently(fleet: Fleet) -> None:
    lab, first = fleet.lab, fleet.first
    assert set(first.recap) == {h.name for h in lab.hosts}, first.recap
    assert all(r.changed > 0 for r in first.recap.values()), first.recap

    # Every agent is ready, asked from the controller namespace on the fleet network.
    for host in fleet.solvers:
        resp = controller_request(lab, "GET", f"http://{host.address}:{AGENT_PORT}/readyz")
        assert resp.status == 200, (host.name, resp)
        assert resp.json()["status"] == "ready"
    assert len(fleet.fleet_token) >= 32 and len(fleet.admin_token) >= 32
    assert fleet.fleet_token != fleet.admin_token

    # A key applied through the collector's admin API serves /solve through HAProxy over TLS,
    # verified against the lab's self-signed certificate (its SAN holds the lb address). The key
    # reaches every agent on its next sync (about a second).
    apply_key(fleet)
    solved = wait_for_response(
        lambda: solve(fleet), lambda r: r.status == 200, timeout=15, what="/solve via lb"
    )
    assert solved.json()["status"] == "success", solved
    assert solved.json()["cost"] == "0.002"

    # HAProxy's runtime API answers at admin level and lists every agent.
    servers = haproxy_servers(fleet)
    for host in fleet.solvers:
        assert host.name in servers, servers

    # Second run: nothing to do.
    second = run_playbook(lab, "site.yml", extra_vars=fleet.extra)
    second.assert_ok()
    assert second.changed == 0, second.changed_tasks()

    # No secret in what Ansible printed, in either run.
    for run in (first, second):
        for secret in (fleet.fleet_token, fleet.admin_token, fleet.api_key):
            assert secret not in run.output

    print(
        f"\nsite.yml first run {first.seconds:.1f}s, second run {second.seconds:.1f}s "
        f"(changed={second.changed})"
    )


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


@pytest.mark.timeout(900)
def test_rolling_update_under_load_fails_no_request(fleet: Fleet, tmp_path: Path) -> None:
    lab = fleet.lab
    apply_key(fleet)
    wait_for_response(lambda: solve(fleet), lambda r: r.status == 200, timeout=15, what="/solve")
    release = "0.0.0-rolled"  # any new release name; same wheels, new release directory
    stop = tmp_path / "stop-load"
    load = subprocess.Popen(
        lab.controller_argv(
            [sys.executable, "-c", _LOAD, f"https://{fleet.host('lb').address}/solve",
             fleet.api_key, fleet.cafile, str(stop), "600", "6", "1500"]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        time.sleep(3)  # solves in flight everywhere before the first drain
        run = run_playbook(
            lab, "rolling_update.yml", extra_vars={**fleet.extra, "solverfleet_release": release}
        )
    finally:
        stop.touch()
        out, err = load.communicate(timeout=120)
    run.assert_ok()
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"err": err}
    counts = result.get("counts", {})
    assert counts.get("200", 0) > 50, result
    assert set(counts) == {"200"}, result

    for host in fleet.solvers:
        current = lab.ssh(host.name, ["readlink", "/opt/solverfleet/current"], check=True)
        assert current.stdout.strip().endswith("/" + release), (host.name, current.stdout)
    servers = haproxy_servers(fleet)
    for line in servers.splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[1] == "solverfleet_agents":
            # srv_op_state 2 = running, srv_admin_state 0 = not in maintenance or drain
            assert (fields[5], fields[6]) == ("2", "0"), line
    for secret in (fleet.fleet_token, fleet.admin_token, fleet.api_key):
        assert secret not in run.output
    print(f"\nrolling_update.yml {run.seconds:.1f}s under load: {counts}")


# The 2captcha-style round trip from the controller namespace, through the balancer over TLS.
# argv: base url, key, cafile, number of tasks, and a command: "submit" prints the task ids;
# "fetch ID..." polls res.php for each (the first by a POSTed form, the rest by GET) until it is
# not CAPCHA_NOT_READY or the deadline passes, then asks ids= for them all and getbalance.
_COMPAT = r"""
import json, ssl, sys, time, urllib.parse, urllib.request
base, key, cafile, command, *ids = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
def call(path, params, post=False):
    data = urllib.parse.urlencode(params)
    url = base + path + ("" if post else "?" + data)
    req = urllib.request.Request(url, data=data.encode() if post else None,
                                 method="POST" if post else "GET")
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        return resp.read().decode()
out = {}
if command == "submit":
    out["submitted"] = [
        call("/in.php", {"key": key, "method": "turnstile", "sitekey": "0x4AAAAAAAlab",
                         "pageurl": "https://example.com/login"}, post=True)
        for _ in range(int(ids[0]))]
else:
    deadline = time.monotonic() + 20
    answers, polls = {}, 0
    for n, tid in enumerate(ids):
        while True:
            text = call("/res.php", {"key": key, "action": "get", "id": tid}, post=n == 0)
            polls += 1
            if text != "CAPCHA_NOT_READY" or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        answers[tid] = text
    out = {"answers": answers, "polls": polls,
           "ids": call("/res.php", {"key": key, "action": "get", "ids": ",".join(ids)}),
           "balance": call("/res.php", {"key": key, "action": "getbalance"})}
print(json.dumps(out))
"""


def compat(fleet: Fleet, *args: str) -> dict:
    base = f"https://{fleet.host('lb').address}"
    proc = fleet.lab.controller_exec(
        [sys.executable, "-c", _COMPAT, base, fleet.api_key, fleet.cafile, *args], timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.timeout(300)
def test_2captcha_round_trip_routes_res_php_to_the_owning_agent(fleet: Fleet) -> None:
    """in.php balanced across the agents, res.php routed by task id to the agent that owns it
    (even while HAProxy drains that server), one charge per delivered answer."""
    lab = fleet.lab
    apply_key(fleet)
    wait_for_response(lambda: solve(fleet), lambda r: r.status == 200, timeout=15, what="/solve")
    started = time.monotonic()

    submitted = compat(fleet, "submit", "6")["submitted"]
    assert all(t.startswith("OK|") for t in submitted), submitted
    task_ids = [t.removeprefix("OK|") for t in submitted]
    # node id = the digits before the 12 random ones; in.php was balanced over the agents.
    nodes = {tid: tid[:-12] for tid in task_ids}
    assert all(tid.isdigit() and len(tid) > 12 for tid in task_ids), task_ids
    assert len(set(nodes.values())) > 1, task_ids

    # The owner of the first task leaves rotation (DRAIN, as rolling_update.yml does): its
    # answers are still fetched from it; use-server goes past the drain.
    servers = {h.name for h in fleet.solvers}
    cfg = lab.ssh(fleet.host("lb").name, ["cat", "/etc/haproxy/haproxy.cfg"], check=True).stdout
    rules = dict(
        re.findall(r"use-server (\S+) if compat_res \{ urlp\(id\) -m reg \^([0-9]+)\[", cfg)
    )
    assert set(rules) == servers and len(set(rules.values())) == len(servers), cfg
    drained = {node: host for host, node in rules.items()}[nodes[task_ids[0]]]
    haproxy_command(fleet, f"set server solverfleet_agents/{drained} state drain")
    try:
        state = [ln.split() for ln in haproxy_servers(fleet).splitlines()]
        # srv_admin_state: bit 0x08 = drained by the runtime API
        assert any(f[3] == drained and int(f[6]) & 0x08 for f in state if len(f) > 6), state
        fetched = compat(fleet, "fetch", *task_ids)
        answers = fetched["answers"]
    finally:
        haproxy_command(fleet, f"set server solverfleet_agents/{drained} state ready")
    assert all(a.startswith("OK|") for a in answers.values()), answers
    # ids= is routed by its first id: the slots of that agent's tasks are answers (fetched
    # again, uncharged), the others ERROR_WRONG_CAPTCHA_ID.
    slots = dict(zip(task_ids, fetched["ids"].split("|"), strict=True))
    for tid, slot in slots.items():
        if nodes[tid] == nodes[task_ids[0]]:
            assert slot == answers[tid].removeprefix("OK|"), (tid, slots)
        else:
            assert slot == "ERROR_WRONG_CAPTCHA_ID", (tid, slots)
    assert re.fullmatch(r"[0-9]+(\.[0-9]+)?", fetched["balance"]), fetched["balance"]

    # One success event per delivered answer at the collector (the agents ship within a few
    # seconds), each charged once, by the agent whose node id leads the task id.
    collector = fleet.host("collector")

    def billed():
        return controller_request(
            lab,
            "GET",
            f"http://{collector.address}:{COLLECTOR_PORT}/admin/v1/usage?key_id=alice-lab&limit=1000",
            headers={"Authorization": f"Bearer {fleet.admin_token}"},
        )

    def ours(resp):
        return [e for e in resp.json()["events"] if e["request_id"] in nodes]

    usage = wait_for_response(
        billed,
        lambda r: r.status == 200 and len(ours(r)) >= len(task_ids),
        timeout=30,
        what="usage of the in.php tasks",
    )
    events = ours(usage)
    assert sorted(e["request_id"] for e in events) == sorted(task_ids), events
    assert {(e["status"], e["cost"]) for e in events} == {("success", "0.002")}, events
    owner = {}
    for e in events:
        owner.setdefault(nodes[e["request_id"]], set()).add(e["agent_id"])
    assert all(len(agents) == 1 for agents in owner.values()), owner
    assert len({a for agents in owner.values() for a in agents}) > 1, owner
    assert {a for agents in owner.values() for a in agents} <= servers, owner
    print(
        f"\n2captcha round trip via lb: {len(task_ids)} tasks on {len(owner)} agents, "
        f"{fetched['polls']} res.php polls, {time.monotonic() - started:.1f}s"
    )
