"""Pingback URLs and bodies, unit level: the SSRF checks (IPv4, IPv6, IPv4 inside IPv6, numeric
hosts, the operator's allowed ranges), the retry schedule, the two body forms, soft_id, the
snapshot's pingback section, a POST answered with a redirect (not followed), and the sender's
retries and billing against the task store (POSTs stubbed)."""

from __future__ import annotations

import ipaddress
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs

import pytest

from solverfleet.agent.compat import answers, options, pingback, pingback_url
from solverfleet.agent.compat import solve as compat_solve
from solverfleet.agent.compat.methods import TaskSpec
from solverfleet.agent.compat.tasks import FAILED, SOLVED, Task, TaskStore
from solverfleet.agent.keystore import SnapshotError, apply_delta, parse_snapshot
from solverfleet.agent.settings import AgentSettings
from solverfleet.process import wait_until
from solverfleet.settings import SettingsError

pytestmark = pytest.mark.unit
LOOPBACK = pingback_url.parse_cidrs(["127.0.0.0/8"])


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com/",
        "javascript:alert(1)",
        "http://user:pw@example.com/",
        "http:///path",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "http://example.com/\x00",
        "http://exämple.com/",  # IDNA: send the punycode form
        "http://example.com/ü",  # percent-encode it
        "https://example.com/" + "a" * 2048,
    ],
)
def test_malformed_urls_are_refused(url):
    with pytest.raises(pingback_url.Refused):
        pingback_url.check_syntax(url)


def test_well_formed_urls_give_scheme_host_port():
    assert pingback_url.check_syntax("HTTPS://Example.com/cb?x=1") == ("https", "example.com", 443)
    assert pingback_url.check_syntax("http://[2001:db8::1]:8080/") == ("http", "2001:db8::1", 8080)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),  # loopback
        ("10.1.2.3", False),  # private
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # shared (carrier NAT)
        ("169.254.169.254", False),  # link-local: cloud metadata
        ("224.0.0.1", False),  # multicast
        ("240.0.0.1", False),  # reserved
        ("0.0.0.0", False),  # unspecified
        ("255.255.255.255", False),
        ("192.0.2.1", False),  # documentation
        ("::1", False),
        ("::", False),
        ("fe80::1", False),  # link-local
        ("fc00::1", False),  # unique local
        ("ff02::1", False),  # multicast
        ("::ffff:127.0.0.1", False),  # mapped loopback
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
    ],
)
def test_addresses(address, allowed):
    assert pingback_url.address_allowed(ipaddress.ip_address(address), ()) is allowed


def test_allowed_ranges_let_private_addresses_through_and_only_those():
    allow = pingback_url.parse_cidrs(["10.20.0.0/16", "fd00::/8"])
    ok = ("10.20.3.4", "fd00::5", "::ffff:10.20.0.1")
    for address in ok:
        assert pingback_url.address_allowed(ipaddress.ip_address(address), allow)
    for address in ("10.21.0.1", "127.0.0.1", "fe80::1"):
        assert not pingback_url.address_allowed(ipaddress.ip_address(address), allow)


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "127.1", "0177.0.0.1", "localhost", "[::1]", "0"]
)
def test_numeric_and_local_hosts_resolve_to_what_they_mean_and_are_refused(host):
    with pytest.raises(pingback_url.Refused, match="private or reserved"):
        pingback_url.check(f"http://{host}:8080/cb", ())


def test_the_checked_address_is_the_one_connected_to():
    assert str(pingback_url.check("http://2130706433:8080/cb", LOOPBACK)) == "127.0.0.1"


def test_a_bad_cidr_is_named():
    with pytest.raises(ValueError, match=r"not a CIDR: '10\.0\.0\.0/33'"):
        pingback_url.parse_cidrs(["10.0.0.0/8", "10.0.0.0/33"])
    with pytest.raises(SettingsError, match="pingback_allow_cidrs: not a CIDR: 'nope'"):
        AgentSettings(collector_url="http://c", fleet_token="t", pingback_allow_cidrs=("nope",))


def test_retry_schedule_doubles_up_to_a_minute():
    assert pingback.delays(2.0, 4) == [2.0, 4.0, 8.0, 16.0]
    assert pingback.delays(10.0, 5) == [10.0, 20.0, 40.0, 60.0, 60.0]
    assert pingback.delays(1.0, 0) == []


def _task(state, answer=None, json_form=False):
    spec = TaskSpec(
        "turnstile", "https://shop.test/", pingback="http://x/", pingback_json=json_form
    )
    task = Task("101000000000042", "k", spec, SimpleNamespace(price=2_500), "203.0.113.9", 0.0)
    task.state, task.answer = state, answer
    return task


def test_form_body_is_2captchas():
    body = pingback.form_body(_task(SOLVED, "to&ken =1"))
    assert parse_qs(body.decode()) == {"id": ["101000000000042"], "code": ["to&ken =1"]}
    failed = pingback.form_body(_task(FAILED))
    assert parse_qs(failed.decode())["code"] == [answers.UNSOLVABLE]


def test_json_body_is_get_task_results():
    assert json.loads(pingback.json_body(_task(SOLVED, "tok", json_form=True))) == {
        "errorId": 0,
        "taskId": 101000000000042,
        "status": "ready",
        "solution": {"token": "tok"},
        "cost": "0.0025",
        "ip": "203.0.113.9",
        "solveCount": 1,
    }
    failed = json.loads(pingback.json_body(_task(FAILED, json_form=True)))
    assert failed["errorId"] == 12 and failed["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert failed["taskId"] == 101000000000042


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (None, None),
        ("", None),
        ("1234", 1234),
        (" 7 ", 7),
        (0, 0),
        (2**31 - 1, 2**31 - 1),
        (2**31, answers.BAD_PARAMETERS),
        ("99999999999", answers.BAD_PARAMETERS),
        ("-1", answers.BAD_PARAMETERS),
        ("1e3", answers.BAD_PARAMETERS),
        (True, answers.BAD_PARAMETERS),
        (1.5, answers.BAD_PARAMETERS),
        ("١٢", answers.BAD_PARAMETERS),  # non-ASCII digits
    ],
)
def test_soft_id(value, want):
    assert options.soft_id(value) == want


def test_snapshot_carries_pingbacks_and_deltas_replace_them():
    snap = parse_snapshot(3, {"pingbacks": {"a:acme": ["https://a.test/cb"]}})
    assert snap.pingbacks == {"a:acme": frozenset({"https://a.test/cb"})}
    assert apply_delta(snap, 4, {}).pingbacks == snap.pingbacks  # untouched without a section
    assert apply_delta(snap, 5, {"pingbacks": {}}).pingbacks == {}
    with pytest.raises(SnapshotError):
        parse_snapshot(3, {"pingbacks": {"a:acme": "https://a.test/"}})


def test_owner_is_the_account_else_the_user():
    key = SimpleNamespace(account=None)
    assert options.owner(key, SimpleNamespace(account="acme", id="alice")) == "a:acme"
    assert options.owner(key, SimpleNamespace(account=None, id="alice")) == "u:alice"
    assert (
        options.owner(SimpleNamespace(account="k"), SimpleNamespace(account="u", id="x")) == "a:k"
    )


def test_a_redirect_is_not_followed():
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cb?x=1"
        conn = pingback_url.connect(url, LOOPBACK, 5.0)
        try:
            assert conn.post(b"id=1&code=x", pingback.FORM) == 302
        finally:
            conn.close()
        assert hits == ["/cb?x=1"]
        with pytest.raises(pingback_url.Refused):  # without the allowed range: refused
            pingback_url.connect(url, (), 5.0)
        assert hits == ["/cb?x=1"]
    finally:
        server.shutdown()
        server.server_close()


# ---- the sender and billing: one charge, on the first delivery -------------------------------


class FakeAgent:
    """What Sender and solve.charge use: settings, the task store, the spool, the limiter."""

    def __init__(self, tmp_path, retries):
        self.settings = AgentSettings(
            collector_url="http://c", fleet_token="t", agent_id="a1",
            pingback_retries=retries, pingback_backoff=0.01,
        )  # fmt: skip
        self.tasks = TaskStore(42, 600.0, 10)
        self.spool = SimpleNamespace(events=[], append=lambda e: self.spool.events.append(e))
        self.limiter = SimpleNamespace(
            commits=[], commit=lambda hold: self.limiter.commits.append(hold)
        )
        self.sender = pingback.Sender(self)

    def solved_task(self):
        key = SimpleNamespace(id="k", account="acme", project=None, environment=None)
        user = SimpleNamespace(id="alice", email=None, account="acme")
        decision = SimpleNamespace(key=key, user=user, price=2_500, hold="hold-1")
        spec = TaskSpec("turnstile", "https://shop.test/", pingback="http://127.0.0.1:9/cb")
        task = self.tasks.add(lambda i: Task(i, "k", spec, decision, "203.0.113.9", 0.0))
        self.tasks.finish(task, True, "tok", 5)
        return task


class FakeConnection:
    def __init__(self, outcome, calls):
        self.outcome, self.calls = outcome, calls

    def post(self, body, content_type):
        self.calls.append(body)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def close(self):
        pass


def _receiver(monkeypatch, outcomes):
    """pingback_url.connect giving ``outcomes`` in turn: ConnectionRefusedError fails the
    connection (nothing sent), any other exception the POST, an int is the POST's status."""
    attempts, sent = [], []

    def connect(url, allow, timeout):
        outcome = outcomes[min(len(attempts), len(outcomes) - 1)]
        attempts.append(url)
        if isinstance(outcome, ConnectionRefusedError):
            raise outcome
        return FakeConnection(outcome, sent)

    monkeypatch.setattr(pingback_url, "connect", connect)
    return attempts, sent


def test_retried_until_2xx_charged_once_when_first_sent(tmp_path, monkeypatch):
    agent = FakeAgent(tmp_path, retries=3)
    attempts, sent = _receiver(monkeypatch, [ConnectionRefusedError(), 500, 204])
    task = agent.solved_task()
    agent.sender.enqueue(task)
    wait_until(lambda: agent.sender.sent == 1, timeout=5, what="a 2xx")
    assert len(attempts) == 3 and len(sent) == 2 and task.delivered
    assert agent.limiter.commits == ["hold-1"] and len(agent.spool.events) == 1
    assert agent.spool.events[0]["cost_micros"] == 2_500
    assert compat_solve.deliver(agent, task) == (True, "tok")  # free now
    assert len(agent.spool.events) == 1 and agent.limiter.commits == ["hold-1"]


def test_an_unreachable_receiver_is_never_charged(tmp_path, monkeypatch):
    agent = FakeAgent(tmp_path, retries=1)
    attempts, sent = _receiver(monkeypatch, [ConnectionRefusedError()])
    task = agent.solved_task()
    agent.sender.enqueue(task)
    wait_until(lambda: agent.sender.failed == 1, timeout=5, what="given up")
    assert len(attempts) == 2 and sent == [] and not task.delivered
    assert agent.spool.events == [] and agent.limiter.commits == []
    assert compat_solve.deliver(agent, task) == (True, "tok")  # the first poll charges
    assert compat_solve.deliver(agent, task) == (True, "tok")
    assert len(agent.spool.events) == 1 and agent.limiter.commits == ["hold-1"]


def test_a_receiver_that_was_sent_the_answer_pays_once_whatever_it_replied(tmp_path, monkeypatch):
    agent = FakeAgent(tmp_path, retries=2)
    _, sent = _receiver(monkeypatch, [503, TimeoutError(), 302])
    task = agent.solved_task()
    agent.sender.enqueue(task)
    wait_until(lambda: agent.sender.failed == 1, timeout=5, what="given up")
    assert len(sent) == 3 and task.delivered and agent.sender.sent == 0
    assert len(agent.spool.events) == 1 and agent.limiter.commits == ["hold-1"]
    assert compat_solve.deliver(agent, task) == (True, "tok")
    assert len(agent.spool.events) == 1


def test_a_poll_during_the_post_gets_the_answer_free(tmp_path, monkeypatch):
    agent = FakeAgent(tmp_path, retries=0)
    gate, entered = threading.Event(), threading.Event()

    class Slow(FakeConnection):
        def post(self, body, content_type):
            entered.set()
            gate.wait(5)
            return 200

    monkeypatch.setattr(pingback_url, "connect", lambda *a: Slow(200, []))
    task = agent.solved_task()
    agent.sender.enqueue(task)
    assert entered.wait(5)
    assert compat_solve.deliver(agent, task) == (True, "tok")  # recorded before it was sent
    gate.set()
    wait_until(lambda: agent.sender.sent == 1, timeout=5, what="sent")
    assert len(agent.spool.events) == 1


def test_a_failed_task_is_posted_free(tmp_path, monkeypatch):
    agent = FakeAgent(tmp_path, retries=0)
    _, sent = _receiver(monkeypatch, [200])
    task = agent.solved_task()
    task.state, task.answer = FAILED, None
    agent.sender.enqueue(task)
    wait_until(lambda: agent.sender.sent == 1, timeout=5, what="sent")
    assert parse_qs(sent[0].decode())["code"] == [answers.UNSOLVABLE]
    assert agent.spool.events == [] and not task.delivered
