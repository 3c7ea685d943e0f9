"""The 2captcha-style surface in-process: Flask test client, fake collector, worker stand-ins.

Every answer is HTTP 200; each error text and success form is checked in text and JSON.
Expiry runs on a driven clock; waits are conditions with deadlines, never sleeps.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from pathlib import Path

import pytest

from solverfleet.agent import agent_of, create_app
from solverfleet.agent.compat.tasks import SUFFIX_DIGITS, id_pattern
from solverfleet.agent.workerclient import WorkerOutcome
from solverfleet.process import wait_until
from tests.support.fake_collector import (  # noqa: F401
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)

NOW = 1_765_555_530.0  # pinned wall clock: CPM windows and days do not roll
PAGE = "https://shop.example/login"
TURNSTILE = {"method": "turnstile", "sitekey": "0x4AAAAAAA", "pageurl": PAGE}
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2  # 520 bytes


class StubWorker:
    """In place of the HTTP worker: holds calls at a gate, fails on demand."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False
        self.bodies: list[dict] = []

    def solve(self, body, request_id):
        self.bodies.append(body)
        self.gate.wait(10)
        if self.fail:
            return WorkerOutcome(False, error="worker_failed", message="failed on purpose")
        return WorkerOutcome(True, result=f"token-for-{body['type']}")

    def close(self):
        pass


class Env:
    def __init__(self, tmp_path, collector, worker):
        self.tmp_path, self.collector, self.worker = tmp_path, collector, worker
        self.secrets = standard_setup(collector)
        for slug in ("recaptcha-v3", "hcaptcha", "funcaptcha", "geetest", "image-to-text"):
            collector.set_price(slug, 1000)
        self.apps = []
        self.now = [1000.0]  # the task store's monotonic clock, driven by tests

    def start(self, stub=False, **overrides):
        overrides.setdefault("worker_url", self.worker.url)
        overrides.setdefault("node_id", 42)
        app = create_app(agent_settings(self.tmp_path, self.collector.url, **overrides))
        self.apps.append(app)
        self.agent = agent_of(app)
        self.agent.clock = lambda: NOW
        self.agent.tasks.clock = lambda: self.now[0]
        if stub:
            self.agent.worker = self.stub = StubWorker()
        self.client = app.test_client()
        wait_until(lambda: self.client.get("/readyz").status_code == 200, timeout=10,
                   what="agent ready")  # fmt: skip
        return self

    def call(self, path, key_id="alice-web", http="post", **fields):
        if key_id is not None:
            fields.setdefault("key", self.secrets.get(key_id, key_id))
        if http == "get":
            resp = self.client.get(path, query_string=fields)
        else:
            resp = self.client.post(path, data=fields)
        assert resp.status_code == 200, resp.status_code  # never 4xx/5xx on this surface
        text = resp.get_data(as_text=True)
        return json.loads(text) if fields.get("json") == "1" else text

    def submit(self, key_id="alice-web", **fields):
        return self.call("/in.php", key_id, **{**TURNSTILE, **fields})

    def task_id(self, key_id="alice-web", **fields):
        text = self.submit(key_id, **fields)
        assert text.startswith("OK|"), text
        return text[3:]

    def get(self, task_id, key_id="alice-web", **fields):
        return self.call("/res.php", key_id, action="get", id=task_id, **fields)

    def answer(self, task_id, key_id="alice-web", **fields):
        """Poll like a client until the task is no longer CAPCHA_NOT_READY."""
        box = {}

        def done():
            box["r"] = self.get(task_id, key_id, **fields)
            return "CAPCHA_NOT_READY" not in str(box["r"])

        wait_until(done, timeout=10, interval=0.01, what=f"task {task_id} finished")
        return box["r"]

    def balance(self, key_id="alice-web"):
        return self.call("/res.php", key_id, action="getbalance")

    def shipped(self, count):
        wait_until(lambda: len(self.collector.events) >= count, timeout=10,
                   what=f"{count} events at the collector")  # fmt: skip
        return list(self.collector.events.values())

    def close(self):
        for app in self.apps:
            agent = agent_of(app)
            if hasattr(agent.worker, "gate"):
                agent.worker.gate.set()
            agent.shutdown(drain_grace=2, ship_timeout=1)
            agent.close()


@pytest.fixture
def env(tmp_path, fake_collector, fake_worker):  # noqa: F811
    env = Env(tmp_path, fake_collector, fake_worker)
    yield env
    env.close()


@pytest.fixture
def ready(env):
    return env.start()


@pytest.fixture
def stubbed(env):
    return env.start(stub=True)


def as_json(ok, text):
    return {"status": 1 if ok else 0, "request": text}


# ---- success forms ---------------------------------------------------------------------------


def test_round_trip_text_charges_once_on_first_delivery(ready):
    assert ready.balance() == "1.00"
    task_id = ready.task_id()
    assert re.fullmatch(id_pattern(42), task_id) and len(task_id) == 2 + SUFFIX_DIGITS
    assert ready.answer(task_id) == "OK|token-for-turnstile"
    assert ready.balance() == "0.998"
    assert ready.get(task_id) == "OK|token-for-turnstile"  # again: same answer, no charge
    assert ready.balance() == "0.998"
    [event] = ready.shipped(1)
    assert (event["request_id"], event["type"], event["url"], event["status"],
            event["cost_micros"], event["key_id"]) == (
        task_id, "turnstile", PAGE, "success", 2000, "alice-web")  # fmt: skip
    assert ready.collector.balance("alice-web") == 998_000


def test_round_trip_json_and_get_requests(ready):
    submitted = ready.call("/in.php", http="get", json="1", **TURNSTILE)
    assert submitted["status"] == 1 and re.fullmatch(id_pattern(42), submitted["request"])
    task_id = submitted["request"]
    assert ready.answer(task_id, json="1", http="get") == as_json(1, "token-for-turnstile")
    balance = ready.call("/res.php", action="getbalance", json="1", http="get")
    assert balance == as_json(1, "0.998")


def test_not_ready_then_answer(stubbed):
    stubbed.stub.gate.clear()
    task_id = stubbed.task_id()
    assert stubbed.get(task_id) == "CAPCHA_NOT_READY"
    assert stubbed.get(task_id, json="1") == as_json(0, "CAPCHA_NOT_READY")
    stubbed.stub.gate.set()
    assert stubbed.answer(task_id) == "OK|token-for-turnstile"


@pytest.mark.parametrize(
    ("fields", "slug", "params"),
    [
        ({"method": "userrecaptcha", "googlekey": "6Le-abc_1", "pageurl": PAGE},
         "recaptcha-v2", {"sitekey": "6Le-abc_1"}),
        ({"method": "userrecaptcha", "version": "v3", "googlekey": "6Lx", "pageurl": PAGE,
          "action": "login", "min_score": "0.7"},
         "recaptcha-v3", {"sitekey": "6Lx", "action": "login", "min_score": "0.7"}),
        ({"method": "hcaptcha", "sitekey": "abc-123", "pageurl": PAGE}, "hcaptcha",
         {"sitekey": "abc-123"}),
        ({"method": "funcaptcha", "publickey": "ABCD-EF", "pageurl": PAGE, "surl": "https://x"},
         "funcaptcha", {"sitekey": "ABCD-EF", "surl": "https://x"}),
        ({"method": "geetest", "gt": "g1", "challenge": "c1", "pageurl": PAGE}, "geetest",
         {"gt": "g1", "challenge": "c1"}),
        ({"method": "base64", "body": base64.b64encode(IMAGE).decode(), "numeric": "1"},
         "image-to-text", {"body": base64.b64encode(IMAGE).decode(), "numeric": "1"}),
    ],
)  # fmt: skip
def test_methods_reach_the_worker_as_slugs(stubbed, fields, slug, params):
    task_id = stubbed.task_id(**{"method": None, **fields})
    assert stubbed.answer(task_id) == f"OK|token-for-{slug}"
    [body] = stubbed.stub.bodies
    assert body["type"] == slug and body["params"] == params


def test_multipart_image_upload(stubbed):
    data = {"key": stubbed.secrets["alice-web"], "method": "post", "file": (_io(IMAGE), "c.png")}
    resp = stubbed.client.post("/in.php", data=data, content_type="multipart/form-data")
    assert resp.status_code == 200 and resp.get_data(as_text=True).startswith("OK|")
    assert stubbed.answer(resp.get_data(as_text=True)[3:]) == "OK|token-for-image-to-text"
    assert base64.b64decode(stubbed.stub.bodies[0]["params"]["body"]) == IMAGE
    assert stubbed.stub.bodies[0]["url"] == ""


def _io(data):
    import io

    return io.BytesIO(data)


def test_ids_answers_several_tasks_pipe_separated(stubbed):
    first, second = stubbed.task_id(), stubbed.task_id()
    stubbed.answer(first)
    stubbed.stub.gate.clear()
    pending = stubbed.task_id()
    ids = f"{first},{second},{pending},{42 * 10**12 + 1}"
    wait_until(lambda: stubbed.get(second) != "CAPCHA_NOT_READY", timeout=5, what="second")
    text = stubbed.call("/res.php", action="get", ids=ids)
    assert text == ("token-for-turnstile|token-for-turnstile|CAPCHA_NOT_READY|"
                    "ERROR_WRONG_CAPTCHA_ID")  # fmt: skip
    assert stubbed.call("/res.php", action="get", ids=ids, json="1") == as_json(1, text)
    stubbed.stub.gate.set()


def test_report_good_and_bad_are_logged(ready):
    good, bad = ready.task_id(), ready.task_id()
    assert ready.call("/res.php", action="reportbad", id=bad) == "ERROR_WRONG_CAPTCHA_ID"
    ready.answer(good)
    ready.answer(bad)
    assert ready.call("/res.php", action="reportgood", id=good) == "OK_REPORT_RECORDED"
    assert ready.call("/res.php", action="reportbad", id=bad, json="1") == as_json(
        1, "OK_REPORT_RECORDED")  # fmt: skip
    assert ready.call("/res.php", action="reportbad", id=bad) == "ERROR_DUPLICATE_REPORT"
    events = ready.shipped(4)
    kinds = Counter((e["status"], e["request_id"], e["cost_micros"]) for e in events)
    assert kinds == {("success", good, 2000): 1, ("success", bad, 2000): 1,
                     ("report_good", good, 0): 1, ("report_bad", bad, 0): 1}  # fmt: skip
    assert ready.collector.balance("alice-web") == 1_000_000 - 4000


# ---- money -------------------------------------------------------------------------------------


def test_failed_task_is_unsolvable_and_costs_nothing(stubbed):
    stubbed.stub.fail = True
    task_id = stubbed.task_id()
    assert stubbed.answer(task_id) == "ERROR_CAPTCHA_UNSOLVABLE"
    assert stubbed.get(task_id, json="1") == as_json(0, "ERROR_CAPTCHA_UNSOLVABLE")
    assert stubbed.balance() == "1.00"
    [event] = stubbed.shipped(1)
    assert (event["status"], event["error"], event["cost_micros"]) == ("failed", "worker_failed", 0)


def test_usage_is_on_disk_before_the_delivering_answer(ready):
    ready.collector.usage_down = True  # nothing leaves the spool
    task_id = ready.task_id()
    wait_until(lambda: ready.agent.tasks.get(task_id).state == "solved", timeout=5, what="solved")
    spool = ready.tmp_path / "agent-state" / "spool"

    def spooled():
        return [json.loads(x) for f in spool.glob("*.jsonl") for x in f.read_text().splitlines()]

    assert spooled() == []  # solved but not delivered: nothing owed yet
    assert ready.get(task_id) == "OK|token-for-turnstile"
    assert [(e["request_id"], e["status"]) for e in spooled()] == [(task_id, "success")]


def test_concurrent_polls_charge_once(ready):
    task_id = ready.task_id()
    wait_until(lambda: ready.agent.tasks.get(task_id).state == "solved", timeout=5, what="solved")
    answers = []

    def poll():
        client = ready.apps[0].test_client()
        for _ in range(5):
            answers.append(client.get("/res.php", query_string={
                "key": ready.secrets["alice-web"], "action": "get", "id": task_id,
            }).get_data(as_text=True))  # fmt: skip

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert set(answers) <= {"OK|token-for-turnstile", "CAPCHA_NOT_READY"}
    assert ready.shipped(1) and len(ready.collector.successes()) == 1
    assert ready.balance() == "0.998"


def test_undelivered_answer_expires_uncharged(ready):
    task_id = ready.task_id()
    wait_until(lambda: ready.agent.tasks.get(task_id).state == "solved", timeout=5, what="solved")
    lease = ready.agent.limiter.balance["alice-web"]
    ready.now[0] += 599
    assert ready.get(task_id, "bob-web") == "ERROR_WRONG_CAPTCHA_ID"  # a sweep: not yet due
    assert lease.holds == 2000  # the price stays held while the answer waits
    ready.now[0] += 2  # past compat_result_ttl (600 s)
    assert ready.get(task_id) == "ERROR_WRONG_CAPTCHA_ID"
    assert lease.holds == 0 and ready.balance() == "1.00"  # the hold went back
    [event] = ready.shipped(1)
    assert (event["status"], event["error"], event["cost_micros"]) == ("failed", "not_delivered", 0)
    assert len(ready.agent.tasks) == 0


def test_delivered_answer_expires_after_the_ttl(env):
    env.start(compat_result_ttl=30)
    task_id = env.task_id()
    assert env.answer(task_id) == "OK|token-for-turnstile"
    env.now[0] += 29
    assert env.get(task_id) == "OK|token-for-turnstile"
    env.now[0] += 2
    assert env.get(task_id) == "ERROR_WRONG_CAPTCHA_ID"
    assert env.get(task_id, json="1") == as_json(0, "ERROR_WRONG_CAPTCHA_ID")
    env.shipped(1)
    assert len(env.collector.successes()) == 1


def test_task_cap_gives_no_slot_and_frees_with_expiry(env):
    env.start(stub=True, compat_max_tasks=2)
    env.task_id()
    env.task_id()
    assert env.submit() == "ERROR_NO_SLOT_AVAILABLE"
    assert env.submit(json="1") == as_json(0, "ERROR_NO_SLOT_AVAILABLE")
    wait_until(lambda: env.agent.in_flight == 0, timeout=5, what="solves done")
    env.now[0] += 601
    assert env.submit().startswith("OK|")


def test_graceful_restart_keeps_an_undelivered_answer_charged_once(env):
    env.start(stub=True)
    task_id = env.task_id()
    wait_until(lambda: env.agent.tasks.get(task_id).state == "solved", timeout=5, what="solved")
    env.stub.fail = True
    failed_id = env.task_id()
    wait_until(lambda: env.agent.in_flight == 0, timeout=5, what="solves done")
    first = env.apps.pop()
    agent_of(first).shutdown()
    assert env.collector.leased("alice-web") == 0  # the hold released, the lease returned
    assert env.collector.successes() == []  # nothing charged at stop
    kept = Path(agent_of(first).settings.state_dir) / "compat-tasks.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    # The stopping process delivers no more; the task waits for the next one.
    assert env.get(task_id) == "CAPCHA_NOT_READY"
    assert env.call("/res.php", action="get", ids=f"{task_id},{failed_id}") == (
        "CAPCHA_NOT_READY|CAPCHA_NOT_READY")  # fmt: skip
    agent_of(first).close()
    env.start()
    assert not kept.exists()  # read once: a crash now loses answers, never charges them
    assert env.answer(task_id) == "OK|token-for-turnstile"  # a new hold, then the charge
    assert env.get(task_id) == "OK|token-for-turnstile"  # again: free
    assert env.get(failed_id) == "ERROR_CAPTCHA_UNSOLVABLE"
    env.shipped(2)  # the failure (free), the success
    [event] = env.collector.successes()
    assert (event["request_id"], event["cost_micros"]) == (task_id, 2000)
    assert env.collector.balance("alice-web") == 998_000


def test_restart_under_another_node_id_drops_kept_tasks(env):
    env.start()
    task_id = env.task_id()
    assert env.answer(task_id) == "OK|token-for-turnstile"
    second = env.task_id()
    wait_until(lambda: env.agent.tasks.get(second).state == "solved", timeout=5, what="solved")
    first = env.apps.pop()
    agent_of(first).shutdown()
    agent_of(first).close()
    env.start(node_id=43)  # these ids would not route here any more
    assert env.get(second) == "ERROR_WRONG_CAPTCHA_ID"
    assert len(env.collector.successes()) == 1


def test_an_unreadable_kept_tasks_file_is_dropped(env, tmp_path):
    kept = tmp_path / "agent-state" / "compat-tasks.json"
    kept.parent.mkdir(parents=True)
    kept.write_text('{"format": 1, "node_id": 42, "tasks": 7}')
    env.start()
    assert not kept.exists() and len(env.agent.tasks) == 0 and env.agent.tasks.kept == []
    assert env.get(str(42 * 10**SUFFIX_DIGITS + 1)) == "ERROR_WRONG_CAPTCHA_ID"


def test_other_keys_cannot_see_a_task(ready):
    task_id = ready.task_id()
    ready.answer(task_id)
    assert ready.get(task_id, "bob-web") == "ERROR_WRONG_CAPTCHA_ID"


# ---- every error text, in text and JSON ------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["text", "json"])
def json_mode(request):
    return request.param


def check(env, text_or_json, expected, json_mode):
    assert text_or_json == (as_json(0, expected) if json_mode else expected)


def flags(json_mode):
    return {"json": "1"} if json_mode else {}


@pytest.mark.parametrize(
    ("key_id", "fields", "expected"),
    [
        (None, {}, "ERROR_WRONG_USER_KEY"),
        ("has space", {}, "ERROR_WRONG_USER_KEY"),
        ("sk_never_issued", {}, "ERROR_KEY_DOES_NOT_EXIST"),
        ("alice-off", {}, "ERROR_KEY_DOES_NOT_EXIST"),
        ("carol-web", {}, "ERROR_KEY_DOES_NOT_EXIST"),  # deactivated user
        ("alice-ip", {}, "ERROR_IP_NOT_ALLOWED"),
        ("alice-typed", {}, "ERROR_BAD_PARAMETERS"),  # type not allowed for the key
        ("alice-web", {"method": None}, "ERROR_BAD_PARAMETERS"),
        ("alice-web", {"method": "keycaptcha"}, "ERROR_BAD_PARAMETERS"),
        ("alice-web", {"pageurl": None}, "ERROR_PAGEURL"),
        ("alice-web", {"pageurl": "ftp://x.test/"}, "ERROR_PAGEURL"),
        ("alice-web", {"pageurl": "https://x.test/" + "a" * 4096}, "ERROR_PAGEURL"),
        ("alice-web", {"method": "userrecaptcha"}, "ERROR_GOOGLEKEY"),
        ("alice-web", {"method": "userrecaptcha", "googlekey": "bad key"}, "ERROR_GOOGLEKEY"),
        ("alice-web", {"method": "post"}, "ERROR_ZERO_CAPTCHA_FILESIZE"),
        ("alice-web", {"method": "base64", "body": "aGk="}, "ERROR_ZERO_CAPTCHA_FILESIZE"),
        ("alice-web", {"method": "base64", "body": "!!"}, "ERROR_BAD_PARAMETERS"),
        ("alice-web", {"method": "base64", "body": "QUFB" * 40_000},
         "ERROR_TOO_BIG_CAPTCHA_FILESIZE"),
    ],
)  # fmt: skip
def test_in_php_errors(ready, json_mode, key_id, fields, expected):
    fields = {k: v for k, v in {**TURNSTILE, **fields, **flags(json_mode)}.items() if v}
    check(ready, ready.call("/in.php", key_id, **fields), expected, json_mode)


def test_in_php_body_over_the_limit(ready, json_mode):
    resp = ready.client.post(
        "/in.php", query_string=flags(json_mode),
        data={"key": ready.secrets["alice-web"], "method": "base64", "body": "A" * (2 << 20)},
    )  # fmt: skip
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    check(ready, json.loads(text) if json_mode else text, "ERROR_TOO_BIG_CAPTCHA_FILESIZE",
          json_mode)  # fmt: skip


def test_zero_balance(ready, json_mode):
    assert ready.submit("alice-poor").startswith("OK|")  # balance 0.0025: one call
    check(ready, ready.submit("alice-poor", **flags(json_mode)), "ERROR_ZERO_BALANCE", json_mode)


def test_cpm_ceiling_is_no_slot(ready, json_mode):
    assert [ready.submit("alice-cpm")[:3] for _ in range(2)] == ["OK|", "OK|"]
    check(ready, ready.submit("alice-cpm", **flags(json_mode)), "ERROR_NO_SLOT_AVAILABLE",
          json_mode)  # fmt: skip


def test_daily_tokens_are_held_by_pending_tasks(stubbed):
    stubbed.stub.gate.clear()  # bob's daily limit is 3: three pending tasks hold all of it
    ids = [stubbed.task_id("bob-web") for _ in range(3)]
    assert stubbed.submit("bob-web") == "ERROR_NO_SLOT_AVAILABLE"
    stubbed.stub.gate.set()
    assert [stubbed.answer(i, "bob-web") for i in ids] == ["OK|token-for-turnstile"] * 3


def test_draining_is_no_slot_but_results_are_still_delivered(ready, json_mode):
    task_id = ready.task_id()
    ready.client.post("/admin/drain")
    check(ready, ready.submit(**flags(json_mode)), "ERROR_NO_SLOT_AVAILABLE", json_mode)
    assert ready.answer(task_id) == "OK|token-for-turnstile"


@pytest.mark.parametrize(
    ("key_id", "fields", "expected"),
    [
        (None, {"action": "get", "id": "1"}, "ERROR_WRONG_USER_KEY"),
        ("sk_never_issued", {"action": "get", "id": "1"}, "ERROR_KEY_DOES_NOT_EXIST"),
        ("alice-off", {"action": "getbalance"}, "ERROR_KEY_DOES_NOT_EXIST"),
        ("alice-ip", {"action": "getbalance"}, "ERROR_IP_NOT_ALLOWED"),
        ("alice-web", {}, "ERROR_EMPTY_ACTION"),
        ("alice-web", {"action": "nope"}, "ERROR_EMPTY_ACTION"),
        ("alice-web", {"action": "get"}, "ERROR_WRONG_ID_FORMAT"),
        ("alice-web", {"action": "get", "id": "12ab"}, "ERROR_WRONG_ID_FORMAT"),
        ("alice-web", {"action": "get", "ids": "1,x"}, "ERROR_WRONG_ID_FORMAT"),
        ("alice-web", {"action": "get", "ids": ",".join(["1"] * 101)}, "ERROR_BAD_PARAMETERS"),
        ("alice-web", {"action": "get", "id": "42000000000001"}, "ERROR_WRONG_CAPTCHA_ID"),
        ("alice-web", {"action": "reportbad", "id": ""}, "ERROR_WRONG_ID_FORMAT"),
        ("alice-web", {"action": "reportgood", "id": "7"}, "ERROR_WRONG_CAPTCHA_ID"),
    ],
)
def test_res_php_errors(ready, json_mode, key_id, fields, expected):
    got = ready.call("/res.php", key_id, http="get", **fields, **flags(json_mode))
    check(ready, got, expected, json_mode)


def test_unsupported_http_method_is_still_a_protocol_answer(ready):
    for path in ("/in.php", "/res.php"):
        resp = ready.client.put(path, query_string={"json": "1"})
        assert (resp.status_code, resp.json) == (200, as_json(0, "ERROR_BAD_PARAMETERS"))


def test_header_acao(ready):
    resp = ready.client.get("/res.php", query_string={"header_acao": "1"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.get_data(as_text=True) == "ERROR_WRONG_USER_KEY"


def test_native_api_is_unchanged_beside_it(ready):
    resp = ready.client.post("/solve", json={"type": "turnstile", "url": PAGE},
                             headers={"X-API-Key": ready.secrets["alice-web"]})  # fmt: skip
    assert resp.status_code == 200 and resp.json["cost"] == "0.002"
    assert ready.client.get("/nope").json["error"] == "not_found"


def test_get2_answers_the_price_and_charges_like_get(stubbed):
    stubbed.stub.gate.clear()
    task_id = stubbed.task_id(soft_id="31")
    assert stubbed.call("/res.php", action="get2", id=task_id) == "CAPCHA_NOT_READY"
    stubbed.stub.gate.set()
    wait_until(lambda: stubbed.call("/res.php", action="get2", id=task_id) != "CAPCHA_NOT_READY",
               timeout=10, what="solved")  # fmt: skip
    assert stubbed.call("/res.php", action="get2", id=task_id) == "OK|token-for-turnstile|0.002"
    assert stubbed.call("/res.php", action="get2", id=task_id, json="1") == {
        "status": 1, "request": "token-for-turnstile", "price": "0.002"}  # fmt: skip
    assert stubbed.balance() == "0.998"
    [event] = stubbed.shipped(1)
    assert event["soft_id"] == 31 and event["cost_micros"] == 2000
    assert stubbed.call("/res.php", action="get2", id="1") == "ERROR_WRONG_CAPTCHA_ID"


def test_pingback_options_are_checked_before_admission(ready):
    for fields, text in (
        ({"pingback": "https://cb.test/"}, "ERROR_PINGBACK_NOT_REGISTERED"),
        ({"soft_id": "12x"}, "ERROR_BAD_PARAMETERS"),
        ({"soft_id": "2147483648"}, "ERROR_BAD_PARAMETERS"),
    ):
        assert ready.submit(**fields) == text
        assert ready.submit(json="1", **fields) == as_json(0, text)
    assert ready.call("/res.php", action="get_pingback") == "OK|"
    assert ready.call("/res.php", action="get_pingback", json="1") == {"status": 1, "request": []}
    for addr in ("", "ftp://cb.test/", "http://127.0.0.1/", "http://[::ffff:10.0.0.1]/"):
        assert ready.call("/res.php", action="add_pingback", addr=addr) == "ERROR_BAD_PINGBACK_URL"
    assert ready.balance() == "1.00" and ready.collector.events == {}
