"""Rollout under load: playbooks/rolling_update.yml, blue_green.yml and rollback.yml on a lab of
5 solver hosts (namespaces, sshd, HAProxy over TLS) while clients keep solving through the
balancer. The test balancer runs with `retries 0` and no redispatch, so a request cut by a
missing drain is a failure the clients see, not one HAProxy quietly retries elsewhere.

Baselines measured in the same run, with the same load:
  - steady: no rollout at all (the throughput every phase is divided by);
  - restart, no drain: each agent restarted in turn (graceful SIGTERM, then wait until it is ready
    and UP in HAProxy) without draining it in HAProxy first: an update done without the plays.

For each phase: wall time of the action, requests the clients made during the phase and how many
failed, successes per second during the action and the ratio to steady, p50/p99 of successful
calls. Then the ledger over every request of the run: client successes == usage records at the
collector == balance change / price, no duplicate event id. Exits 1 if a play fails, a play's
phase fails a request, or the ledger breaks. Needs root (the lab's hosts are namespaces).

    .venv/bin/python bench/bench_rollout.py [--solvers 5] [--threads 10] [--latency-ms 1500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tests.support

from common import machine, table

from solverfleet_dev.lab import preflight
from tests.support.ansible import build_wheelhouse, controller_request, run_playbook
from tests.support.chaos import wait_for
from tests.support.labfleet import (
    AGENT_PORT,
    LAB_KEY_ID,
    LAB_OPENING,
    Fleet,
    apply_key,
    deployed_fleet,
    haproxy_servers,
    wait_for_response,
    wait_in_flight,
)
from tests.support.labledger import (
    TrackedCall,
    assert_lab_ledger,
    finish_tracked_load,
    start_tracked_load,
)

LAB = "benchroll"
STEADY_S = 30.0
GREEN_PORT = AGENT_PORT + 1


@dataclass
class Phase:
    name: str
    started: float  # time.time() of the action's start and end
    ended: float
    calls: list[TrackedCall]
    play_ok: bool
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def failed(self) -> list[TrackedCall]:
        return [c for c in self.calls if c.status != 200]

    def rate(self) -> float:
        """Successes per second that completed during the action."""
        done = [c for c in self.calls if c.status == 200 and self.started <= c.ended <= self.ended]
        return len(done) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        ms = sorted((c.ended - c.started) * 1000 for c in self.calls if c.status == 200)
        if len(ms) < 2:
            return ms[0] if ms else 0.0
        return statistics.quantiles(ms, n=100, method="inclusive")[int(q) - 1]


def run_phase(
    fleet: Fleet, tmp: Path, name: str, action: Callable[[], tuple[bool, str]], *, args, port: int
) -> Phase:
    """Start the load, wait until every live agent (on ``port``) holds solves, run ``action``,
    stop the load."""
    stop = tmp / f"stop-{name}"
    load = start_tracked_load(
        fleet, fleet.api_key, stop, label=name.replace(" ", "-").replace(",", ""),
        seconds=1200, threads=args.threads, latency_ms=args.latency_ms, pace=0.0, limit=50_000,
    )  # fmt: skip
    try:
        wait_in_flight(fleet, port=port, timeout=60)
        started = time.time()
        ok, note = action()
        ended = time.time()
    finally:
        calls = finish_tracked_load(load, stop)
    phase = Phase(name, started, ended, calls, ok, note)
    print(
        f"  {name}: {phase.seconds:.1f}s, {len(calls)} requests, {len(phase.failed)} failed"
        f" {dict(Counter(str(c.status) for c in phase.failed))}{' ' + note if note else ''}",
        flush=True,
    )
    return phase


def playbook(fleet: Fleet, name: str, **extra) -> Callable[[], tuple[bool, str]]:
    def action() -> tuple[bool, str]:
        run = run_playbook(fleet.lab, name, extra_vars={**fleet.extra, **extra})
        if run.returncode != 0:
            print(run.tail(), file=sys.stderr)
        return run.returncode == 0, f"(exit {run.returncode})"

    return action


def wait_up(fleet: Fleet, host: str, timeout: float = 60) -> None:
    """The blue agent on ``host`` answers ready and HAProxy has it running (op state 2)."""
    address = fleet.lab.address(host)
    wait_for_response(
        lambda: fleet.get(f"{fleet.agent_url(address, AGENT_PORT)}/readyz"),
        lambda r: r.status == 200,
        timeout=timeout,
        what=f"{host} /readyz",
    )

    def running() -> bool:
        rows = [ln.split() for ln in haproxy_servers(fleet).splitlines()]
        return any(len(f) > 6 and f[3] == host and f[5] == "2" for f in rows)

    wait_for(running, timeout=timeout, what=f"{host} UP in HAProxy", interval=0.2)


def restart_without_drain(fleet: Fleet) -> Callable[[], tuple[bool, str]]:
    def action() -> tuple[bool, str]:
        for host in fleet.solvers:
            fleet.lab.service(host.name, "restart", "solverfleet-agent")
            wait_up(fleet, host.name)
        return True, ""

    return action


def steady() -> tuple[bool, str]:
    time.sleep(STEADY_S)  # the measurement window itself, not a wait for a condition
    return True, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--solvers", type=int, default=5)
    parser.add_argument("--threads", type=int, default=10, help="concurrent clients")
    parser.add_argument("--latency-ms", type=int, default=1500, help="worker latency per solve")
    args = parser.parse_args()
    problem = preflight.problem()
    if problem:
        raise SystemExit(f"the lab cannot start here: {problem}")

    print(f"rollout under load · {machine()}")
    print(
        f"lab: lb1, collector1, solver1..{args.solvers}; {args.threads} clients through HAProxy "
        f"(TLS, retries 0, no redispatch), each solve holding the worker {args.latency_ms} ms"
    )
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmpdir:
        tmp = Path(tmpdir)
        deploy_started = time.monotonic()
        wheelhouse = build_wheelhouse(tmp / "wheelhouse")
        with deployed_fleet(LAB, wheelhouse, solvers=args.solvers) as fleet:
            print(
                f"wheelhouse + site.yml from bare hosts: {time.monotonic() - deploy_started:.0f}s "
                f"(site.yml {fleet.first.seconds:.0f}s)",
                flush=True,
            )
            apply_key(fleet)
            # The key reaches every agent on its next sync; /balance charges nothing.
            wait_for_response(
                lambda: controller_request(
                    fleet.lab, "GET", f"https://{fleet.host('lb').address}/balance",
                    headers={"Authorization": f"Bearer {fleet.api_key}"}, cafile=fleet.cafile,
                ),
                lambda r: r.status == 200, timeout=30, what="the key on the agents",
            )  # fmt: skip
            phases = [
                run_phase(fleet, tmp, "steady", steady, args=args, port=AGENT_PORT),
                run_phase(
                    fleet, tmp, "restart, no drain", restart_without_drain(fleet),
                    args=args, port=AGENT_PORT,
                ),
                run_phase(
                    fleet, tmp, "rolling_update.yml",
                    playbook(fleet, "rolling_update.yml", solverfleet_release="0.0.0-rolled"),
                    args=args, port=AGENT_PORT,
                ),
                run_phase(
                    fleet, tmp, "blue_green.yml",
                    playbook(fleet, "blue_green.yml", solverfleet_release="0.0.0-green"),
                    args=args, port=AGENT_PORT,
                ),
                run_phase(
                    fleet, tmp, "rollback.yml", playbook(fleet, "rollback.yml"),
                    args=args, port=GREEN_PORT,
                ),
            ]  # fmt: skip
            try:
                ledger = assert_lab_ledger(
                    fleet, [c for p in phases for c in p.calls],
                    key_id=LAB_KEY_ID, opening=LAB_OPENING, label="whole run",
                )  # fmt: skip
                ledger_ok = True
            except AssertionError as exc:
                print(f"LEDGER BROKEN: {exc}")
                ledger_ok = False
    base = phases[0].rate()
    rows = [
        [
            p.name, f"{p.seconds:.1f}", str(len(p.calls)), str(len(p.failed)),
            f"{p.rate():.2f}", f"{p.rate() / base:.2f}" if base else "-",
            f"{p.percentile_ms(50):.0f}", f"{p.percentile_ms(99):.0f}",
            "ok" if p.play_ok else "FAILED",
        ]
        for p in phases
    ]  # fmt: skip
    print()
    print(table(
        ["phase", "seconds", "requests", "failed", "ok/s", "x steady", "p50 ms", "p99 ms", "run"],
        rows,
    ))  # fmt: skip
    if ledger_ok:
        print(
            f"ledger: {ledger.client_ok} client successes == {ledger.usage_ok} usage records == "
            f"balance change {ledger.charged_micros / ledger.price_micros:g} x price; "
            f"no duplicate event id"
        )
    plays = phases[2:]
    broken = [p.name for p in plays if not p.play_ok or p.failed]
    naive = phases[1]
    print(
        f"target: 0 failed requests during every play: "
        f"{'PASS' if not broken else 'FAIL (' + ', '.join(broken) + ')'}; "
        f"the restart without drain failed {len(naive.failed)} of {len(naive.calls)}"
    )
    return 0 if not broken and ledger_ok and naive.play_ok else 1


if __name__ == "__main__":
    sys.exit(main())
