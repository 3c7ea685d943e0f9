"""The JSON task protocol's words: task objects -> in.php fields, answers -> solutions, errors.

2captcha's API v2, anti-captcha and CapMonster share this protocol (docs/PROTOCOLS.md). A task
object is translated into the ``in.php`` fields it means and parsed by methods.parse_task, so
both surfaces validate alike and hand the worker the same params. Pure and total: nothing here
raises on bad input; every refusal is one of the error codes below.

``_TYPES`` below is the table of task types (kept in step with docs/PROTOCOLS.md): each
``task.type`` names an in.php method and how its fields are called there.
"""

from __future__ import annotations

import json
from typing import Any

from solverfleet.agent.compat import answers

# Error codes: the protocol's names. errorId is the number 2captcha API v2 and anti-captcha
# publish for the code (ERROR_IDS); a code without a published number answers 1, as before.
NO_SUCH_CAPCHA_ID = "ERROR_NO_SUCH_CAPCHA_ID"
TASK_ABSENT = "ERROR_TASK_ABSENT"
TASK_NOT_SUPPORTED = "ERROR_TASK_NOT_SUPPORTED"
PROXY_PARAMETERS = "ERROR_PROXY_PARAMETERS"
IP_BLOCKED = "ERROR_IP_BLOCKED"
REPORT_NOT_RECORDED = "ERROR_REPORT_NOT_RECORDED"

DESCRIPTIONS = {
    answers.KEY_DOES_NOT_EXIST: "clientKey is missing, malformed, unknown, disabled or expired",
    answers.ZERO_BALANCE: "the balance is below this task type's price",
    answers.IP_NOT_ALLOWED: "this address is outside the key's IP allowlist",
    IP_BLOCKED: "too many unknown keys from this address; retry in a few minutes",
    answers.NO_SLOT: "no capacity now (rate or daily limit, agent busy or draining); retry",
    answers.BAD_PARAMETERS: "the request body or a task field is missing or malformed",
    answers.PAGEURL: "websiteURL is missing, not http(s) or over 4096 characters",
    answers.GOOGLEKEY: "websiteKey is missing or malformed",
    answers.ZERO_CAPTCHA_FILESIZE: "the image is missing or under 100 bytes",
    answers.TOO_BIG_CAPTCHA_FILESIZE: "the image is over 100 KiB, or the body over 1 MiB",
    TASK_ABSENT: "the request has no task object",
    TASK_NOT_SUPPORTED: "task.type is missing, unknown, or not allowed for this key",
    PROXY_PARAMETERS: "a task with a proxy needs proxyType, proxyAddress and proxyPort",
    NO_SUCH_CAPCHA_ID: "no such task here: unknown, another key's, expired, or another agent's",
    answers.UNSOLVABLE: "the task could not be solved; it is not charged",
    answers.DUPLICATE_REPORT: "this task was already reported",
    REPORT_NOT_RECORDED: "the report could not be recorded; retry",
    answers.PINGBACK_NOT_REGISTERED: "callbackUrl is not registered for this account",
}

# in.php texts whose JSON code has another name (the rest keep theirs).
_RENAMED = {
    answers.WRONG_USER_KEY: answers.KEY_DOES_NOT_EXIST,
    answers.IP_BANNED: IP_BLOCKED,
    answers.WRONG_ID: NO_SUCH_CAPCHA_ID,
    answers.WRONG_ID_FORMAT: NO_SUCH_CAPCHA_ID,
    answers.REPORT_NOT_RECORDED: REPORT_NOT_RECORDED,
}


def error_code(text: str) -> str:
    """The JSON protocol's code for an in.php error text."""
    return _RENAMED.get(text, text)


# The published errorId of each code we answer (docs/PROTOCOLS.md "Errors").
ERROR_IDS = {
    answers.KEY_DOES_NOT_EXIST: 1,
    answers.NO_SLOT: 2,
    answers.ZERO_CAPTCHA_FILESIZE: 3,
    answers.TOO_BIG_CAPTCHA_FILESIZE: 4,
    answers.ZERO_BALANCE: 10,
    answers.IP_NOT_ALLOWED: 11,
    answers.UNSOLVABLE: 12,
    NO_SUCH_CAPCHA_ID: 16,
    IP_BLOCKED: 21,
    TASK_ABSENT: 22,
    TASK_NOT_SUPPORTED: 23,
}
UNNUMBERED = 1  # codes no published table numbers (ERROR_BAD_PARAMETERS, ...)


def error_body(code: str) -> dict[str, Any]:
    code = error_code(code)
    return {
        "errorId": ERROR_IDS.get(code, UNNUMBERED),
        "errorCode": code,
        "errorDescription": DESCRIPTIONS.get(code, code),
    }


# task.type (less a "Proxyless" suffix) -> in.php method and {task field: in.php field}.
_SITE = {"websiteURL": "pageurl"}
_TYPES: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "RecaptchaV2Task": (
        {"method": "userrecaptcha", "version": "v2"},
        {
            **_SITE,
            "websiteKey": "googlekey",
            "isInvisible": "invisible",
            "recaptchaDataSValue": "data-s",
            "pageAction": "action",
        },
    ),
    "RecaptchaV3Task": (
        {"method": "userrecaptcha", "version": "v3"},
        {
            **_SITE,
            "websiteKey": "googlekey",
            "minScore": "min_score",
            "pageAction": "action",
            "isEnterprise": "enterprise",
        },
    ),
    "HCaptchaTask": (
        {"method": "hcaptcha"},
        {**_SITE, "websiteKey": "sitekey", "isInvisible": "invisible", "data": "data"},
    ),
    "TurnstileTask": (
        {"method": "turnstile"},
        {
            **_SITE,
            "websiteKey": "sitekey",
            "action": "action",
            "data": "data",
            "pagedata": "pagedata",
        },
    ),
    "FunCaptchaTask": (
        {"method": "funcaptcha"},
        {
            **_SITE,
            "websitePublicKey": "publickey",
            "funcaptchaApiJSSubdomain": "surl",
            "data": "data[blob]",
        },
    ),
    "GeeTestTask": (
        {"method": "geetest"},
        {**_SITE, "gt": "gt", "challenge": "challenge", "geetestApiServerSubdomain": "api_server"},
    ),
    "ImageToTextTask": (
        {"method": "base64"},
        {
            "body": "body",
            "phrase": "phrase",
            "case": "regsense",
            "numeric": "numeric",
            "math": "calc",
            "minLength": "min_len",
            "maxLength": "max_len",
            "comment": "textinstructions",
        },
    ),
}
_TYPES["NoCaptchaTask"] = _TYPES["RecaptchaV2Task"]  # anti-captcha's older name
_PASSED = {"userAgent": "userAgent", "cookies": "cookies"}  # token tasks, either variant
PROXY_TYPES = ("http", "https", "socks4", "socks5")
# Accepted task.type -> (table entry, with a proxy). A token type comes as "X" (with a proxy)
# and "XProxyless"; reCAPTCHA v3 only without a proxy, an image only as ImageToTextTask.
TASK_TYPES: dict[str, tuple[str, bool]] = {
    **{name: (name, True) for name in _TYPES if name not in ("RecaptchaV3Task", "ImageToTextTask")},
    **{f"{name}Proxyless": (name, False) for name in _TYPES if name != "ImageToTextTask"},
    "ImageToTextTask": ("ImageToTextTask", False),
}


def _scalar(value: Any) -> str | None:
    """A field's value as in.php text: strings as they are, numbers and booleans spelled out;
    None for anything else (objects, lists: not a field we pass on)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) else None


def _proxy(task: dict[str, Any], fields: dict[str, str]) -> str | None:
    kind = _scalar(task.get("proxyType"))
    address, port = _scalar(task.get("proxyAddress")), _scalar(task.get("proxyPort"))
    if kind is None or kind.lower() not in PROXY_TYPES or not address or not port:
        return PROXY_PARAMETERS
    login, password = _scalar(task.get("proxyLogin")), _scalar(task.get("proxyPassword"))
    auth = f"{login}:{password or ''}@" if login else ""
    fields["proxytype"] = kind.upper()
    fields["proxy"] = f"{auth}{address}:{port}"
    return None


def to_fields(task: Any) -> dict[str, str] | str:
    """The in.php fields a task object means, or an error code (TASK_ABSENT, ...)."""
    if not isinstance(task, dict):
        return TASK_ABSENT
    name = task.get("type")
    if not isinstance(name, str) or name not in TASK_TYPES:
        return TASK_NOT_SUPPORTED
    base, proxied = TASK_TYPES[name]
    fixed, renames = _TYPES[base]
    fields = dict(fixed)
    extra = {} if base == "ImageToTextTask" else _PASSED
    for source, target in {**renames, **extra}.items():
        value = _scalar(task.get(source))
        if value is not None:
            fields[target] = value
    if proxied:
        refused = _proxy(task, fields)
        if refused is not None:
            return refused
    return fields


def solution(slug: str, answer: str) -> dict[str, Any]:
    """The ``solution`` object for a worker answer (stored as text, answers.answer_text)."""
    if slug in ("recaptcha-v2", "recaptcha-v3", "hcaptcha"):
        return {"gRecaptchaResponse": answer, "token": answer}
    if slug == "image-to-text":
        return {"text": answer}
    if slug == "geetest":
        try:
            parsed = json.loads(answer)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed  # challenge, validate, seccode: as the worker gave them
    return {"token": answer}
