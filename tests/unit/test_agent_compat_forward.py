"""res.php anywhere (agent/compat/forward.py) in-process: two agents on one fake collector,
their peer HTTP replaced by each other's Flask test client (with the forwarded header)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from solverfleet.agent import agent_of
from solverfleet.agent.compat import forward
from solverfleet.agent.compat.forward import FORWARDED, LOCAL, UNKNOWN, Reply, node_of, route
from solverfleet.agent.compat.tasks import SUFFIX_DIGITS
from solverfleet.process import wait_until
from tests.support.fake_collector import (  # noqa: F401
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)
from tests.support.tls import TestCA
from tests.unit.test_agent_compat import Env

OWNER, OTHER = "https://owner.test:8600", "https://other.test:8600"


def test_node_of_and_route():
    own = 42 * 10**SUFFIX_DIGITS + 7
    assert node_of(str(own)) == 42 and node_of("7" * SUFFIX_DIGITS) is None
    peers = {43: OWNER}
    assert route(str(own), 42, peers, False) == LOCAL
    assert route(str(43 * 10**SUFFIX_DIGITS + 1), 42, peers, False) == OWNER
    assert route(str(44 * 10**SUFFIX_DIGITS + 1), 42, peers, False) == UNKNOWN
    assert route(str(43 * 10**SUFFIX_DIGITS + 1), 42, peers, True) == LOCAL  # never twice
    assert route("12", 42, peers, False) == LOCAL  # no node id: answered here (wrong id)


class PeerStub:
    """In place of forward.Peers: posts to another app's test client; ``down``: unreachable."""

    def __init__(self, apps: dict[str, object]) -> None:
        self.apps = apps
        self.down: set[str] = set()
        self.calls: list[tuple[str, dict]] = []

    def ask(self, url, client_ip, **body):
        base, _, path = url.partition(".test:8600")
        base += ".test:8600"
        self.calls.append((path, body))
        if base in self.down:
            return None
        headers = {FORWARDED: "1", "X-Forwarded-For": client_ip}
        resp = self.apps[base].test_client().post(path, headers=headers, **body)
        if resp.status_code != 200:
            return None
        return Reply(resp.get_data(), resp.content_type)

    def close(self):
        pass


@pytest.fixture
def pair(tmp_path, fake_collector, fake_worker):  # noqa: F811
    """(this agent's env, the owner's env): node 42 asks node 43."""
    owner = Env(tmp_path / "owner", fake_collector, fake_worker)
    owner.start(stub=True, node_id=43, agent_id="owner-agent")
    here = Env(tmp_path / "here", fake_collector, fake_worker)
    here.secrets = owner.secrets
    here.start(node_id=42, agent_id="here-agent")
    peers = PeerStub({OWNER: owner.apps[0], OTHER: here.apps[0]})
    here.agent.peers = owner.agent.peers = peers
    here.agent.loop.peers = {43: OWNER}
    yield here, owner, peers
    here.close()
    owner.close()


def test_another_agents_task_is_fetched_and_charged_once_by_its_owner(pair):
    here, owner, peers = pair
    task_id = owner.task_id()
    assert node_of(task_id) == 43
    assert here.answer(task_id) == "OK|token-for-turnstile"
    assert here.get(task_id, json="1") == {"status": 1, "request": "token-for-turnstile"}
    assert owner.get(task_id) == "OK|token-for-turnstile"
    [event] = owner.shipped(1)
    assert (event["request_id"], event["status"], event["cost_micros"]) == (
        task_id, "success", 2000)  # fmt: skip
    assert event["agent_id"] == "owner-agent"  # the owner's hold, the owner's usage
    assert here.get(task_id, "bob-web") == "ERROR_WRONG_CAPTCHA_ID"  # the owner checks the key
    assert all(FORWARDED not in str(body) for _, body in peers.calls)


def test_ids_mix_tasks_of_several_agents_in_order(pair):
    here, owner, peers = pair
    theirs, mine = owner.task_id(), here.task_id()
    owner.answer(theirs)
    here.answer(mine)
    owner.stub.gate.clear()
    pending = owner.task_id()
    unknown = str(44 * 10**SUFFIX_DIGITS + 5)
    ids = ",".join([pending, mine, unknown, theirs])
    text = here.call("/res.php", action="get", ids=ids)
    assert text == ("CAPCHA_NOT_READY|token-for-turnstile|ERROR_WRONG_CAPTCHA_ID|"
                    "token-for-turnstile")  # fmt: skip
    assert len([c for c in peers.calls if c[1]["data"].get("ids")]) == 1  # one call per owner
    peers.down.add(OWNER)
    text = here.call("/res.php", action="get", ids=ids, json="1")
    assert text == {"status": 1, "request": "CAPCHA_NOT_READY|token-for-turnstile|"
                    "ERROR_WRONG_CAPTCHA_ID|CAPCHA_NOT_READY"}  # fmt: skip
    owner.stub.gate.set()


def test_an_answer_holding_a_pipe_is_fetched_one_at_a_time(pair, monkeypatch):
    here, owner, _ = pair
    task_id = owner.task_id()
    owner.answer(task_id)
    monkeypatch.setattr(owner.agent.tasks.get(task_id), "answer", "a|b")
    mine = here.task_id()
    here.answer(mine)
    assert here.call("/res.php", action="get", ids=f"{task_id},{mine}") == (
        "a|b|token-for-turnstile")  # fmt: skip


def test_unreachable_or_unknown_owner(pair):
    here, owner, peers = pair
    task_id = owner.task_id()
    peers.down.add(OWNER)
    assert here.get(task_id) == "CAPCHA_NOT_READY"  # known node, down: poll again
    assert here.get(task_id, json="1") == {"status": 0, "request": "CAPCHA_NOT_READY"}
    assert here.call("/res.php", action="reportbad", id=task_id) == "REPORT_NOT_RECORDED"
    here.agent.loop.peers = {}
    assert here.get(task_id) == "ERROR_WRONG_CAPTCHA_ID"  # no live agent has node 43
    assert owner.collector.successes() == []


def test_json_get_task_result_is_forwarded(pair):
    here, owner, peers = pair
    task_id = int(owner.task_id())
    body = {"clientKey": here.secrets["alice-web"], "taskId": task_id}

    def ready():
        answer = here.client.post("/getTaskResult", json=body).get_json()
        return answer if answer.get("status") == "ready" else None

    got = wait_until(ready, timeout=10, what="the owner's task ready")
    assert got["status"] == "ready" and got["cost"] == "0.002", got
    assert got["solution"]["token"] == "token-for-turnstile"
    peers.down.add(OWNER)
    assert here.client.post("/getTaskResult", json=body).get_json() == {
        "errorId": 0, "status": "processing"}  # fmt: skip
    here.agent.loop.peers = {}
    assert here.client.post("/getTaskResult", json=body).get_json()["errorCode"] == (
        "ERROR_NO_SUCH_CAPCHA_ID")  # fmt: skip
    [event] = owner.shipped(1)
    assert event["cost_micros"] == 2000


def test_a_forwarded_request_to_an_agent_without_key_data_is_503(pair, monkeypatch):
    _, owner, _ = pair
    monkeypatch.setattr(owner.agent.keystore, "snapshot", None)
    resp = owner.client.post("/res.php", headers={FORWARDED: "1"}, data={"action": "get"})
    assert resp.status_code == 503
    assert forward.unready(owner.agent, {}) is None  # a client's own request: protocol text


def test_a_stopping_owner_hands_its_tasks_over(pair):
    here, owner, _ = pair
    task_id = owner.task_id()
    owner.answer(task_id)
    agent_of(owner.apps[0]).tasks.take_for_restart()  # what the stop hook does first
    assert here.get(task_id) == "CAPCHA_NOT_READY"  # 503 from the owner: poll again
    assert owner.get(task_id) == "CAPCHA_NOT_READY"  # directly too
    body = {"clientKey": owner.secrets["alice-web"], "taskId": int(task_id)}
    assert owner.client.post("/getTaskResult", json=body).get_json() == {
        "errorId": 0, "status": "processing"}  # fmt: skip


def test_peers_client_never_follows_redirects():
    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    peers = forward.Peers("", 2.0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/res.php"
        assert peers.ask(url, "10.0.0.1", data={}) is None  # a 302 is no answer
        assert peers.ask("http://127.0.0.1:9/res.php", "10.0.0.1", data={}) is None  # refused
    finally:
        peers.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("https://10.0.0.1:8600/", True),
        ("http://solver1:8600", True),
        ("", True),
        ("10.0.0.1:8600", False),
        ("https://10.0.0.1:8600/agent", False),
        ("https://user@10.0.0.1", False),
    ],
)
def test_advertise_url_setting(tmp_path, value, ok):
    from solverfleet.settings import SettingsError

    if ok:
        settings = agent_settings(tmp_path, "http://127.0.0.1:9", advertise_url=value)
        assert settings.advertise_url == value.rstrip("/")
    else:
        with pytest.raises(SettingsError, match="advertise_url"):
            agent_settings(tmp_path, "http://127.0.0.1:9", advertise_url=value)
    tls = tmp_path / "tls"
    tls.mkdir(exist_ok=True)
    cert, key = TestCA(tls).server("agent", "127.0.0.1")
    with pytest.raises(SettingsError, match="advertise_url: must be https"):
        agent_settings(tmp_path, "http://127.0.0.1:9", advertise_url="http://a:1",
                       tls_cert_file=str(cert), tls_key_file=str(key))  # fmt: skip
    with pytest.raises(SettingsError, match="peer_timeout"):
        agent_settings(tmp_path, "http://127.0.0.1:9", peer_timeout=0)


def test_a_kept_pingback_is_sent_by_the_next_process():
    """persist.py: soft_id and the pingback URL survive the file; a restored, undelivered
    answer with a pingback is queued again (charged when sent, after its new hold)."""
    from types import SimpleNamespace

    from solverfleet.agent.compat import persist
    from solverfleet.agent.compat.methods import TaskSpec
    from solverfleet.agent.compat.tasks import SOLVED, Task, TaskStore

    user, key = SimpleNamespace(id="alice"), SimpleNamespace(id="alice-web", user_id="alice")
    decision = SimpleNamespace(user=user, price=2000)
    spec = TaskSpec("turnstile", "https://a.test/", soft_id=4580, pingback="https://cb.test/x",
                    pingback_json=True)  # fmt: skip
    task = Task("42000000000001", "alice-web", spec, decision, "10.0.0.1", 0.0)
    task.state, task.answer, task.expires = SOLVED, "token", 1060.0
    rec = persist.record(task, now_wall=5000.0, now_mono=1000.0)
    assert rec["expires_at"] == 5060.0 and rec["soft_id"] == 4580
    queued = []
    agent = SimpleNamespace(
        keystore=SimpleNamespace(snapshot=SimpleNamespace(keys={"alice-web": key},
                                                          users={"alice": user})),
        tasks=TaskStore(42, ttl=600, cap=10),
        pingbacks=SimpleNamespace(enqueue=queued.append),
    )  # fmt: skip
    rec["expires_at"] = time.time() + 60
    assert persist.restore(agent, [rec, {**rec, "id": "42000000000002", "pingback": None}]) == []
    [again] = queued
    assert again.restored and again.spec.pingback == "https://cb.test/x"
    assert (again.spec.soft_id, again.spec.pingback_json, again.answer) == (4580, True, "token")
    assert agent.tasks.get("42000000000002").restored  # polled for, not pinged
