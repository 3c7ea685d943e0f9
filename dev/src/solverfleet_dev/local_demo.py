"""``solverfleet local --demo``: apply a team, show how to call the fleet, run a small burst.

The burst is bounded in count and time and runs against loopback only. Keys the collector
generates are kept in ``<state>/demo-keys.json`` (mode 0600), so a second demo on the same state
dir can still call the fleet: the collector shows a secret only once.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import click
import requests
from rich.table import Table
from rich.text import Text

from solverfleet import teamconfig
from solverfleet.adminclient import AdminError
from solverfleet.cli.apply import render_result
from solverfleet.cli.common import CliError, console, money
from solverfleet.money import to_micros
from solverfleet.process import DeadlineExceeded, wait_until
from solverfleet_dev.localstack import LocalStack

DEMO_KEYS_FILE = "demo-keys.json"
DEFAULT_TEAM = "team.yaml"  # in the package: solverfleet_dev/examples/
BURST_REQUESTS = 50
BURST_CONCURRENCY = 8
BURST_DEADLINE = 30.0  # s for the whole burst
REQUEST_TIMEOUT = 10.0
TARGET_URL = "https://example.com/login"


def find_team_file(explicit: str | None) -> Path | Traversable:
    """``--team`` if given, else the example shipped in the package (solverfleet_dev/examples)."""
    if explicit:
        return Path(explicit)
    return resources.files("solverfleet_dev") / "examples" / DEFAULT_TEAM


def run_demo(stack: LocalStack, team_file: Path | Traversable) -> None:
    try:
        config = teamconfig.load_file(team_file)
    except teamconfig.TeamConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    with stack.admin_client() as admin:
        result = admin.apply(config)
        render_result(result, source=str(team_file))
        secrets = _save_secrets(stack, result.get("secrets") or {}, config)
        console.print("Waiting for the agents to load the keys ...")
        stack.wait_agents_ready(timeout=30)
        plan = burst_plan(config, secrets)
        if plan.guide_key:
            stack.wait_for_key(secrets[plan.guide_key], timeout=30)
        print_guide(stack, plan.guide_key, secrets)
        if not plan.calls:
            console.print("No demo key with a known secret; skipping the demo burst.")
            return
        baseline = _successes(admin)
        console.print(f"\nRunning a demo burst over {len(stack.agents)} agent(s) ...")
        outcomes = run_burst(stack, plan.calls)
        print_outcomes(outcomes)
        _wait_ingested(admin, baseline + outcomes.successes)
        print_balances(admin.list_keys(), config)


# --- secrets ----------------------------------------------------------------------------------


def _save_secrets(stack: LocalStack, new: dict[str, str], config: dict) -> dict[str, str]:
    """Merge newly generated secrets with saved ones and those given in the config."""
    path = stack.state_dir / DEMO_KEYS_FILE
    saved: dict[str, str] = {}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = {}
    given = {k["id"]: k["secret"] for u in config["users"] for k in u["keys"] if k["secret"]}
    merged = {**saved, **{str(k): str(v) for k, v in new.items()}}
    if merged != saved:
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(merged, fh, indent=2)
        os.replace(tmp, path)
    return {**merged, **given}


# --- the plan ---------------------------------------------------------------------------------


@dataclass
class Call:
    key_id: str
    secret: str
    type: str
    fail: bool = False  # ask the demo worker to fail this one (failures cost nothing)


@dataclass
class Plan:
    calls: list[Call]
    guide_key: str | None


def _reachable_locally(key: dict) -> bool:
    nets = key["ip_allowlist"]
    return nets is None or any(n.startswith(("127.", "::1")) for n in nets)


def burst_plan(config: dict, secrets: dict[str, str]) -> Plan:
    """A fixed mix: one call that shows each refusal (forced worker failure, wrong type,
    disabled user, IP not allowed, unknown key), then valid calls round-robin over the usable
    keys, which run into the keys' balance, cpm and daily limits."""
    prices = list(config["prices"]) or ["turnstile"]
    keys = [(u, k) for u in config["users"] for k in u["keys"] if k["id"] in secrets]
    if not keys:
        return Plan([], None)

    def call(key: dict, type_: str, fail: bool = False) -> Call:
        return Call(key["id"], secrets[key["id"]], type_, fail)

    def types_of(key: dict) -> list[str]:
        return key["allowed_types"] or prices

    usable = [k for u, k in keys if u["active"] and k["active"] and _reachable_locally(k)]
    refused = [k for _, k in keys if k not in usable]
    if not usable:
        return Plan([call(k, types_of(k)[0]) for k in refused], None)
    guide = max(usable, key=lambda k: to_micros(k["balance"]))
    calls = [call(guide, types_of(guide)[0], fail=True)] * 2  # failures are not charged
    for key in usable:
        wrong = [t for t in prices if t not in types_of(key)]
        if wrong:
            calls.append(call(key, wrong[0]))
    calls += [call(key, types_of(key)[0]) for key in refused]
    calls += [Call("unknown", "sk_not-a-real-key-000000000000", prices[0])] * 2
    i = 0
    while len(calls) < BURST_REQUESTS:
        key = usable[i % len(usable)]
        kinds = types_of(key)
        calls.append(call(key, kinds[(i // len(usable)) % len(kinds)]))
        i += 1
    return Plan(calls[:BURST_REQUESTS], guide["id"])


# --- the burst --------------------------------------------------------------------------------


@dataclass
class Outcomes:
    counts: Counter = field(default_factory=Counter)  # (status, code) -> n
    by_key: dict[str, Counter] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def successes(self) -> int:
        return sum(n for (status, _), n in self.counts.items() if status == 200)


def run_burst(stack: LocalStack, calls: list[Call]) -> Outcomes:
    agents = stack.urls["agents"]
    outcomes = Outcomes()
    session = requests.Session()

    def one(i: int, call: Call) -> tuple[Any, str]:
        body: dict[str, Any] = {"type": call.type, "url": TARGET_URL, "params": {}}
        if call.fail:
            body["params"]["demo"] = {"fail": True}
        try:
            resp = session.post(
                f"{agents[i % len(agents)]}/solve",
                json=body,
                headers={"Authorization": f"Bearer {call.secret}"},
                timeout=REQUEST_TIMEOUT,
            )
        except requests.RequestException as exc:
            return "-", type(exc).__name__
        return resp.status_code, _error_code(resp)

    started = time.monotonic()
    pool = ThreadPoolExecutor(BURST_CONCURRENCY)
    try:
        futures = {pool.submit(one, i, c): c for i, c in enumerate(calls)}
        done, not_done = wait(futures, timeout=BURST_DEADLINE)
        for future in done:
            status, code = future.result()
            outcomes.counts[(status, code)] += 1
            per_key = outcomes.by_key.setdefault(futures[future].key_id, Counter())
            per_key[status] += 1
        if not_done:
            outcomes.counts[("-", "not finished in time")] += len(not_done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # Idle keep-alive sockets would hold up the agents' graceful stop later.
        session.close()
    outcomes.elapsed = time.monotonic() - started
    return outcomes


def _error_code(resp: requests.Response) -> str:
    if resp.status_code == 200:
        return "success"
    try:
        body = resp.json()
    except ValueError:
        return "(no JSON body)"
    return str(body.get("error", "?")) if isinstance(body, dict) else "?"


# --- output -----------------------------------------------------------------------------------


def print_guide(stack: LocalStack, key_id: str | None, secrets: dict[str, str]) -> None:
    urls = stack.urls
    agent = urls["agents"][0] if urls["agents"] else None
    state = _short(stack.state_dir)
    echo = click.echo  # plain: commands must stay copy-pasteable, never wrapped
    echo("")
    echo(f"Try it (key {key_id}; all demo keys are in {state}/{DEMO_KEYS_FILE}):")
    if agent and key_id:
        auth = f"Authorization: Bearer {secrets[key_id]}"
        body = json.dumps({"type": "turnstile", "url": TARGET_URL, "params": {}})
        echo(
            f"  curl -s -X POST {agent}/solve -H '{auth}' "
            f"-H 'Content-Type: application/json' -d '{body}'"
        )
        echo(f"  curl -s {agent}/balance -H '{auth}'")
    echo("Administer it:")
    echo(f"  solverfleet keys list --stack {state}")
    if key_id:
        echo(f"  solverfleet keys topup {key_id} 10.00 --stack {state}")
    echo(f"  solverfleet users deactivate bob --stack {state}")


def print_outcomes(outcomes: Outcomes) -> None:
    table = Table(
        title=f"Demo burst: {sum(outcomes.counts.values())} calls in {outcomes.elapsed:.1f} s",
        title_justify="left",
    )
    table.add_column("HTTP", justify="right")
    table.add_column("outcome")
    table.add_column("calls", justify="right")
    for (status, code), n in sorted(outcomes.counts.items(), key=lambda kv: str(kv[0])):
        style = "green" if status == 200 else "yellow" if status in (402, 429) else "red"
        table.add_row(Text(str(status), style=style), Text(code), str(n))
    console.print(table)


def print_balances(keys: list[dict], config: dict) -> None:
    opening = {k["id"]: k["balance"] for u in config["users"] for k in u["keys"]}
    table = Table(title="Balances at the collector", title_justify="left")
    table.add_column("key")
    table.add_column("opening (config)", justify="right")
    table.add_column("balance now", justify="right")
    table.add_column("active")
    for key in keys:
        if key.get("id") not in opening:
            continue
        table.add_row(
            Text(str(key["id"])),
            money(opening[key["id"]]),
            money(key.get("balance")),
            "yes" if key.get("active") else "no",
        )
    console.print(table)
    console.print("(An opening balance counts only when its key is created.)")


def _successes(admin: Any) -> int:
    try:
        return int(admin.summary().get("successes", 0))
    except (AdminError, ValueError, TypeError):  # the summary only refines the demo output
        return 0


def _wait_ingested(admin: Any, successes: int) -> None:
    # The collector learns of usage when agents ship it (batched, about a second).
    try:
        wait_until(lambda: _successes(admin) >= successes, timeout=10, interval=0.2, what="usage")
    except DeadlineExceeded:
        console.print("(The collector has not seen every success yet; balances may lag.)")


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
