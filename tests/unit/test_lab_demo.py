"""The demo's team config: a valid team config whose secrets are ENV: references only."""

from __future__ import annotations

import json

from solverfleet.teamconfig import parse
from solverfleet_dev.lab.demo import DemoKey, demo_team


def test_demo_team_is_valid_and_carries_no_secret_values() -> None:
    keys = [
        DemoKey("alice-web", "SOLVERFLEET_DEMO_KEY_ALICE_WEB", "sk-demo-" + "a" * 24),
        DemoKey("bob-scraper", "SOLVERFLEET_DEMO_KEY_BOB_SCRAPER", "sk-demo-" + "b" * 24),
    ]
    team = demo_team(keys)
    text = json.dumps(team)
    assert all(k.secret not in text for k in keys)
    env = {k.env_name: k.secret for k in keys}
    parsed = parse(team, env=env)
    secrets = {key["id"]: key["secret"] for user in parsed["users"] for key in user["keys"]}
    assert secrets == {k.key_id: k.secret for k in keys}
