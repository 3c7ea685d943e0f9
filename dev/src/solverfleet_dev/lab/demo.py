"""`solverfleet lab demo`: the fleet as an operator meets it. A namespace lab (lb1, collector1,
solver1..N) goes from bare hosts to a serving fleet with the repository's playbooks — site.yml,
team.yml with a demo team, a few solves through HAProxy over TLS, then health.yml's report —
and the operator is told how to send a solve from their own shell and how to tear it down."""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from solverfleet_dev.lab import repoinventory
from solverfleet_dev.lab.config import ADMIN_PORT, LabError
from solverfleet_dev.lab.controller import ansible_env, controller_request, playbook_argv
from solverfleet_dev.lab.lab import Lab

# Demo keys: (key id, user, email, type it may solve, opening balance). Secrets are generated
# for the run and reach team.yml as ENV: references, as an operator's would.
_KEYS = [
    ("alice-web", "alice", "alice@example.com", "turnstile", "25.00"),
    ("bob-scraper", "bob", "bob@example.com", "recaptcha-v2", "0.003"),  # one solve
]
_CALLS = [  # (key id, captcha type): what the demo sends through the balancer
    ("alice-web", "turnstile"),
    ("alice-web", "turnstile"),
    ("alice-web", "recaptcha-v2"),  # not an allowed type for this key: 403
    ("bob-scraper", "recaptcha-v2"),
    ("bob-scraper", "recaptcha-v2"),  # balance spent: 402
]


@dataclass
class DemoKey:
    key_id: str
    env_name: str
    secret: str


def demo_team(keys: list[DemoKey]) -> dict[str, Any]:
    """The team config team.yml applies: secrets as ENV: references, never values."""
    users: dict[str, dict[str, Any]] = {}
    for (key_id, user, email, ctype, balance), key in zip(_KEYS, keys, strict=True):
        entry = users.setdefault(user, {"id": user, "email": email, "daily_limit": 500, "keys": []})
        entry["keys"].append(
            {
                "id": key_id,
                "secret": f"ENV:{key.env_name}",
                "balance": balance,
                "allowed_types": [ctype],
                "project": "demo",
            }
        )
    return {
        "account": "demo-co",
        "prices": {"turnstile": "0.002", "recaptcha-v2": "0.003"},
        "users": list(users.values()),
    }


class Demo:
    def __init__(self, lab: Lab, repo: Path, wheelhouse: Path, console: Console) -> None:
        self.lab, self.repo, self.wheelhouse, self.console = lab, repo, wheelhouse, console
        self.inventory: Path = lab.inventory_path  # or its copy in the checkout, once up
        self.keys = [
            DemoKey(k[0], "SOLVERFLEET_DEMO_KEY_" + k[0].upper().replace("-", "_"), "")
            for k in _KEYS
        ]

    def run(self, solvers: int) -> None:
        started = time.monotonic()
        self.step(f"lab up: lb1, collector1, solver1..{solvers} as network namespaces")
        self.lab.up(solvers)
        self.inventory = (
            repoinventory.publish(self.lab, repoinventory.checkout_inventory_dir(self.repo))
            or self.lab.inventory_path
        )
        self.step("site.yml: bare hosts to a serving fleet (takes a few minutes)")
        self.playbook("site.yml")
        self.step("team.yml: a demo team, key secrets from ENV: references")
        for key in self.keys:
            key.secret = self._saved_secret(key)
        self.playbook("team.yml", {"solverfleet_team": demo_team(self.keys)}, self._key_env())
        cafile = self._fetch_ca()
        self.step("solves through HAProxy over TLS")
        self.console.print(self._solve_table(cafile))
        self.step("the collector's admin API through HAProxy's operators' frontend (TLS)")
        self._check_admin_door(cafile)
        self.step("health.yml: the fleet health report")
        self.playbook("health.yml", check=False)
        self._print_next_steps(cafile, time.monotonic() - started)

    # -- steps -----------------------------------------------------------------------------------

    def step(self, text: str) -> None:
        self.console.rule(f"[bold]{text}")

    def playbook(
        self,
        name: str,
        extra: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        *,
        check: bool = True,
    ) -> int:
        extra_vars = {
            "solverfleet_wheelhouse_dir": str(self.wheelhouse),
            # The lab's hosts share /usr with this machine: never run its package manager.
            "solverfleet_manage_packages": False,
            **(extra or {}),
        }
        argv = playbook_argv(self.lab, self.repo / "playbooks" / name, extra_vars)
        proc = subprocess.run(
            self.lab.controller_argv(argv),
            env=ansible_env(self.lab, self.repo, env),
            cwd=self.repo,
            check=False,
        )
        if proc.returncode != 0 and check:
            raise LabError(f"{name} failed (exit {proc.returncode}); the lab is left up to look at")
        return proc.returncode

    def _saved_secret(self, key: DemoKey) -> str:
        """One secret per demo key, kept in the lab state dir so a second demo run reuses it."""
        path = Path(self.lab.state_dir) / "secrets" / "demo-keys" / key.key_id
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text("sk-demo-" + secrets.token_urlsafe(24) + "\n")
            path.chmod(0o600)
        return path.read_text().strip()

    def _key_env(self) -> dict[str, str]:
        return {key.env_name: key.secret for key in self.keys}

    def _fetch_ca(self) -> str:
        """The lb's self-signed certificate, to verify TLS against it."""
        pem = self.lab.ssh("lb1", ["cat", "/etc/haproxy/certs/solverfleet.pem"], check=True).stdout
        cafile = Path(self.lab.state_dir) / "lb-ca.pem"
        cafile.write_text(pem)
        return str(cafile)

    def _solve_table(self, cafile: str) -> Table:
        table = Table(title="POST https://lb1/solve")
        for col in ("key", "type", "status", "answer / error", "cost", "ms"):
            table.add_column(col)
        secret = {k.key_id: k.secret for k in self.keys}
        url = f"https://{self.lab.address('lb1')}/solve"
        for key_id, ctype in _CALLS:
            resp = self._solve_when_ready(url, secret[key_id], ctype, cafile)
            body = _json_or_text(resp.body)
            detail = body.get("error", body.get("status", "")) if isinstance(body, dict) else body
            cost = body.get("cost", "") if isinstance(body, dict) else ""
            ms = str(body.get("duration_ms", "")) if isinstance(body, dict) else ""
            table.add_row(key_id, ctype, str(resp.status), str(detail)[:40], cost, ms)
        return table

    def _solve_when_ready(self, url: str, secret: str, ctype: str, cafile: str):
        # A key applied a moment ago reaches every agent on its next sync (about a second).
        deadline = time.monotonic() + 15
        while True:
            resp = controller_request(
                self.lab,
                "POST",
                url,
                headers={"Authorization": f"Bearer {secret}"},
                body={"type": ctype, "url": "https://example.com/login"},
                cafile=cafile,
            )
            if resp.status != 401 or time.monotonic() > deadline:
                return resp
            time.sleep(0.5)

    @property
    def admin_url(self) -> str:
        return f"https://{self.lab.address('lb1')}:{ADMIN_PORT}"

    def _check_admin_door(self, cafile: str) -> None:
        token = (Path(self.lab.state_dir) / "secrets" / "admin_token").read_text().strip()
        resp = controller_request(
            self.lab,
            "GET",
            f"{self.admin_url}/admin/v1/keys",
            headers={"Authorization": f"Bearer {token}"},
            cafile=cafile,
        )
        if resp.status != 200:
            raise LabError(f"admin API through {self.admin_url}: {resp.status} {resp.body[:200]}")
        keys = [k["id"] for k in resp.json()["keys"]]
        self.console.print(f"GET {self.admin_url}/admin/v1/keys -> 200, keys: {', '.join(keys)}")

    def _print_next_steps(self, cafile: str, seconds: float) -> None:
        lb = self.lab.address("lb1")
        key = self.keys[0]
        payload = json.dumps({"type": "turnstile", "url": "https://example.com/login"})
        curl = (
            f"sudo ip netns exec {self.lab.controller_netns} curl -sS --cacert {cafile} "
            f"https://{lb}/solve -H 'Authorization: Bearer {key.secret}' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(payload)}"
        )
        exe = Path(sys.executable).parent / "solverfleet"
        self.step(f"the fleet is up ({seconds:.0f} s)")
        self.console.print(
            f"Send a solve through the balancer from your shell:\n\n  {curl}\n\n"
            f"The admin API and the dashboard, from the controller namespace (HAProxy admits only "
            f"its address on that port):\n\n  {self.admin_url}/dashboard/\n"
            f"  sudo ip netns exec {self.lab.controller_netns} {exe} keys list --collector "
            f'{self.admin_url} --ca-file {cafile} --token "$(sudo cat '
            f'{Path(self.lab.state_dir) / "secrets" / "admin_token"})"\n\n'
            f"Key secrets are in {Path(self.lab.state_dir) / 'secrets' / 'demo-keys'}, the lab "
            f"inventory in {self.inventory}.\n"
            f"Health report again: sudo ip netns exec {self.lab.controller_netns} "
            f"{Path(sys.executable).parent / 'ansible-playbook'} -i {self.inventory} "
            f"playbooks/health.yml\n"
            f"Tear the lab down:   sudo {exe} lab down --name {self.lab.name}",
            soft_wrap=True,
            highlight=False,
        )


def _json_or_text(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body
