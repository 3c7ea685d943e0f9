"""playbooks/site.yml on bare lab hosts: a serving fleet, TLS through HAProxy, idempotent, quiet
about secrets; then playbooks/rolling_update.yml under load without a failed request, and the
2captcha-style round trip across agents. The fleet is tests.support.labfleet's shared one.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
import urllib.parse
from decimal import Decimal
from pathlib import Path

import pytest

from solverfleet_dev.lab.config import GATEWAY
from tests.support.ansible import run_playbook
from tests.support.labfleet import (
    AGENT_PORT,
    SKIP,
    Fleet,
    apply_key,
    apply_lab_key,
    finish_load,
    haproxy_command,
    haproxy_servers,
    register_secret,
    settled_successes,
    solve,
    start_load,
    wait_for_response,
    wait_in_flight,
    wait_usage_equals,
)

pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]


@pytest.mark.timeout(900)
def test_site_deploys_a_serving_fleet_idempotently(fleet: Fleet) -> None:
    lab, first = fleet.lab, fleet.first
    assert set(first.recap) == {h.name for h in lab.hosts}, first.recap
    assert all(r.changed > 0 for r in first.recap.values()), first.recap

    # Every agent is ready, asked from the controller namespace on the fleet network.
    for host in fleet.solvers:
        resp = fleet.get(f"{fleet.agent_url(host.address, AGENT_PORT)}/readyz")
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


@pytest.mark.timeout(900)
def test_rolling_update_under_load_fails_no_request(fleet: Fleet, tmp_path: Path) -> None:
    lab = fleet.lab
    apply_key(fleet)
    wait_for_response(lambda: solve(fleet), lambda r: r.status == 200, timeout=15, what="/solve")
    release = "0.0.0-rolled"  # any new release name; same wheels, new release directory
    before = settled_successes(fleet)
    stop = tmp_path / "stop-load"
    load = start_load(fleet, stop, latency_ms=2000)
    try:
        wait_in_flight(fleet)  # solves in flight everywhere before the first drain
        run = run_playbook(
            lab, "rolling_update.yml", extra_vars={**fleet.extra, "solverfleet_release": release}
        )
    finally:
        result = finish_load(load, stop)
    run.assert_ok()
    counts = result.get("counts", {})
    assert counts.get("200", 0) > 50, result
    assert set(counts) == {"200"}, result
    # Every success the clients saw is one usage record at the collector, no more.
    assert wait_usage_equals(fleet, before + counts["200"]) == before + counts["200"]

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
    (even while HAProxy drains that server), ids= mixing several agents' tasks, one charge per
    delivered answer."""
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
    # The blue backend's rules: the green one names the same hosts with node ids + 500.
    blue = cfg.split("\nbackend solverfleet_agents\n", 1)[1].split("\nbackend ", 1)[0]
    rules = dict(
        re.findall(r"use-server (\S+) if compat_res \{ urlp\(id\) -m reg \^([0-9]+)\[", blue)
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
    # ids= is routed by its first id; that agent fetches the other agents' tasks from their
    # owners (any balancer, docs/PROTOCOLS.md): every slot is its answer, fetched again free.
    slots = dict(zip(task_ids, fetched["ids"].split("|"), strict=True))
    assert slots == {tid: answer.removeprefix("OK|") for tid, answer in answers.items()}, slots
    assert re.fullmatch(r"[0-9]+(\.[0-9]+)?", fetched["balance"]), fetched["balance"]

    # One success event per delivered answer at the collector (the agents ship within a few
    # seconds), each charged once, by the agent whose node id leads the task id.
    def billed():
        return fleet.get(
            f"{fleet.collector_url}/admin/v1/usage?key_id=alice-lab&limit=1000",
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


# The public client libraries, unmodified, from the controller namespace through the lab's
# balancer over TLS (its certificate through requests' REQUESTS_CA_BUNDLE): 2captcha-python
# (in.php/res.php) and python-anticaptcha (createTask/getTaskResult). argv: host, key, cafile.
_CLIENTS = r"""
import base64, json, os, sys
host, key, cafile = sys.argv[1:]
os.environ["REQUESTS_CA_BUNDLE"] = cafile
from python_anticaptcha import AnticaptchaClient, ImageToTextTask, NoCaptchaTaskProxylessTask
from twocaptcha import TwoCaptcha
page, sitekey = "https://shop.example.com/login", "6Le-wvkSAAAAAPBMRTvw0Q4Muexq9bi0DJwx"
image = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2
two = TwoCaptcha(key, server=host, pollingInterval=1)
out = {"2captcha": [two.recaptcha(sitekey=sitekey, url=page)["code"],
                    two.turnstile(sitekey="0x4AAAAAAAlab", url=page)["code"],
                    two.normal(base64.b64encode(image).decode())["code"]]}
anti = AnticaptchaClient(key, host=host, use_ssl=True)
jobs = [anti.createTask(NoCaptchaTaskProxylessTask(page, sitekey)),
        anti.createTask(ImageToTextTask(image))]
for job in jobs:
    job.join(maximum_time=60)
out["anticaptcha"] = [jobs[0].get_solution_response(), jobs[1].get_captcha_text()]
out["anticaptcha_cost"] = [job._last_result["cost"] for job in jobs]
print(json.dumps(out))
"""
CLIENT_PRICES = {"recaptcha-v2": "0.003", "turnstile": "0.002", "image-to-text": "0.0007"}


@pytest.mark.timeout(300)
def test_public_client_libraries_through_the_lab_balancer(fleet: Fleet) -> None:
    """2captcha-python and python-anticaptcha, unmodified, through HAProxy over TLS: every
    answer arrives and the key's balance moves by exactly the prices."""
    apply_key(fleet)  # the balancer's certificate
    secret = register_secret("clients-lab", "sk-lab-" + secrets.token_urlsafe(24))
    apply_lab_key(fleet, account="clientco", user="carol", key_id="carol-lab", secret=secret,
                  balance="1.00", prices=CLIENT_PRICES)  # fmt: skip
    wait_for_response(lambda: solve(fleet, secret), lambda r: r.status == 200, timeout=15,
                      what="the new key served")  # fmt: skip
    host = fleet.host("lb").address
    proc = fleet.lab.controller_exec(
        [sys.executable, "-c", _CLIENTS, host, secret, fleet.cafile], timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert all(a.startswith("demo-") for a in out["2captcha"] + out["anticaptcha"]), out
    assert out["anticaptcha_cost"] == [
        CLIENT_PRICES["recaptcha-v2"],
        CLIENT_PRICES["image-to-text"],
    ]
    p = {k: Decimal(v) for k, v in CLIENT_PRICES.items()}
    spent = p["turnstile"] * 2 + p["recaptcha-v2"] * 2 + p["image-to-text"] * 2  # + the probe
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}
    wait_for_response(
        lambda: fleet.get(f"{fleet.collector_url}/admin/v1/keys/carol-lab", headers=headers),
        lambda r: r.status == 200 and Decimal(r.json()["balance"]) == Decimal("1.00") - spent,
        timeout=30,
        what=f"carol-lab's balance at 1.00 - {spent}",
    )


# A pingback through the lab: the receiver listens in the controller namespace (the gateway
# address, allowed by the agents' pingback_allow_cidrs); the URL is registered through the
# balancer, in.php names it, the POST brings the answer, res.php through the balancer returns
# it again. argv: base url, key, cafile, gateway address.
_PINGBACK = r"""
import json, ssl, sys, threading, time, urllib.parse, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
base, key, cafile, gateway = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
posts = []
class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        posts.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args): pass
server = ThreadingHTTPServer((gateway, 0), Hook)
threading.Thread(target=server.serve_forever, daemon=True).start()
hook = f"http://{gateway}:{server.server_address[1]}/hook"
def call(path, params, post=False):
    data = urllib.parse.urlencode({"key": key, **params})
    req = urllib.request.Request(base + path + ("" if post else "?" + data),
                                 data=data.encode() if post else None)
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        return resp.read().decode()
out = {"added": call("/res.php", {"action": "add_pingback", "addr": hook})}
deadline = time.monotonic() + 20
while not all(call("/res.php", {"action": "get_pingback"}).endswith(hook) for _ in range(3)):
    assert time.monotonic() < deadline, "the pingback URL did not reach every agent"
    time.sleep(0.2)
out["submitted"] = call("/in.php", {"method": "turnstile", "sitekey": "0x4AAAAAAAlab",
                                    "pageurl": "https://example.com/login", "pingback": hook},
                        post=True)
while not posts and time.monotonic() < deadline + 20:
    time.sleep(0.1)
out["posts"] = posts
task = out["submitted"].removeprefix("OK|")
out["fetched"] = [call("/res.php", {"action": "get", "id": task}) for _ in range(3)]
out["deleted"] = call("/res.php", {"action": "del_pingback", "addr": "all"})
print(json.dumps(out))
"""


@pytest.mark.timeout(300)
def test_a_pingback_through_the_lab_balancer(fleet: Fleet) -> None:
    """The answer is POSTed to a registered URL in 2captcha's form, res.php through the
    balancer returns the same answer again, and the task is charged once."""
    apply_key(fleet)
    base = f"https://{fleet.host('lb').address}"
    proc = fleet.lab.controller_exec(
        [sys.executable, "-c", _PINGBACK, base, fleet.api_key, fleet.cafile, str(GATEWAY)],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["added"] == "OK" and out["deleted"] == "OK", out
    task = out["submitted"].removeprefix("OK|")
    [form] = [dict(urllib.parse.parse_qsl(body)) for body in out["posts"]]
    assert form["id"] == task and form["code"], out
    assert out["fetched"] == [f"OK|{form['code']}"] * 3, out
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}

    def charged(resp) -> list:
        return [e for e in resp.json()["events"] if e["request_id"] == task]

    usage = wait_for_response(
        lambda: fleet.get(
            f"{fleet.collector_url}/admin/v1/usage?key_id=alice-lab&limit=1000", headers=headers
        ),
        lambda r: r.status == 200 and charged(r),
        timeout=30,
        what="the pingback's task in the usage log",
    )
    assert [(e["status"], e["cost"]) for e in charged(usage)] == [("success", "0.002")]
