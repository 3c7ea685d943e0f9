"""playbooks/team.yml against a real collector (gunicorn, SQLite) on loopback: ansible-playbook
runs with a local connection and an inventory whose group_vars hold the team config, as an
operator's would. The lab test (tests/lab/test_team.py) runs the same play over SSH on a fleet."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ansible import REPO, VENV_BIN, parse_recap
from tests.support.collector import CollectorProcess, sqlite_url

pytestmark = pytest.mark.integration

PLAYBOOK = REPO / "playbooks" / "team.yml"


@dataclass
class Run:
    returncode: int
    output: str
    changed: int

    def report(self) -> str:
        """The text after the report task's header (what an operator reads)."""
        return self.output[self.output.rfind("TASK [Report what changed]") :]


@pytest.fixture
def collector(tmp_path: Path):
    with CollectorProcess(sqlite_url(tmp_path / "c.db"), tmp_path, workers=1) as proc:
        yield proc


def write_inventory(root: Path, collector: CollectorProcess, team: Any) -> Path:
    (root / "group_vars").mkdir(parents=True, exist_ok=True)
    hosts = {
        "all": {
            "children": {
                "collector": {
                    "hosts": {
                        "collector1": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                        }
                    }
                }
            }
        }
    }
    (root / "hosts.yml").write_text(yaml.safe_dump(hosts))
    group_vars = {
        # ENV: like an operator's; the value comes from the play's environment.
        "solverfleet_admin_token": "ENV:TEST_SF_ADMIN_TOKEN",
        "solverfleet_fleet_token": "ENV:TEST_SF_FLEET_TOKEN",
        "solverfleet_collector_port": collector.port,
        # A single-host loopback collector in plain HTTP (the lab tests cover TLS).
        "solverfleet_tls": False,
        # Outside the inventory directory: Ansible would read files there as inventory.
        "solverfleet_secrets_dir": str(root.parent / "secrets"),
        "solverfleet_team": team,
    }
    (root / "group_vars" / "collector.yml").write_text(yaml.safe_dump(group_vars))
    return root


def play(inventory: Path, collector: CollectorProcess, env: dict[str, str], *args: str) -> Run:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SOLVERFLEET_"))}
    full.update(
        PATH=f"{VENV_BIN}{os.pathsep}{full.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(inventory.parent / "ansible-tmp"),
        TEST_SF_ADMIN_TOKEN=collector.admin_token,
        TEST_SF_FLEET_TOKEN=collector.fleet_token,
    )
    full.update(env)
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOK), *args],
        env=full,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    recap = parse_recap(proc.stdout)
    return Run(proc.returncode, output, sum(r.changed for r in recap.values()))


def team(secret_ref: str = "ENV:TEST_SF_DANA_KEY", **dana: Any) -> dict:
    return {
        "account": "teamco",
        "prices": {"turnstile": "0.002"},
        "users": [
            {
                "id": "dana",
                "email": "dana@example.com",
                "daily_limit": dana.pop("daily_limit", 50),
                "keys": [
                    {
                        "id": "dana-web",
                        "secret": secret_ref,
                        "balance": "1.00",
                        "allowed_types": ["turnstile"],
                        "ip_allowlist": ["127.0.0.0/8"],
                    },
                    *dana.pop("more_keys", []),
                ],
            }
        ],
    }


def state(collector: CollectorProcess) -> dict:
    keys = collector.admin("GET", "/admin/v1/keys").json()["keys"]
    users = collector.admin("GET", "/admin/v1/users").json()["users"]
    return {"keys": keys, "users": users}


def test_applies_from_inventory_idempotently_and_keeps_secrets_out_of_output(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    secret = "sk-dana-" + secrets.token_urlsafe(24)
    env = {"TEST_SF_DANA_KEY": secret}
    generated_key = {"id": "dana-gen", "balance": "0.50"}  # no secret: the collector makes one
    inventory = write_inventory(tmp_path / "inv", collector, team(more_keys=[generated_key]))

    check = play(inventory, collector, env, "--check")
    assert check.returncode == 0, check.output
    assert check.changed == 1, check.output
    assert "would create: key dana-web" in check.report(), check.report()
    assert state(collector) == {"keys": [], "users": []}  # --check applied nothing

    first = play(inventory, collector, env)
    assert first.returncode == 0, first.output
    assert first.changed >= 1, first.output
    assert "created: key dana-web" in first.report(), first.report()
    assert "created: user dana" in first.report(), first.report()
    keys = {k["id"]: k for k in state(collector)["keys"]}
    assert keys["dana-web"]["balance"] == "1.00"
    assert keys["dana-web"]["ip_allowlist"] == ["127.0.0.0/8"]

    # The generated secret is kept once, on the controller, owner-only, and nowhere in output.
    saved = tmp_path / "secrets" / "keys" / "dana-gen"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    generated = saved.read_text().strip()
    assert len(generated) >= 20
    assert "dana-gen" in first.report() and str(saved.parent) in first.report()

    second = play(inventory, collector, env)
    assert second.returncode == 0, second.output
    assert second.changed == 0, second.output
    assert "nothing changed" in second.report(), second.report()
    assert saved.read_text().strip() == generated

    for run in (check, first, second):
        for value in (secret, generated, collector.admin_token, collector.fleet_token):
            assert value not in run.output

    # A changed limit is one change, reported with its field.
    inventory = write_inventory(inventory, collector, team(daily_limit=80))
    third = play(inventory, collector, env)
    assert third.returncode == 0, third.output
    assert "changed: user dana (daily_limit)" in third.report(), third.report()
    assert {u["id"]: u for u in state(collector)["users"]}["dana"]["daily_limit"] == 80


def test_unset_env_reference_fails_naming_it_and_applies_nothing(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    secret = "sk-dana-" + secrets.token_urlsafe(24)
    inventory = write_inventory(tmp_path / "inv", collector, team())
    assert play(inventory, collector, {"TEST_SF_DANA_KEY": secret}).returncode == 0
    before = state(collector)

    extra = {"id": "dana-new", "secret": "ENV:TEST_SF_NOT_SET_ANYWHERE", "balance": "5.00"}
    inventory = write_inventory(inventory, collector, team(daily_limit=99, more_keys=[extra]))
    run = play(inventory, collector, {"TEST_SF_DANA_KEY": secret})
    assert run.returncode != 0
    assert "users[0].keys[1].secret: environment variable TEST_SF_NOT_SET_ANYWHERE is not set" in (
        run.output
    ), run.output
    assert "nothing was sent to the collector" in run.output
    assert state(collector) == before  # neither the new key nor the new limit
    assert secret not in run.output


def test_collector_refusal_fails_with_its_message_and_applies_nothing(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    secret = "sk-dana-" + secrets.token_urlsafe(24)
    env = {"TEST_SF_DANA_KEY": secret}
    inventory = write_inventory(tmp_path / "inv", collector, team())
    assert play(inventory, collector, env).returncode == 0
    before = state(collector)

    # Valid on the controller; the collector refuses two keys sharing one secret (409).
    twin = {"id": "dana-twin", "secret": "ENV:TEST_SF_DANA_KEY"}
    inventory = write_inventory(inventory, collector, team(daily_limit=7, more_keys=[twin]))
    run = play(inventory, collector, env)
    assert run.returncode != 0
    assert "the collector refused the dry run: 409 secret_reused" in run.output, run.output
    assert "Nothing was applied." in run.output
    assert state(collector) == before
    assert secret not in run.output

    # A wrong admin token is named as such.
    env_bad = {**env, "TEST_SF_ADMIN_TOKEN": "not-the-admin-token-" + secrets.token_hex(8)}
    inventory = write_inventory(inventory, collector, team())
    run = play(inventory, collector, env_bad)
    assert run.returncode != 0
    assert "401 unauthorized" in run.output, run.output
    assert "solverfleet_admin_token is not the collector's admin token" in run.output
    assert env_bad["TEST_SF_ADMIN_TOKEN"] not in run.output


def test_invalid_config_is_refused_on_the_controller_with_every_problem(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    bad = team()
    bad["users"][0]["keys"][0]["ip_allowlist"] = ["10.0.0.0/33"]
    bad["users"][0]["role"] = "boss"
    inventory = write_inventory(tmp_path / "inv", collector, bad)
    run = play(inventory, collector, {"TEST_SF_DANA_KEY": "sk-" + secrets.token_hex(12)})
    assert run.returncode != 0
    assert "users[0].keys[0].ip_allowlist[0]: not a CIDR: '10.0.0.0/33'" in run.output
    assert "users[0].role: unknown role 'boss'" in run.output
    assert state(collector) == {"keys": [], "users": []}
