"""playbooks/team.yml on the deployed lab fleet (tests.support.labfleet): a team config from
inventory group_vars, its key secret from an ENV: reference set in ansible-playbook's
environment, applied to the collector over SSH; the key then solves through HAProxy over TLS.
Idempotent, quiet about secrets, and an unset ENV: reference fails and changes nothing."""

from __future__ import annotations

import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.ansible import run_playbook
from tests.support.labfleet import (
    SKIP,
    Fleet,
    apply_key,
    register_secret,
    solve,
    wait_for_response,
)

pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]

KEY_ENV = "SF_LAB_TEAM_KEY"
UNSET_ENV = "SF_LAB_TEAM_NEVER_SET"


def team(*more_users: dict, daily_limit: int = 100) -> dict:
    return {
        "account": "teamlab",
        "prices": {"turnstile": "0.002"},  # the price the other lab modules expect
        "users": [
            {
                "id": "tess",
                "email": "tess@example.com",
                "daily_limit": daily_limit,
                "keys": [
                    {
                        "id": "tess-lab",
                        "secret": f"ENV:{KEY_ENV}",
                        "balance": "2.00",
                        "allowed_types": ["turnstile"],
                    },
                    {"id": "tess-generated", "balance": "0.10"},  # the collector makes its secret
                ],
            },
            *more_users,
        ],
    }


@pytest.fixture
def group_vars(fleet: Fleet) -> Iterator[Path]:
    """The lab inventory's group_vars directory (beside inventory.ini), removed afterwards so
    the modules after this one deploy without a team config."""
    path = Path(fleet.lab.inventory_path).parent / "group_vars"
    path.mkdir(exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_team(group_vars: Path, config: dict) -> None:
    (group_vars / "collector.yml").write_text(yaml.safe_dump({"solverfleet_team": config}))


def collector_state(fleet: Fleet) -> dict:
    """Users and keys at the collector; balances left out (usage lands asynchronously)."""
    base = f"{fleet.collector_url}/admin/v1"
    auth = {"Authorization": f"Bearer {fleet.admin_token}"}
    users = fleet.get(f"{base}/users", headers=auth)
    keys = fleet.get(f"{base}/keys", headers=auth)
    assert users.status == 200 and keys.status == 200, (users, keys)
    return {
        "users": users.json()["users"],
        "keys": [{k: v for k, v in key.items() if k != "balance"} for key in keys.json()["keys"]],
    }


@pytest.mark.timeout(900)
def test_team_play_applies_inventory_team_with_env_secrets(fleet: Fleet, group_vars: Path) -> None:
    lab = fleet.lab
    apply_key(fleet)  # the lb certificate, to verify TLS
    secret = register_secret("tess-lab", "sk-team-" + secrets.token_urlsafe(24))
    env = {KEY_ENV: secret}
    write_team(group_vars, team())

    first = run_playbook(lab, "team.yml", env=env)
    first.assert_ok()
    collector = fleet.host("collector").name
    assert first.recap[collector].changed >= 1, first.recap
    assert "created: key tess-lab" in first.stdout, first.tail()

    # The ENV:-sourced key solves through HAProxy once the agents synced it (about a second).
    solved = wait_for_response(
        lambda: solve(fleet, secret), lambda r: r.status == 200, timeout=15, what="tess-lab"
    )
    assert solved.json()["status"] == "success" and solved.json()["cost"] == "0.002", solved

    # The generated key's secret is on the controller only, owner-readable, and it works.
    saved = Path(lab.state_dir) / "secrets" / "keys" / "tess-generated"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    generated = register_secret("tess-generated", saved.read_text().strip())
    wait_for_response(
        lambda: solve(fleet, generated),
        lambda r: r.status == 200,
        timeout=15,
        what="tess-generated",
    )

    second = run_playbook(lab, "team.yml", env=env)
    second.assert_ok()
    assert second.changed == 0, second.changed_tasks()
    assert "nothing changed" in second.stdout, second.tail()

    # An unset ENV: reference: the play fails naming it, and the collector is left as it was
    # (neither the new user nor the changed limit).
    before = collector_state(fleet)
    newcomer = {"id": "uma", "keys": [{"id": "uma-lab", "secret": f"ENV:{UNSET_ENV}"}]}
    write_team(group_vars, team(newcomer, daily_limit=5))
    refused = run_playbook(lab, "team.yml", env=env)
    assert refused.returncode != 0
    assert f"users[1].keys[0].secret: environment variable {UNSET_ENV} is not set" in (
        refused.output
    ), refused.tail()
    assert "nothing was sent to the collector" in refused.output
    assert collector_state(fleet) == before

    for run in (first, second, refused):
        for value in (secret, generated, fleet.admin_token, fleet.fleet_token):
            assert value not in run.output
    print(
        f"\nteam.yml first run {first.seconds:.1f}s, second {second.seconds:.1f}s "
        f"(changed={second.changed}), refused {refused.seconds:.1f}s"
    )
