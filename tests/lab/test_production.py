"""Production shape on the shared lab fleet (issue 13): hosts run systemd; every listener off
loopback speaks TLS; operators reach the collector only through HAProxy's admin frontend, from
their address; each agent has its own credential, which can spend only its own leases and is
revoked and rotated without touching the other agents; certificates rotate under load without a
failed request."""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
import uuid
from pathlib import Path

import pytest

from solverfleet.process import wait_until
from tests.support.ansible import controller_request, run_playbook
from tests.support.labfleet import (
    ADMIN_PORT,
    AGENT_PORT,
    COLLECTOR_PORT,
    HOST_CA,
    LAB_PRICE,
    SKIP,
    TOKEN,
    Fleet,
    admin_get,
    apply_key,
    apply_lab_key,
    finish_load,
    haproxy_servers,
    register_secret,
    start_load,
    wait_for_response,
)
from tests.support.labfleet import solve as lb_solve
from tests.support.labledger import agent_status

pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]

PRICE_MICROS = int(float(LAB_PRICE) * 1_000_000)

# Connects to every address:port given and reports, for each: whether a TLS handshake
# completes (certificate not checked: this is about the protocol), and what a plain HTTP
# request gets back. Run in the controller namespace.
_PROBE = r"""
import json, socket, ssl, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls_ok = tls.version()
    except (OSError, ssl.SSLError) as exc:
        tls_ok = "no: " + type(exc).__name__
    answer = b""
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while len(answer) < 64:
                chunk = raw.recv(64)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        pass
    out[target] = [tls_ok, answer[:16].decode("latin-1")]
print(json.dumps(out))
"""


def listeners(fleet: Fleet, host: str) -> list[str]:
    """host:port of every TCP listener of ``host`` off loopback (wildcards as its address)."""
    lines = fleet.lab.host_exec(host, ["ss", "-Hltn"], check=True).stdout.splitlines()
    found = set()
    for line in lines:
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        address = address.strip("[]")
        if address.startswith("127.") or address == "::1" or "%lo" in address:
            continue
        if address in ("0.0.0.0", "*", "::"):
            address = fleet.lab.address(host)
        found.add(f"{address}:{port}")
    return sorted(found)


def test_hosts_boot_systemd_and_run_the_fleet_as_units(fleet: Fleet) -> None:
    units = {"lb": ["haproxy"], "collector": ["solverfleet-collector"]}
    units["solvers"] = ["solverfleet-agent", "solverfleet-worker"]
    for host in fleet.lab.hosts:
        state = fleet.lab.ssh(host.name, ["systemctl", "is-system-running"]).stdout.strip()
        assert state == "running", (host.name, state)
        for unit in units[host.group]:
            active = fleet.lab.ssh(host.name, ["systemctl", "is-active", unit]).stdout.strip()
            enabled = fleet.lab.ssh(host.name, ["systemctl", "is-enabled", unit]).stdout.strip()
            assert (active, enabled) == ("active", "enabled"), (host.name, unit)
        if host.group == "solvers":
            log = fleet.lab.ssh(
                host.name, ["journalctl", "-u", "solverfleet-agent", "-n", "50", "--no-pager"]
            )
            assert "solverfleet-agent" in log.stdout or "agent" in log.stdout, log.stdout[-500:]


def test_every_listener_off_loopback_speaks_tls_and_refuses_plain_http(fleet: Fleet) -> None:
    targets = {h.name: listeners(fleet, h.name) for h in fleet.lab.hosts}
    ssh = {name: [t for t in found if t.endswith(":22")] for name, found in targets.items()}
    assert all(len(s) == 1 for s in ssh.values()), ssh  # sshd: the one exception
    checked = [t for found in targets.values() for t in found if not t.endswith(":22")]
    lb, collector = fleet.host("lb").address, fleet.host("collector").address
    # What the fleet must have (so the check cannot pass on an empty list).
    must = {f"{lb}:443", f"{lb}:{ADMIN_PORT}", f"{collector}:{COLLECTOR_PORT}"}
    must |= {f"{h.address}:{AGENT_PORT}" for h in fleet.solvers}
    assert must <= set(checked), (must, targets)
    proc = fleet.lab.controller_exec([sys.executable, "-c", _PROBE, *checked], timeout=120)
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)
    for target, (tls, answer) in answers.items():
        print(f"\n  {target}: {tls}, plain HTTP got {answer!r}", end="")
    for target, (tls, answer) in answers.items():
        assert tls.startswith("TLSv1."), (target, tls)
        assert not answer.startswith("HTTP/"), (target, answer)


def test_the_admin_frontend_serves_operators_only(fleet: Fleet) -> None:
    apply_key(fleet)  # also fetches the lb certificate into fleet.cafile
    base = f"https://{fleet.host('lb').address}:{ADMIN_PORT}"
    auth = {"Authorization": f"Bearer {fleet.admin_token}"}
    who = controller_request(
        fleet.lab, "GET", f"{base}/admin/v1/whoami", headers=auth, cafile=fleet.cafile
    )
    assert who.status == 200 and who.json()["role"] == "admin", who
    login = controller_request(fleet.lab, "GET", f"{base}/dashboard/login", cafile=fleet.cafile)
    assert login.status == 200 and "<form" in login.body, login
    # The fleet protocol is not for operators' door.
    sync = controller_request(
        fleet.lab, "POST", f"{base}/agent/v1/sync", headers=auth, body={}, cafile=fleet.cafile
    )
    assert sync.status == 404, sync
    # From a solver host (not the operators' address) the connection is refused outright.
    script = (
        "import socket, ssl, sys\n"
        "ctx = ssl.create_default_context(); ctx.check_hostname = False; "
        "ctx.verify_mode = ssl.CERT_NONE\n"
        "try:\n"
        f"    s = ctx.wrap_socket(socket.create_connection(('{fleet.host('lb').address}', "
        f"{ADMIN_PORT}), timeout=5))\n"
        "    print('handshake', s.version())\n"
        "except (OSError, ssl.SSLError) as exc:\n"
        "    print('refused', type(exc).__name__)\n"
    )
    out = fleet.lab.host_exec(fleet.solvers[0].name, ["python3", "-c", script], check=True)
    assert out.stdout.startswith("refused"), out.stdout


# --- per-host credentials ------------------------------------------------------------------------


def credential(fleet: Fleet, host: str) -> tuple[str, int]:
    """The blue agent's own credential on ``host``, and its token id."""
    read = fleet.lab.host_exec(
        host,
        ["sh", "-c", "cat /etc/solverfleet/agent.credential /etc/solverfleet/agent.credential.id"],
        check=True,
    ).stdout.split()
    return read[0], int(read[1])


def fleet_post(fleet: Fleet, token: str, path: str, body: dict):
    return controller_request(
        fleet.lab,
        "POST",
        f"{fleet.collector_url}/agent/v1/{path}",
        headers={"Authorization": f"Bearer {token}"},
        body=body,
        cafile=fleet.fleet_ca,
    )


def refused_total(fleet: Fleet) -> dict[str, float]:
    text = fleet.get(
        f"{fleet.collector_url}/metrics", headers={"Authorization": f"Bearer {fleet.admin_token}"}
    ).body
    return {
        reason: float(value)
        for reason, value in re.findall(
            r'^solverfleet_collector_usage_refused_total\{reason="(\w+)"\} (\S+)$', text, re.M
        )
    }


def forged(key_id: str, agent_id: str, cost: int, user: str) -> dict:
    return {
        "event_id": uuid.uuid4().hex,
        "ts_ms": int(time.time() * 1000),
        "request_id": uuid.uuid4().hex[:12],
        "agent_id": agent_id,
        "key_id": key_id,
        "user_id": user,
        "user_email": f"{user}@example.com",
        "account": "labco",
        "project": None,
        "environment": None,
        "type": "turnstile",
        "url": "https://example.com/forged",
        "status": "success",
        "error": None,
        "message": None,
        "source_ip": "203.0.113.9",
        "duration_ms": 10,
        "cost_micros": cost,
    }


def test_a_stolen_agent_credential_spends_only_its_own_leases(fleet: Fleet) -> None:
    apply_key(fleet)
    victim = fleet.solvers[0]
    token, _ = credential(fleet, victim.name)
    # A key nobody has leased, and a key this agent has leased (one solve sent to it directly).
    fresh = register_secret("forgery-key", "sk-forge-" + secrets.token_urlsafe(24))
    apply_lab_key(
        fleet, account="forgeco", user="frank", key_id="forge-key", secret=fresh, balance="1.00"
    )
    direct = wait_for_response(
        lambda: lb_solve(fleet, base=fleet.agent_url(victim.address), cafile=fleet.fleet_ca),
        lambda r: r.status == 200,
        timeout=30,
        what="a solve on the victim agent",
    )
    assert direct.status == 200
    before_summary, before_refused = admin_get(fleet, "summary").json(), refused_total(fleet)

    other = fleet_post(
        fleet,
        token,
        "usage",
        {
            "agent_id": fleet.solvers[1].name,
            "events": [forged("alice-lab", "x", PRICE_MICROS, "alice")],
        },
    )
    assert other.status == 403 and other.json()["error"] == "agent_mismatch", other
    sync_as_other = fleet_post(
        fleet, token, "sync", {"agent_id": fleet.solvers[1].name, "instance": "x", "leases": []}
    )
    assert sync_as_other.status == 403, sync_as_other

    events = [
        forged("forge-key", victim.name, PRICE_MICROS, "frank"),  # never leased to it
        forged("alice-lab", victim.name, PRICE_MICROS + 1, "alice"),  # not the price
    ]
    answer = fleet_post(fleet, token, "usage", {"agent_id": victim.name, "events": events})
    assert answer.status == 200, answer
    reasons = {r["event_id"]: r["reason"] for r in answer.json()["refused"]}
    assert reasons == {
        events[0]["event_id"]: "not_leased",
        events[1]["event_id"]: "wrong_cost",
    }, answer.json()
    assert answer.json()["accepted"] == 0

    # Nothing forged was stored or charged.
    after_summary = admin_get(fleet, "summary").json()
    assert after_summary["keys"]["forge-key"] == before_summary["keys"]["forge-key"]
    after_refused = refused_total(fleet)
    assert after_refused.get("not_leased", 0) == before_refused.get("not_leased", 0) + 1
    assert after_refused.get("wrong_cost", 0) == before_refused.get("wrong_cost", 0) + 1


def agent_pid(fleet: Fleet, host: str) -> str:
    return fleet.lab.ssh(
        host, ["systemctl", "show", "--property", "MainPID", "--value", "solverfleet-agent"]
    ).stdout.strip()


def sync_age(fleet: Fleet, host: str) -> float:
    age = agent_status(fleet, host)[str(AGENT_PORT)]["collector"]["last_sync_age_s"]
    return float("inf") if age is None else float(age)


@pytest.mark.timeout(600)
def test_revoking_one_agents_credential_cuts_off_that_agent_only_and_rotation_restores_it(
    fleet: Fleet,
) -> None:
    victim, others = fleet.solvers[0].name, [h.name for h in fleet.solvers[1:]]
    old_token, token_id = credential(fleet, victim)
    register_secret(f"{victim} revoked credential", old_token, TOKEN)  # for the secret scan
    pid = agent_pid(fleet, victim)
    address = fleet.solvers[0].address
    apply_key(fleet)
    revoked = controller_request(
        fleet.lab,
        "POST",
        f"{fleet.collector_url}/admin/v1/tokens/{token_id}/revoke",
        headers={"Authorization": f"Bearer {fleet.admin_token}"},
        cafile=fleet.fleet_ca,
    )
    try:
        assert revoked.status == 200, revoked
        # Refused is not an outage: the agent leaves the balancer at once (503 on /readyz).
        ready = wait_for_response(
            lambda: fleet.get(f"{fleet.agent_url(address)}/readyz"),
            lambda r: r.status == 503,
            timeout=30,
            what=f"{victim} out of rotation",
        )
        assert ready.json()["error"] == "credential_refused", ready
        wait_until(
            lambda: victim_down(fleet, victim),
            timeout=30,
            interval=0.25,
            what=f"HAProxy drops {victim}",
        )
        for name in others:
            assert sync_age(fleet, name) < 1.5, (name, agent_status(fleet, name))
        old = fleet_post(fleet, old_token, "sync", {"agent_id": victim, "leases": []})
        assert old.status == 401, old
        served = [lb_solve(fleet).status for _ in range(6)]
        assert served == [200] * 6, served  # the fleet keeps serving, on the others
    finally:
        run = run_playbook(fleet.lab, "rotate_credentials.yml", extra_vars=fleet.extra)
    run.assert_ok()
    new_token, new_id = credential(fleet, victim)
    assert (new_token, new_id) != (old_token, token_id)
    wait_until(
        lambda: sync_age(fleet, victim) < 1.5,
        timeout=30,
        interval=0.25,
        what=f"{victim} syncing again",
    )
    wait_until(
        lambda: not victim_down(fleet, victim), timeout=30, interval=0.25, what=f"{victim} UP again"
    )
    assert agent_pid(fleet, victim) == pid, "the agent was restarted to take its new credential"
    # Every other agent's credential was replaced too, none of them cut off for it.
    for name in others:
        assert sync_age(fleet, name) < 1.5, (name, agent_status(fleet, name))


def victim_down(fleet: Fleet, host: str) -> bool:
    """HAProxy has ``host`` out of the live backend (op state 0: DOWN)."""
    rows = [line.split() for line in haproxy_servers(fleet).splitlines()]
    return any(len(f) > 5 and f[3] == host and f[5] == "0" for f in rows)


@pytest.mark.timeout(600)
def test_certificates_rotate_under_load_without_a_failed_request(
    fleet: Fleet, tmp_path: Path
) -> None:
    apply_key(fleet)
    serial = "openssl x509 -noout -serial -in /etc/solverfleet/tls/host.pem"
    before = {h.name: fleet.lab.ssh(h.name, [serial], check=True).stdout for h in fleet.lab.hosts}
    stop = tmp_path / "stop"
    load = start_load(fleet, stop, seconds=300, threads=4, latency_ms=500)
    try:
        run = run_playbook(fleet.lab, "rotate_certs.yml", extra_vars=fleet.extra)
    finally:
        result = finish_load(load, stop)
    run.assert_ok()
    after = {h.name: fleet.lab.ssh(h.name, [serial], check=True).stdout for h in fleet.lab.hosts}
    assert all(after[n] != before[n] for n in before), (before, after)
    counts = result["counts"]
    print(f"\nload during rotate_certs.yml ({run.seconds:.0f} s): {counts}")
    assert set(counts) == {"200"} and counts["200"] > 0, result
    # The agents and the collector now present the new certificates, verified by the fleet CA.
    probe = (
        "import socket, ssl, sys; "
        f"ctx = ssl.create_default_context(cafile='{HOST_CA}'); "
        "s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))), "
        "server_hostname='127.0.0.1'); "
        "print(format(int(s.getpeercert()['serialNumber'], 16), 'X'))"
    )
    for host, port in [(h.name, AGENT_PORT) for h in fleet.solvers] + [
        (fleet.host("collector").name, COLLECTOR_PORT)
    ]:
        served = fleet.lab.host_exec(host, ["python3", "-c", probe, str(port)], check=True)
        assert served.stdout.strip().lstrip("0") == after[host].split("=")[1].strip().lstrip("0")
