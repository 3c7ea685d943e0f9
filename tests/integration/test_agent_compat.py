"""in.php / res.php end to end: two real agents under gunicorn, real collector and worker.

The client polls like the client libraries do. ``res.php`` goes to the agent that owns the
task id, chosen with the same per-node regular expression the HAProxy rule uses
(docs/PROTOCOLS.md), so this is the routing the load balancer does.
"""

from __future__ import annotations

import itertools
import re
import time

import pytest
import requests

from solverfleet.agent.compat.tasks import id_pattern
from solverfleet.money import format_micros
from solverfleet.process import wait_until
from tests.support.fleet import PRICE, key, micros, new_secret, team, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
NODES = (101, 102)  # node_id of agent 0 and agent 1
TURNSTILE = {"method": "turnstile", "sitekey": "0x4AAAAAAA", "pageurl": "https://shop.test/"}


class Client:
    """A 2captcha-style client behind an LB that routes res.php by the id's node digits."""

    def __init__(self, stack, secret):
        self.agents = [stack.agent_url(i) for i in range(len(NODES))]
        self.secret = secret
        self._next = itertools.cycle(range(len(self.agents)))

    def owner(self, task_id: str) -> str:
        [url] = [u for u, n in zip(self.agents, NODES, strict=True)
                 if re.fullmatch(id_pattern(n), task_id)]  # fmt: skip
        return url

    def submit(self, **extra) -> str:
        url = self.agents[next(self._next)]  # in.php: plain round robin
        resp = requests.post(f"{url}/in.php", data={"key": self.secret, **TURNSTILE, **extra},
                             timeout=10)  # fmt: skip
        assert resp.status_code == 200 and resp.text.startswith("OK|"), resp.text
        return resp.text[3:]

    def res(self, url=None, **params):
        url = url or self.owner(params["id"])
        resp = requests.get(f"{url}/res.php", params={"key": self.secret, **params}, timeout=10)
        assert resp.status_code == 200
        return resp.json() if params.get("json") == "1" else resp.text

    def poll(self, task_ids, deadline_s=30.0, interval=0.05):
        """Poll every task until it is no longer CAPCHA_NOT_READY."""
        answers: dict[str, str] = {}
        deadline = time.monotonic() + deadline_s
        while len(answers) < len(task_ids):
            assert time.monotonic() < deadline, f"unfinished: {set(task_ids) - set(answers)}"
            for task_id in task_ids:
                if task_id not in answers:
                    text = self.res(action="get", id=task_id)
                    if text != "CAPCHA_NOT_READY":
                        answers[task_id] = text
            time.sleep(interval)  # a client's poll interval, not a settle wait
        return answers


def _summary(stack) -> dict:
    with stack.admin_client() as admin:
        return admin.summary()


def test_round_trip_two_agents_bills_delivered_answers_only(fleet_factory):
    stack = fleet_factory(
        agents=2,
        worker_failure_rate=0.3,
        extra_worker_env={"SOLVERFLEET_SEED": "7"},  # 4 of the first 12 calls fail
        extra_agent_env=lambda i: {"SOLVERFLEET_NODE_ID": str(NODES[i])},
    )
    secret = new_secret("compat")
    with stack.admin_client() as admin:
        admin.apply(team(user("alice", key("alice-web", secret, "1.00"))))
    stack.wait_for_key(secret)
    client = Client(stack, secret)

    ids = [client.submit() for _ in range(12)]
    assert {client.owner(i) for i in ids} == set(client.agents)  # both agents hold tasks
    answers = client.poll(ids)
    delivered = [i for i, a in answers.items() if a.startswith("OK|")]
    failed = [i for i, a in answers.items() if a == "ERROR_CAPTCHA_UNSOLVABLE"]
    assert len(delivered) + len(failed) == 12 and failed and delivered, answers
    assert all(answers[i].startswith("OK|demo-") for i in delivered)

    # Polling again answers again, charges nothing more; JSON form too.
    again = client.res(action="get", id=delivered[0], json="1")
    assert again == {"status": 1, "request": answers[delivered[0]][3:]}
    assert client.res(action="get", id=failed[0], json="1") == {
        "status": 0, "request": "ERROR_CAPTCHA_UNSOLVABLE"}  # fmt: skip
    # Without the LB's routing the other agent does not know the task.
    other = next(u for u in client.agents if u != client.owner(delivered[0]))
    assert client.res(other, action="get", id=delivered[0]) == "ERROR_WRONG_CAPTCHA_ID"
    assert client.res(action="reportbad", id=delivered[0]) == "OK_REPORT_RECORDED"

    # Billing equals delivered answers, at the collector; failed tasks cost nothing.
    def settled():
        s = _summary(stack)
        return s["successes"] == len(delivered) and s["events"] == 12 + 1

    wait_until(settled, timeout=15, what="usage shipped")
    summary = _summary(stack)
    assert summary["usage_micros"] == len(delivered) * micros(PRICE)
    expected = micros("1.00") - len(delivered) * micros(PRICE)
    assert summary["keys"]["alice-web"]["balance_micros"] == expected
    with stack.admin_client() as admin:
        events = admin.usage(key_id="alice-web", limit=100)["events"]
    statuses = sorted(e["status"] for e in events)
    assert statuses.count("report_bad") == 1 and statuses.count("failed") == len(failed)

    # getbalance (bare number) agrees on every agent once leases settle.
    want = format_micros(expected)
    for url in client.agents:
        wait_until(lambda url=url: client.res(url, action="getbalance") == want, timeout=10,
                   what="balance on each agent")  # fmt: skip
