"""The JSON task protocol in-process (createTask / getTaskResult / getBalance / reports).

Same agent, task store and billing as in.php (tests/unit/test_agent_compat.py's Env); every
answer is HTTP 200 JSON with errorId 0 or the error's published number.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from pathlib import Path

import pytest

from solverfleet.agent.compat import answers, tasks_json
from solverfleet.agent.compat.tasks import id_pattern
from solverfleet.process import wait_until
from tests.support.fake_collector import (  # noqa: F401
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)
from tests.support.openapi import Spec
from tests.unit.test_agent_compat import IMAGE, PAGE, env, ready, stubbed  # noqa: F401

TURNSTILE = {"type": "TurnstileTaskProxyless", "websiteURL": PAGE, "websiteKey": "0x4AAAAAAA"}
PROXY = {"proxyType": "http", "proxyAddress": "10.1.2.3", "proxyPort": 8080}
IMAGE64 = base64.b64encode(IMAGE).decode()


def call(ctx, path, body=None, key_id="alice-web", **fields):
    """POST a JSON body (``body`` verbatim when given, else ``fields`` + clientKey)."""
    if body is None:
        body = dict(fields)
        if key_id is not None:
            body["clientKey"] = ctx.secrets.get(key_id, key_id)
    resp = ctx.client.post(path, json=body) if not isinstance(body, bytes) else (
        ctx.client.post(path, data=body))  # fmt: skip
    assert resp.status_code == 200 and resp.mimetype == "application/json", resp.status_code
    return resp.get_json()


def create(ctx, task=None, key_id="alice-web"):
    answer = call(ctx, "/createTask", key_id=key_id, task=task or TURNSTILE)
    assert answer["errorId"] == 0, answer
    assert isinstance(answer["taskId"], int) and re.fullmatch(id_pattern(42), str(answer["taskId"]))
    return answer["taskId"]


def result(ctx, task_id, key_id="alice-web"):
    """Poll like a client until the task is no longer processing."""
    box = {}

    def done():
        box["r"] = call(ctx, "/getTaskResult", key_id=key_id, taskId=task_id)
        return box["r"] != {"errorId": 0, "status": "processing"}

    wait_until(done, timeout=10, interval=0.01, what=f"task {task_id} finished")
    return box["r"]


def balance(ctx, key_id="alice-web"):
    answer = call(ctx, "/getBalance", key_id=key_id)
    assert answer["errorId"] == 0, answer
    return answer["balance"]


# The published errorId of each code (2captcha API v2 / anti-captcha error tables); codes
# without a published number answer 1.
PUBLISHED = {
    "ERROR_KEY_DOES_NOT_EXIST": 1, "ERROR_NO_SLOT_AVAILABLE": 2,
    "ERROR_ZERO_CAPTCHA_FILESIZE": 3, "ERROR_TOO_BIG_CAPTCHA_FILESIZE": 4,
    "ERROR_ZERO_BALANCE": 10, "ERROR_IP_NOT_ALLOWED": 11, "ERROR_CAPTCHA_UNSOLVABLE": 12,
    "ERROR_NO_SUCH_CAPCHA_ID": 16, "ERROR_IP_BLOCKED": 21, "ERROR_TASK_ABSENT": 22,
    "ERROR_TASK_NOT_SUPPORTED": 23,
}  # fmt: skip


def error(code):
    return lambda answer: answer["errorId"] == PUBLISHED.get(code, 1) and (
        answer["errorCode"] == code and answer["errorDescription"])  # fmt: skip


# ---- success forms ---------------------------------------------------------------------------


def test_round_trip_charges_once_and_shares_the_in_php_store(ready):  # noqa: F811
    assert balance(ready) == 1.0
    task_id = create(ready)
    answer = result(ready, task_id)
    assert answer["status"] == "ready" and answer["cost"] == "0.002", answer
    assert balance(ready) == 0.998
    assert result(ready, task_id) == answer  # again: same answer, no charge
    assert balance(ready) == 0.998
    # One store: the classic res.php sees the same task, and does not charge again.
    assert ready.get(str(task_id)) == "OK|" + answer["solution"]["token"]
    [event] = ready.shipped(1)
    assert (event["request_id"], event["type"], event["url"], event["status"],
            event["cost_micros"]) == (str(task_id), "turnstile", PAGE, "success", 2000)  # fmt: skip
    assert ready.collector.balance("alice-web") == 998_000
    # taskId as a string of digits works too (some clients send it so).
    assert call(ready, "/getTaskResult", taskId=str(task_id))["status"] == "ready"


@pytest.mark.parametrize(
    ("task", "slug", "params", "solution"),
    [
        ({"type": "RecaptchaV2TaskProxyless", "websiteURL": PAGE, "websiteKey": "6Le-k",
          "isInvisible": True}, "recaptcha-v2", {"sitekey": "6Le-k", "invisible": "1"}, "g"),
        ({"type": "NoCaptchaTask", "websiteURL": PAGE, "websiteKey": "6Le-k", **PROXY,
          "proxyLogin": "u", "proxyPassword": "p", "userAgent": "UA"}, "recaptcha-v2",
         {"sitekey": "6Le-k", "proxy": "u:p@10.1.2.3:8080", "proxytype": "HTTP",
          "userAgent": "UA"}, "g"),
        ({"type": "RecaptchaV3TaskProxyless", "websiteURL": PAGE, "websiteKey": "6Le-k",
          "minScore": 0.7, "pageAction": "login"}, "recaptcha-v3",
         {"sitekey": "6Le-k", "min_score": "0.7", "action": "login"}, "g"),
        ({"type": "HCaptchaTask", "websiteURL": PAGE, "websiteKey": "h-1", **PROXY}, "hcaptcha",
         {"sitekey": "h-1", "proxy": "10.1.2.3:8080", "proxytype": "HTTP"}, "g"),
        ({**TURNSTILE, "action": "a"}, "turnstile", {"sitekey": "0x4AAAAAAA", "action": "a"}, "t"),
        ({"type": "FunCaptchaTaskProxyless", "websiteURL": PAGE, "websitePublicKey": "ABCD-EF",
          "funcaptchaApiJSSubdomain": "https://x"}, "funcaptcha",
         {"sitekey": "ABCD-EF", "surl": "https://x"}, "t"),
        ({"type": "GeeTestTaskProxyless", "websiteURL": PAGE, "gt": "g1", "challenge": "c1"},
         "geetest", {"gt": "g1", "challenge": "c1"}, "t"),
        ({"type": "ImageToTextTask", "body": IMAGE64, "numeric": 1, "case": True},
         "image-to-text", {"body": IMAGE64, "numeric": "1", "regsense": "1"}, "text"),
    ],
)  # fmt: skip
def test_task_types_reach_the_worker_as_slugs(stubbed, task, slug, params, solution):  # noqa: F811
    stubbed.collector.set_price("recaptcha-v2", 3000)
    answer = result(stubbed, create(stubbed, task))
    token = f"token-for-{slug}"
    assert answer["solution"] == {
        "g": {"gRecaptchaResponse": token, "token": token}, "t": {"token": token},
        "text": {"text": token}}[solution]  # fmt: skip
    [body] = stubbed.stub.bodies
    assert body["type"] == slug and body["params"] == params


def test_reports_are_logged_once(ready):  # noqa: F811
    good, bad, image = create(ready), create(ready), create(ready)
    assert error("ERROR_NO_SUCH_CAPCHA_ID")(call(ready, "/reportCorrectRecaptcha", taskId=good))
    for task_id in (good, bad, image):
        result(ready, task_id)
    ok = {"errorId": 0, "status": "success"}
    assert call(ready, "/reportCorrectRecaptcha", taskId=good) == ok
    assert call(ready, "/reportIncorrectRecaptcha", taskId=bad) == ok
    assert call(ready, "/reportIncorrectImageCaptcha", taskId=image) == ok
    assert error("ERROR_DUPLICATE_REPORT")(call(ready, "/reportIncorrectRecaptcha", taskId=bad))
    events = ready.shipped(6)
    kinds = Counter((e["status"], e["request_id"]) for e in events if e["cost_micros"] == 0)
    assert kinds == {("report_good", str(good)): 1, ("report_bad", str(bad)): 1,
                     ("report_bad", str(image)): 1}  # fmt: skip


def test_failed_task_is_unsolvable_and_costs_nothing(stubbed):  # noqa: F811
    stubbed.stub.fail = True
    assert error("ERROR_CAPTCHA_UNSOLVABLE")(result(stubbed, create(stubbed)))
    assert balance(stubbed) == 1.0


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_id", "task", "expected"),
    [
        (None, TURNSTILE, "ERROR_KEY_DOES_NOT_EXIST"),
        ("has space", TURNSTILE, "ERROR_KEY_DOES_NOT_EXIST"),
        ("sk_never_issued", TURNSTILE, "ERROR_KEY_DOES_NOT_EXIST"),
        ("alice-off", TURNSTILE, "ERROR_KEY_DOES_NOT_EXIST"),
        ("carol-web", TURNSTILE, "ERROR_KEY_DOES_NOT_EXIST"),
        ("alice-ip", TURNSTILE, "ERROR_IP_NOT_ALLOWED"),
        ("alice-typed", TURNSTILE, "ERROR_TASK_NOT_SUPPORTED"),
        ("alice-web", None, "ERROR_TASK_ABSENT"),
        ("alice-web", "TurnstileTaskProxyless", "ERROR_TASK_ABSENT"),
        ("alice-web", {"websiteURL": PAGE}, "ERROR_TASK_NOT_SUPPORTED"),
        ("alice-web", {**TURNSTILE, "type": "KeyCaptchaTask"}, "ERROR_TASK_NOT_SUPPORTED"),
        ("alice-web", {**TURNSTILE, "type": "RecaptchaV3Task"}, "ERROR_TASK_NOT_SUPPORTED"),
        ("alice-web", {**TURNSTILE, "type": ["x"]}, "ERROR_TASK_NOT_SUPPORTED"),
        ("alice-web", {**TURNSTILE, "type": "TurnstileTask"}, "ERROR_PROXY_PARAMETERS"),
        ("alice-web", {**TURNSTILE, "type": "TurnstileTask", **PROXY, "proxyType": "ftp"},
         "ERROR_PROXY_PARAMETERS"),
        ("alice-web", {**TURNSTILE, "websiteURL": None}, "ERROR_PAGEURL"),
        ("alice-web", {**TURNSTILE, "websiteURL": "ftp://x.test/"}, "ERROR_PAGEURL"),
        ("alice-web", {**TURNSTILE, "websiteKey": {"a": 1}}, "ERROR_BAD_PARAMETERS"),
        ("alice-web", {"type": "RecaptchaV2TaskProxyless", "websiteURL": PAGE},
         "ERROR_GOOGLEKEY"),
        ("alice-web", {"type": "ImageToTextTask"}, "ERROR_ZERO_CAPTCHA_FILESIZE"),
        ("alice-web", {"type": "ImageToTextTask", "body": "aGk="}, "ERROR_ZERO_CAPTCHA_FILESIZE"),
        ("alice-web", {"type": "ImageToTextTask", "body": "!!"}, "ERROR_BAD_PARAMETERS"),
        ("alice-web", {"type": "ImageToTextTask", "body": "QUFB" * 40_000},
         "ERROR_TOO_BIG_CAPTCHA_FILESIZE"),
    ],
)  # fmt: skip
def test_create_task_errors(ready, key_id, task, expected):  # noqa: F811
    assert error(expected)(call(ready, "/createTask", key_id=key_id, task=task))
    assert ready.agent.tasks._tasks == {}  # nothing admitted, nothing held


def test_zero_balance_and_cpm(ready):  # noqa: F811
    create(ready, key_id="alice-poor")  # balance 0.0025: one call
    assert error("ERROR_ZERO_BALANCE")(call(ready, "/createTask", key_id="alice-poor",
                                            task=TURNSTILE))  # fmt: skip
    create(ready, key_id="alice-cpm")
    create(ready, key_id="alice-cpm")
    assert error("ERROR_NO_SLOT_AVAILABLE")(call(ready, "/createTask", key_id="alice-cpm",
                                                 task=TURNSTILE))  # fmt: skip


@pytest.mark.parametrize("path", ["/getTaskResult", "/reportIncorrectRecaptcha"])
@pytest.mark.parametrize(
    ("key_id", "task_id", "expected"),
    [
        (None, 1, "ERROR_KEY_DOES_NOT_EXIST"),
        ("alice-ip", 1, "ERROR_IP_NOT_ALLOWED"),
        ("alice-web", None, "ERROR_NO_SUCH_CAPCHA_ID"),
        ("alice-web", True, "ERROR_NO_SUCH_CAPCHA_ID"),
        ("alice-web", -1, "ERROR_NO_SUCH_CAPCHA_ID"),
        ("alice-web", "12a", "ERROR_NO_SUCH_CAPCHA_ID"),
        ("alice-web", 10**21, "ERROR_NO_SUCH_CAPCHA_ID"),
        ("alice-web", 42 * 10**12 + 1, "ERROR_NO_SUCH_CAPCHA_ID"),
    ],
)
def test_task_id_errors(ready, path, key_id, task_id, expected):  # noqa: F811
    assert error(expected)(call(ready, path, key_id=key_id, taskId=task_id))


def test_other_keys_cannot_see_a_task(ready):  # noqa: F811
    task_id = create(ready)
    assert error("ERROR_NO_SUCH_CAPCHA_ID")(result(ready, task_id, key_id="bob-web"))
    assert balance(ready, "alice-web") == 1.0  # not delivered, not charged


@pytest.mark.parametrize("path", ["/createTask", "/getTaskResult", "/getBalance",
                                  "/reportCorrectRecaptcha"])  # fmt: skip
@pytest.mark.parametrize("body", [b"", b"not json", b"[1]", b"\xff\xfe", b'"x"'])
def test_a_body_that_is_no_json_object(ready, path, body):  # noqa: F811
    assert error("ERROR_BAD_PARAMETERS")(call(ready, path, body=body))


def test_framework_errors_are_protocol_answers(ready):  # noqa: F811
    resp = ready.client.get("/createTask")
    assert resp.status_code == 200 and error("ERROR_BAD_PARAMETERS")(resp.get_json())
    resp = ready.client.post("/createTask", data=b"{" + b" " * (2 << 20) + b"}")
    assert resp.status_code == 200 and error("ERROR_TOO_BIG_CAPTCHA_FILESIZE")(resp.get_json())


def test_draining_is_no_slot(ready):  # noqa: F811
    task_id = create(ready)
    ready.client.post("/admin/drain")
    assert error("ERROR_NO_SLOT_AVAILABLE")(call(ready, "/createTask", task=TURNSTILE))
    assert result(ready, task_id)["status"] == "ready"  # results are still delivered


# ---- the words are written down ----------------------------------------------------------------


def _doc_section(title):
    text = (Path(__file__).parents[2] / "docs" / "PROTOCOLS.md").read_text()
    return text.split(title, 1)[1].split("\n## ", 1)[0]


def test_every_task_type_and_error_is_documented():
    doc = _doc_section("## 2. The JSON task protocol")
    types_table = doc.split("### Task types", 1)[1].split("###", 1)[0]
    first_column = [row.split("|")[1] for row in types_table.splitlines() if row.startswith("| `")]
    documented_types = set(re.findall(r"`(\w+)`", "".join(first_column)))
    assert documented_types == set(tasks_json.TASK_TYPES)
    spec = Spec.of("solverfleet.agent").doc["components"]["schemas"]
    assert set(spec["CreateTaskRequest"]["properties"]["task"]["properties"]["type"]["enum"]) == (
        set(tasks_json.TASK_TYPES))  # fmt: skip
    errors_table = doc.split("### Errors", 1)[1].split("\n\n", 2)[1]
    documented_errors = set(re.findall(r"^\| `(ERROR_[A-Z_]+)` \|", errors_table, re.M))
    assert documented_errors == set(tasks_json.DESCRIPTIONS)
    numbers = dict(re.findall(r"^\| `(ERROR_[A-Z_]+)` \| (\d+) \|", errors_table, re.M))
    assert {code: int(n) for code, n in numbers.items()} == {
        code: PUBLISHED.get(code, 1) for code in tasks_json.DESCRIPTIONS
    }
    assert all(code in spec["TaskError"]["properties"]["errorCode"]["description"]
               for code in documented_errors)  # fmt: skip


def test_a_banned_address_is_blocked_even_with_a_valid_key(env):  # noqa: F811
    env.start(trusted_proxies=("127.0.0.0/8",))
    ip = {"X-Forwarded-For": "203.0.113.9"}
    for n in range(5):
        resp = env.client.post("/getBalance", json={"clientKey": f"bad{n}"}, headers=ip)
        assert error("ERROR_KEY_DOES_NOT_EXIST")(resp.get_json())
    body = {"clientKey": env.secrets["alice-web"], "task": TURNSTILE}
    resp = env.client.post("/createTask", json=body, headers=ip)
    assert resp.status_code == 200 and error("ERROR_IP_BLOCKED")(resp.get_json())
    assert env.agent.tasks._tasks == {}


def test_every_shared_refusal_has_a_documented_code():
    texts = answers.PARSE_ERRORS | set(answers.REFUSALS.values()) | {
        answers.WRONG_USER_KEY, answers.NO_SLOT, answers.UNSOLVABLE, answers.WRONG_ID,
        answers.WRONG_ID_FORMAT, answers.DUPLICATE_REPORT, answers.REPORT_NOT_RECORDED}  # fmt: skip
    for text in texts:
        assert tasks_json.error_code(text) in tasks_json.DESCRIPTIONS, text


def test_a_deeply_nested_body_is_a_protocol_error_not_a_crash(ready):  # noqa: F811
    body = b'{"clientKey": "x", "task": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = ready.client.post("/createTask", data=body, content_type="application/json")
    assert response.status_code == 200
    assert error("ERROR_BAD_PARAMETERS")(response.get_json())
