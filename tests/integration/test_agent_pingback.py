"""Pingbacks, soft_id and get2 end to end: real collector, two agents under gunicorn, a worker,
and a tiny HTTP receiver on 127.0.0.1 (reachable only because the agents allow 127.0.0.0/8).

A URL registered through one agent reaches the other with the config sync; the answer is
POSTed (2captcha's form for in.php, the getTaskResult JSON for createTask), a failing
receiver is retried, and every task is charged exactly once though res.php also fetches it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import requests

from solverfleet.money import format_micros
from solverfleet.process import wait_until
from tests.support.fleet import PRICE, key, micros, new_secret, team, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
TURNSTILE = {"method": "turnstile", "sitekey": "0x4AAAAAAA", "pageurl": "https://shop.test/"}
COST = format_micros(micros(PRICE))  # the price as answers spell it
TASK = {"type": "TurnstileTaskProxyless", "websiteURL": "https://shop.test/", "websiteKey": "0x4A"}


class Receiver:
    """Records every POST; ``/flaky`` answers 500 twice, then 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.posts.append((self.path, self.headers["Content-Type"], body))
                    tries = sum(1 for p in receiver.posts if p[0] == self.path)
                status = 500 if self.path == "/flaky" and tries <= 2 else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[tuple[str, bytes]]:
        with self.lock:
            return [(kind, body) for p, kind, body in self.posts if p == path]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_pingbacks_soft_id_and_get2(fleet_factory, receiver):
    stack = fleet_factory(
        agents=2,
        extra_agent_env={
            "SOLVERFLEET_PINGBACK_ALLOW_CIDRS": "127.0.0.0/8",
            "SOLVERFLEET_PINGBACK_BACKOFF": "0.2",
            "SOLVERFLEET_PINGBACK_RETRIES": "3",
        },
    )
    secret = new_secret("pingback")
    with stack.admin_client() as admin:
        admin.apply(team(user("alice", key("alice-web", secret, "1.00"))))
    stack.wait_for_key(secret)
    a0, a1 = stack.agent_url(0), stack.agent_url(1)
    ok_url, flaky_url, json_url = (f"{receiver.url}/{p}" for p in ("ok", "flaky", "json"))

    def res(agent, **params):
        return requests.get(f"{agent}/res.php", params={"key": secret, **params}, timeout=10).text

    def in_php(agent, **extra):
        data = {"key": secret, **TURNSTILE, **extra}
        return requests.post(f"{agent}/in.php", data=data, timeout=10).text

    def create(agent, **extra):
        body = {"clientKey": secret, "task": TASK, **extra}
        return requests.post(f"{agent}/createTask", json=body, timeout=10).json()

    # Not registered: refused on both protocols.
    assert in_php(a1, pingback=ok_url) == "ERROR_PINGBACK_NOT_REGISTERED"
    assert create(a1, callbackUrl=ok_url)["errorCode"] == "ERROR_PINGBACK_NOT_REGISTERED"
    # Registered through agent 0; refused forms and addresses are not stored.
    for url in (ok_url, flaky_url, json_url):
        assert res(a0, action="add_pingback", addr=url) == "OK"
    for bad in ("ftp://127.0.0.1/x", "http://10.0.0.1/x", "http://u:p@127.0.0.1/x"):
        assert res(a0, action="add_pingback", addr=bad) == "ERROR_BAD_PINGBACK_URL"
    assert in_php(a1, soft_id="abc") == "ERROR_BAD_PARAMETERS"
    # Agent 0 answered OK once its own copy held the change; agent 1 gets it with its next
    # config delta (no collector call per task).
    want = "OK|" + "|".join(sorted((ok_url, flaky_url, json_url)))
    assert res(a0, action="get_pingback") == want
    wait_until(lambda: res(a1, action="get_pingback") == want, timeout=10, what="delta")

    plain = in_php(a1, pingback=ok_url, soft_id="1234")
    flaky = in_php(a1, pingback=flaky_url)
    created = create(a1, callbackUrl=json_url, softId=77)
    polled = in_php(a1)
    assert all(t.startswith("OK|") for t in (plain, flaky, polled)) and created["errorId"] == 0
    plain, flaky, polled, task = plain[3:], flaky[3:], polled[3:], created["taskId"]

    wait_until(lambda: receiver.to("/ok") and receiver.to("/json"), timeout=15, what="pingbacks")
    [(kind, body)] = receiver.to("/ok")
    form = parse_qs(body.decode())
    assert kind == "application/x-www-form-urlencoded" and form["id"] == [plain]
    [code] = form["code"]
    [(kind, body)] = receiver.to("/json")
    sent = json.loads(body)
    assert kind == "application/json" and sent["taskId"] == task and sent["status"] == "ready"
    assert sent["errorId"] == 0 and sent["cost"] == COST and sent["solution"]["token"]
    wait_until(lambda: len(receiver.to("/flaky")) == 3, timeout=15, what="retries")

    # res.php after the pingback answers the same answer; charged once all the same. (Until
    # the agent has read the receiver's 200 the delivery is in flight: CAPCHA_NOT_READY.)
    wait_until(lambda: res(a1, action="get", id=plain) == f"OK|{code}", timeout=10, what="get")

    def result():
        body = {"clientKey": secret, "taskId": task}
        return requests.post(f"{a1}/getTaskResult", json=body, timeout=10).json()

    wait_until(lambda: result().get("solution") == sent["solution"], timeout=10, what="result")
    wait_until(lambda: res(a1, action="get2", id=polled) != "CAPCHA_NOT_READY", timeout=15,
               what="solved")  # fmt: skip
    answer, price = res(a1, action="get2", id=polled)[3:].rsplit("|", 1)
    assert price == COST and answer
    assert res(a1, action="get", id=flaky).startswith("OK|")

    # Four tasks, four charges; soft_id in the usage log.
    def settled():
        with stack.admin_client() as admin:
            return admin.summary()["successes"] == 4

    wait_until(settled, timeout=15, what="usage shipped")
    with stack.admin_client() as admin:
        summary = admin.summary()
        events = admin.solve_log(key="alice-web")["events"]
    balance = summary["keys"]["alice-web"]["balance_micros"]
    assert summary["usage_micros"] == 4 * micros(PRICE)
    assert balance == micros("1.00") - 4 * micros(PRICE)
    soft = {e["request_id"]: e["soft_id"] for e in events if e["status"] == "success"}
    assert soft == {plain: 1234, flaky: None, str(task): 77, polled: None}

    assert res(a0, action="del_pingback", addr="all") == "OK"
    wait_until(lambda: res(a1, action="get_pingback") == "OK|", timeout=10, what="deletion")
