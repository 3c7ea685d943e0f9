"""Key rotation end to end (real collector, worker and two agents; SQLite and MariaDB).

The old secret keeps working on every agent for the grace the operator set, then every agent
refuses it within about a second, without waiting for a sync: each agent checks the expiry
against its own clock. A rotation without grace reaches every agent within about a second.
"""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from solverfleet.cli import main
from solverfleet.process import wait_until
from tests.support.fleet import balance, key, new_secret, solve, team, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# Long enough for the checks inside the grace on a loaded two-core machine; the test fails
# loudly (rather than passing vacuously) if they ever take longer.
GRACE = 10


def _cli(stack, *args: str) -> dict:
    result = CliRunner().invoke(main, [*args, "--format", "json", "--stack", str(stack.state_dir)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _successes(stack, key_id: str) -> int:
    with stack.admin_client() as admin:
        return admin.summary()["keys"][key_id]["successes"]


def _refused_everywhere(stack, secret: str, since: float) -> float:
    """Seconds from ``since`` until both agents refuse ``secret`` (401 invalid_key)."""
    for i in range(2):
        url = stack.agent_url(i)
        wait_until(
            lambda url=url: balance(url, secret).status_code == 401,
            timeout=5,
            interval=0.01,
            what=f"agent {i} to refuse the old secret",
        )
    return time.time() - since


def test_old_secret_works_on_both_agents_during_grace_then_is_refused(fleet_factory):
    stack = fleet_factory(agents=2)
    old = new_secret("rotate")
    with stack.admin_client() as admin:
        admin.apply(team(user("rita", key("rita-web", old, "5.00"))))
    stack.wait_for_key(old)
    for i in range(2):
        assert solve(stack.agent_url(i), old).status_code == 200

    rotated = _cli(stack, "keys", "rotate", "rita-web", "--grace", str(GRACE))
    new, until = rotated["secret"], float(rotated["previous_valid_until"])
    assert new != old
    stack.wait_for_key(new)

    # Inside the grace both secrets work on both agents, and both are the same key's.
    for i in range(2):
        assert solve(stack.agent_url(i), old).status_code == 200
        assert solve(stack.agent_url(i), new).status_code == 200
    assert time.time() < until, f"the checks took longer than the {GRACE} s grace"

    wait_until(lambda: time.time() >= until, timeout=GRACE + 5, what="the grace to end")
    late = _refused_everywhere(stack, old, until)
    print(f"grace end -> old secret refused on both agents after {late * 1000:.0f} ms")
    assert late < 1.0
    for i in range(2):
        refused = solve(stack.agent_url(i), old)
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_key")
        assert solve(stack.agent_url(i), new).status_code == 200

    # Every success, by either secret, was metered once on the one key.
    wait_until(lambda: _successes(stack, "rita-web") == 8, timeout=15, what="usage shipped")

    # Rotating without grace: the previous secret is refused on both agents within a second.
    started = time.time()
    newest = _cli(stack, "keys", "rotate", "rita-web", "--grace", "0")
    assert newest["previous_valid_until"] is None
    late = _refused_everywhere(stack, new, started)
    print(f"rotation without grace -> refused on both agents after {late * 1000:.0f} ms")
    assert late < 1.0
    stack.wait_for_key(newest["secret"])
    for i in range(2):
        assert solve(stack.agent_url(i), newest["secret"]).status_code == 200
        assert balance(stack.agent_url(i), old).status_code == 401
