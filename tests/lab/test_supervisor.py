"""The supervisor path of the roles (issue 13 keeps it tested): a lab whose hosts boot a shell
init instead of systemd, deployed by site.yml from bare hosts. The roles then run every service
under the host's own supervisord, with the same TLS and per-host credentials as on systemd."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from solverfleet.process import wait_until
from solverfleet_dev.lab.lab import SUPERVISOR_CONFIG
from tests.support.ansible import run_playbook
from tests.support.lab import lab_name
from tests.support.labfleet import (
    SKIP,
    apply_lab_key,
    deployed_fleet,
    lb_certificate,
    register_secret,
    solve,
    wait_for_response,
)

pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]

PROGRAMS = {
    "lb": ["solverfleet-haproxy"],
    "collector": ["solverfleet-collector"],
    "solvers": ["solverfleet-worker", "solverfleet-agent"],
}


def programs(lab, host: str) -> dict[str, str]:
    """``supervisorctl status`` on ``host``: program -> state (RUNNING, STARTING...)."""
    out = lab.ssh(host, ["supervisorctl", "-c", SUPERVISOR_CONFIG, "status"]).stdout
    return {f[0]: f[1] for f in (line.split() for line in out.splitlines()) if len(f) > 1}


@pytest.mark.timeout(900)
def test_site_on_supervisor_hosts_serves_over_tls_idempotently(lab_wheelhouse: Path) -> None:
    with deployed_fleet(lab_name("sup"), lab_wheelhouse, solvers=1, init="supervisor") as fleet:
        lab = fleet.lab
        for host in lab.hosts:
            assert lab.host_exec(host.name, ["cat", "/proc/1/comm"]).stdout.strip() == "bash"
            wait_until(
                lambda host=host: all(
                    programs(lab, host.name).get(p) == "RUNNING" for p in PROGRAMS[host.group]
                ),
                timeout=30,
                interval=0.5,
                what=f"{host.name}'s programs RUNNING under its supervisord",
            )
        solver = fleet.solvers[0].name
        mode = lab.ssh(solver, ["stat -c '%a %U' /etc/solverfleet/agent.credential"])
        assert mode.stdout.split() == ["600", "solverfleet"], mode.stdout
        ready = fleet.get(f"{fleet.agent_url(fleet.solvers[0].address)}/readyz")
        assert ready.status == 200, ready  # HTTPS, verified with the fleet CA
        # A key of its own: the shared fleet's lab key stays registered for the secret scan.
        secret = register_secret("sup-key", "sk-sup-" + secrets.token_urlsafe(24))
        apply_lab_key(
            fleet, account="supco", user="sam", key_id="sup-key", secret=secret, balance="1.00"
        )
        fleet.api_key, fleet.cafile = secret, lb_certificate(fleet)
        resp = wait_for_response(
            lambda: solve(fleet), lambda r: r.status == 200, timeout=30, what="/solve"
        )
        assert resp.json()["status"] == "success", resp
        second = run_playbook(lab, "site.yml", extra_vars=fleet.extra)
        second.assert_ok()
        assert second.changed == 0, second.changed_tasks()
