"""Chaos in the lab: the network between one agent's host and the collector is cut for 30 s
while clients keep solving through HAProxy.

The cut is an nftables table inside the solver host's own network namespace that drops every
packet to and from collector1's address (both directions, silently, like a dead link); HAProxy
on lb1 still reaches the agent, so clients keep being sent to it. Nothing outside the lab's
namespaces is touched, and the table is deleted in a ``finally``.

During the cut the isolated agent keeps serving from the credit it leased (200) and refuses
what its lease no longer covers (402 ``insufficient_balance``); the other agents serve as
usual. Once the link is back the agent ships the usage it spooled, and the ledger holds:
client successes == usage records at the collector == balance change / price, no duplicate
event id, one record per request.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from solverfleet.money import to_micros
from tests.support.ansible import controller_request
from tests.support.labfleet import (
    AGENT_PORT,
    HOST_CA,
    LAB_PRICE,
    SKIP,
    Fleet,
    apply_key,
    apply_lab_key,
    haproxy_servers,
    register_secret,
    wait_for_response,
)
from tests.support.labledger import (
    TrackedCall,
    agent_status,
    assert_lab_ledger,
    finish_tracked_load,
    settle_agents,
    start_tracked_load,
    usage_log,
)

NFT = shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin:/bin")
pytestmark = [
    pytest.mark.lab,
    pytest.mark.chaos,
    pytest.mark.skipif(SKIP is not None, reason=str(SKIP)),
    pytest.mark.skipif(
        NFT is None, reason="the network cut needs nft: apt-get install -y nftables"
    ),
]

CUT_SECONDS = 30
OPENING = "10.00"  # 5,000 calls: more than the load can make
TABLE = "solverfleet_netcut"


def cut_rules(collector_address: str) -> str:
    """An nftables table dropping every packet between this namespace and the collector."""
    return (
        f"table inet {TABLE} {{\n"
        "  chain output { type filter hook output priority 0; policy accept;\n"
        f"    ip daddr {collector_address} counter drop\n  }}\n"
        "  chain input { type filter hook input priority 0; policy accept;\n"
        f"    ip saddr {collector_address} counter drop\n  }}\n"
        "}\n"
    )


def cut(fleet: Fleet, host: str, collector_address: str) -> None:
    # Inside the host's namespaces (nsenter on its init): check that this network namespace is
    # the lab host's own (it holds the host's fleet address) before changing anything in it.
    addrs = fleet.lab.host_exec(host, ["ip", "-4", "-o", "addr", "show"], check=True).stdout
    assert f" {fleet.lab.address(host)}/" in addrs, f"not {host}'s namespace:\n{addrs}"
    fleet.lab.host_exec(host, [NFT, "-f", "-"], input=cut_rules(collector_address), check=True)


def restore(fleet: Fleet, host: str) -> str:
    """Delete the cut (idempotent); the table as it was, with its drop counters."""
    listed = fleet.lab.host_exec(host, [NFT, "list", "table", "inet", TABLE])
    # `add` then `delete` in one transaction: no error when the table is already gone.
    fleet.lab.host_exec(
        host, [NFT, "-f", "-"], input=f"add table inet {TABLE}\ndelete table inet {TABLE}\n",
        check=True,
    )  # fmt: skip
    return listed.stdout


def dropped_packets(listing: str) -> int:
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))


_HTTP = re.compile(r"^solverfleet_agent_http_requests_total\{([^}]*)\}\s+(\S+)$", re.M)
_METRICS = (
    "import ssl, sys, urllib.request; "
    f"ctx = ssl.create_default_context(cafile='{HOST_CA}'); "
    "sys.stdout.write(urllib.request.urlopen('https://127.0.0.1:%s/metrics' % sys.argv[1], "
    "timeout=5, context=ctx).read().decode())"
)


def solve_codes(fleet: Fleet, host: str) -> Counter:
    """The agent's /metrics (loopback only) on ``host``: /solve answers by status code."""
    text = fleet.lab.host_exec(
        host, ["python3", "-c", _METRICS, str(AGENT_PORT)], check=True, timeout=30
    ).stdout
    codes: Counter = Counter()
    for labels, value in _HTTP.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("endpoint", "").endswith("solve"):
            codes[fields["code"]] += int(float(value))
    return codes


def make_key(fleet: Fleet, key_id: str) -> str:
    """A key of its own (own account), so its ledger holds this module's requests only."""
    secret = register_secret(key_id, "sk-netcut-" + secrets.token_urlsafe(24))
    apply_lab_key(
        fleet, account="netcut", user="nina", key_id=key_id, secret=secret, balance=OPENING
    )
    return secret


def probe(fleet: Fleet, key: str, calls: list[TrackedCall]):
    """One /solve with ``key`` through the balancer, kept in ``calls`` for the ledger."""
    rid, started = f"ncprobe-{len(calls) + 1}", time.time()
    resp = controller_request(
        fleet.lab,
        "POST",
        f"https://{fleet.host('lb').address}/solve",
        headers={"Authorization": f"Bearer {key}", "X-Request-Id": rid},
        body={"type": "turnstile", "url": f"https://example.com/{rid}"},
        cafile=fleet.cafile,
    )
    calls.append(TrackedCall(rid, resp.status, started, time.time()))
    return resp


def phase(call: TrackedCall, cut_from: float, cut_to: float) -> str:
    if call.ended < cut_from:
        return "before"
    if call.started >= cut_from and call.ended <= cut_to:
        return "during"
    if call.started > cut_to:
        return "after"
    return "across"  # began before an edge of the cut and ended after it


@pytest.mark.timeout(600)
def test_agent_cut_off_from_the_collector_for_30s_under_load(fleet: Fleet, tmp_path: Path) -> None:
    victim = fleet.solvers[0].name
    price = to_micros(LAB_PRICE)
    others = [h.name for h in fleet.solvers[1:]]
    collector = fleet.host("collector").address
    apply_key(fleet)  # the lb certificate, to verify TLS
    key_id = f"netcut-{secrets.token_hex(3)}"
    key = make_key(fleet, key_id)
    probes: list[TrackedCall] = []  # every request on the key is in the ledger
    wait_for_response(
        lambda: probe(fleet, key, probes), lambda r: r.status == 200, timeout=15, what=key_id
    )
    settle_agents(fleet)
    codes_before = {h.name: solve_codes(fleet, h.name) for h in fleet.solvers}

    stop = tmp_path / "stop-load"
    load = start_tracked_load(
        fleet, key, stop, label="nc", seconds=CUT_SECONDS + 150, threads=6, latency_ms=300
    )
    restore(fleet, victim)  # nothing left over from an earlier, interrupted run
    samples: list[tuple[float, str, dict]] = []
    listing = ""
    try:
        # Warm up: every agent serves the key and the victim holds credit for a few calls.
        def warmed() -> bool:
            served = Counter(e["agent_id"] for e in usage_log(fleet, key_id))
            held = agent_status(fleet, victim)[str(AGENT_PORT)]["leases"]["available_micros"]
            return all(served[h.name] >= 5 for h in fleet.solvers) and held >= 5 * price

        deadline = time.monotonic() + 60
        while not warmed():
            assert load.poll() is None, "the load ended during the warm-up"
            assert time.monotonic() < deadline, "the agents did not all serve the key in 60 s"
            time.sleep(0.5)

        cut_from = time.time()
        cut(fleet, victim, collector)
        try:
            # What the victim can still spend: no refill reaches it from here on.
            at_cut = agent_status(fleet, victim)[str(AGENT_PORT)]["leases"]
            at_cut_time = time.time()
            while time.time() < cut_from + CUT_SECONDS:
                for name in [victim, *others]:
                    status = agent_status(fleet, name)[str(AGENT_PORT)]
                    samples.append((time.time() - cut_from, name, status))
                time.sleep(max(0.0, min(2.0, cut_from + CUT_SECONDS - time.time())))
            lb_view = haproxy_servers(fleet)  # still at the end of the cut
        finally:
            listing = restore(fleet, victim)
            cut_to = time.time()

        # The link is back: the victim syncs again, then keeps serving for a few seconds.
        def back_online() -> bool:
            col = agent_status(fleet, victim)[str(AGENT_PORT)]["collector"]
            return col["online"] and (col["last_sync_age_s"] or 99) < 2

        deadline = time.monotonic() + 30
        while not back_online():
            assert time.monotonic() < deadline, f"{victim} not syncing 30 s after the cut ended"
            time.sleep(0.5)
        reconnected = time.time() - cut_to
        time.sleep(8)
    finally:
        calls = finish_tracked_load(load, stop)
    settle_agents(fleet)
    codes_after = {h.name: solve_codes(fleet, h.name) for h in fleet.solvers}
    ledger = assert_lab_ledger(fleet, probes + calls, key_id=key_id, opening=OPENING)

    # What the clients saw, by phase; what each agent answered (its /metrics, /solve only).
    by_phase = {p: Counter() for p in ("before", "during", "across", "after")}
    for c in calls:
        by_phase[phase(c, cut_from, cut_to)][str(c.status)] += 1
    answered = {h: codes_after[h] - codes_before[h] for h in codes_after}
    events = usage_log(fleet, key_id)
    during_ms = (cut_from * 1000, cut_to * 1000)
    served_during = Counter(
        e["agent_id"] for e in events if during_ms[0] <= e["ts_ms"] <= during_ms[1]
    )
    # Successes the victim recorded after that snapshot and before the link came back: each
    # was in flight then (held) or admitted on the credit it had left.
    credit = at_cut["available_micros"] + at_cut["in_flight_micros"]
    spent = price * sum(
        1
        for e in events
        if e["agent_id"] == victim and at_cut_time * 1000 <= e["ts_ms"] <= during_ms[1]
    )
    worst = {
        name: max((s["collector"]["last_sync_age_s"] or 0) for _, n, s in samples if n == name)
        for name in [victim, *others]
    }
    offline_seen = any(not s["collector"]["online"] for _, n, s in samples if n == victim)
    ready_during = all(s["ready"] for _, n, s in samples if n == victim)
    print(
        f"\nnetcut {victim} <-/-> collector1 for {cut_to - cut_from:.1f}s under load: "
        f"{dropped_packets(listing)} packets dropped; {victim} synced again "
        f"{reconnected:.1f}s after the cut\n"
        f"  client answers by phase: { {p: dict(c) for p, c in by_phase.items()} }\n"
        f"  /solve answers per agent: { {h: dict(c) for h, c in answered.items()} }\n"
        f"  successes served during the cut (usage ts): {dict(served_during)}; {victim} "
        f"spent {spent} micros offline of {credit} it held (leased, unspent + in flight)\n"
        f"  longest time without a sync during the cut: {worst}; "
        f"{victim} reported offline: {offline_seen}, stayed ready: {ready_during}\n"
        f"  {ledger.line()}"
    )

    # The cut was real, on the victim only, and HAProxy kept sending it clients.
    assert dropped_packets(listing) > 0, listing
    assert offline_seen and worst[victim] >= CUT_SECONDS - 10, worst
    assert all(worst[name] < 10 for name in others), worst
    assert ready_during, [s for _, n, s in samples if n == victim and not s["ready"]]
    rows = [ln.split() for ln in lb_view.splitlines() if not ln.startswith("#")]
    assert any(len(f) > 6 and f[3] == victim and f[5] == "2" for f in rows), lb_view
    # Clients saw only successes and, during the cut and until the victim synced again,
    # the victim's refusals of what its lease did not cover.
    assert set(by_phase["before"]) <= {"200"}, by_phase
    assert {str(c.status) for c in calls} <= {"200", "402"}, by_phase
    assert all(answered[name]["402"] == 0 for name in others), answered
    # The isolated agent kept serving on its lease, and within it; so did the others.
    assert served_during[victim] > 0, served_during
    assert spent <= credit, (spent, credit, at_cut)
    assert all(served_during[name] > 0 for name in others), served_during
    assert by_phase["after"]["200"] > 0, by_phase
