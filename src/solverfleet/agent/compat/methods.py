"""``in.php`` parameters -> our solve body (captcha type slug, target URL, worker params).

Pure and total: ``parse_task`` never raises; it returns a ``TaskSpec`` or one of the
protocol's error texts. The table (kept in step with docs/PROTOCOLS.md):

=============  ===========  ==============  =========================================
method         condition    type slug       required (-> worker param)
=============  ===========  ==============  =========================================
userrecaptcha  version!=v3  recaptcha-v2    googlekey (-> sitekey), pageurl
userrecaptcha  version=v3   recaptcha-v3    googlekey (-> sitekey), pageurl
hcaptcha                    hcaptcha        sitekey, pageurl
turnstile                   turnstile       sitekey, pageurl
funcaptcha                  funcaptcha      publickey (-> sitekey), pageurl
geetest                     geetest         gt, challenge, pageurl
post                        image-to-text   file (multipart upload) (-> body, base64)
base64                      image-to-text   body (base64)
=============  ===========  ==============  =========================================
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from solverfleet.agent.compat import answers

MAX_URL = 4096  # the native API's limit (routes.MAX_URL)
MAX_PARAM = 4096  # one optional parameter's text
MIN_IMAGE = 100  # bytes; smaller is "zero size" in the protocol
MAX_IMAGE = 100 * 1024  # bytes, decoded
_SITEKEY = re.compile(r"[A-Za-z0-9_.:-]{1,256}").fullmatch

# Optional parameters passed on to the worker unchanged (soft_id and pingback: options.py).
_PROXY = ("proxy", "proxytype", "userAgent", "cookies")
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "recaptcha-v2": ("invisible", "enterprise", "data-s", "action", *_PROXY),
    "recaptcha-v3": ("action", "min_score", "enterprise", *_PROXY),
    "hcaptcha": ("invisible", "data", "domain", *_PROXY),
    "turnstile": ("action", "data", "pagedata", *_PROXY),
    "funcaptcha": ("surl", "data[blob]", *_PROXY),
    "geetest": ("api_server", "offline", "new_captcha", *_PROXY),
    "image-to-text": (
        "phrase",
        "regsense",
        "numeric",
        "calc",
        "min_len",
        "max_len",
        "language",
        "lang",
        "textinstructions",
    ),
}


@dataclass(slots=True)
class TaskSpec:
    slug: str
    url: str | None  # None for image captchas: there is no target page
    params: dict[str, Any] = field(default_factory=dict)
    soft_id: int | None = None  # the client's software id, kept in the usage log
    pingback: str | None = None  # a registered URL the answer is POSTed to (pingback.py)
    pingback_json: bool = False  # ... as getTaskResult JSON (createTask), else 2captcha's form

    def for_worker(self) -> dict[str, Any]:
        return {"type": self.slug, "url": self.url or "", "params": self.params}


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _pageurl(fields: Mapping[str, Any]) -> str | None:
    url = _text(fields, "pageurl")
    if url is None or len(url) > MAX_URL or not url.lower().startswith(("http://", "https://")):
        return None
    return url


def _optional(fields: Mapping[str, Any], slug: str, params: dict[str, Any]) -> str | None:
    for name in _OPTIONAL[slug]:
        value = _text(fields, name)
        if value is None:
            continue
        if len(value) > MAX_PARAM:
            return answers.BAD_PARAMETERS
        params[name] = value
    return None


def _image(data: bytes | None) -> TaskSpec | str:
    if not data or len(data) < MIN_IMAGE:
        return answers.ZERO_CAPTCHA_FILESIZE
    if len(data) > MAX_IMAGE:
        return answers.TOO_BIG_CAPTCHA_FILESIZE
    return TaskSpec("image-to-text", None, {"body": base64.b64encode(data).decode()})


def _decode_base64(text: str | None) -> bytes | str:
    if text is None:
        return answers.ZERO_CAPTCHA_FILESIZE
    if text.startswith("data:") and "," in text:  # a data: URL; keep only the payload
        text = text.split(",", 1)[1]
    text = "".join(text.split())  # line breaks from form encoders
    if len(text) > (MAX_IMAGE * 4) // 3 + 8:
        return answers.TOO_BIG_CAPTCHA_FILESIZE  # decided before decoding: no big allocation
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return answers.BAD_PARAMETERS


def _token_task(fields: Mapping[str, Any], method: str) -> TaskSpec | str:
    if method == "userrecaptcha":
        version = (_text(fields, "version") or "v2").lower()
        if version not in ("v2", "v3"):
            return answers.BAD_PARAMETERS
        slug, key_name, key_error = f"recaptcha-{version}", "googlekey", answers.GOOGLEKEY
    elif method == "funcaptcha":
        slug, key_name, key_error = "funcaptcha", "publickey", answers.BAD_PARAMETERS
    else:
        slug, key_name, key_error = method, "sitekey", answers.BAD_PARAMETERS
    sitekey = _text(fields, key_name)
    if sitekey is None or not _SITEKEY(sitekey):
        return key_error
    url = _pageurl(fields)
    if url is None:
        return answers.PAGEURL
    return TaskSpec(slug, url, {"sitekey": sitekey})


def _geetest(fields: Mapping[str, Any]) -> TaskSpec | str:
    gt, challenge = _text(fields, "gt"), _text(fields, "challenge")
    if gt is None or challenge is None or not _SITEKEY(gt) or not _SITEKEY(challenge):
        return answers.BAD_PARAMETERS
    url = _pageurl(fields)
    if url is None:
        return answers.PAGEURL
    return TaskSpec("geetest", url, {"gt": gt, "challenge": challenge})


def parse_task(fields: Mapping[str, Any], files: Mapping[str, Any] | None = None) -> TaskSpec | str:
    """``fields``: form/query values by name; ``files``: uploaded file bytes by field name."""
    method = (_text(fields, "method") or "").lower()
    if method in ("userrecaptcha", "hcaptcha", "turnstile", "funcaptcha"):
        spec = _token_task(fields, method)
    elif method == "geetest":
        spec = _geetest(fields)
    elif method == "post":
        data = (files or {}).get("file")
        spec = _image(data if isinstance(data, bytes) else None)
    elif method == "base64":
        decoded = _decode_base64(_text(fields, "body"))
        spec = decoded if isinstance(decoded, str) else _image(decoded)
    else:
        return answers.BAD_PARAMETERS
    if isinstance(spec, str):
        return spec
    return _optional(fields, spec.slug, spec.params) or spec
