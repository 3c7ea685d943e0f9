"""Every text the 2captcha protocol answers with, in one place (docs/PROTOCOLS.md).

The protocol's words are its contract: client libraries compare them literally, so they are
spelled once here and nowhere else. ``refusal_text`` maps a native refusal code to the nearest
answer; ``answer_text`` turns a worker result into the answer a client parses.
"""

from __future__ import annotations

import json
from typing import Any

# in.php parameters (methods.py)
BAD_PARAMETERS = "ERROR_BAD_PARAMETERS"
PAGEURL = "ERROR_PAGEURL"
GOOGLEKEY = "ERROR_GOOGLEKEY"
ZERO_CAPTCHA_FILESIZE = "ERROR_ZERO_CAPTCHA_FILESIZE"
TOO_BIG_CAPTCHA_FILESIZE = "ERROR_TOO_BIG_CAPTCHA_FILESIZE"
PARSE_ERRORS = frozenset(
    {BAD_PARAMETERS, PAGEURL, GOOGLEKEY, ZERO_CAPTCHA_FILESIZE, TOO_BIG_CAPTCHA_FILESIZE}
)

# requests (routes.py)
WRONG_USER_KEY = "ERROR_WRONG_USER_KEY"
WRONG_ID_FORMAT = "ERROR_WRONG_ID_FORMAT"
EMPTY_ACTION = "ERROR_EMPTY_ACTION"
IP_NOT_ALLOWED = "ERROR_IP_NOT_ALLOWED"
IP_BANNED = "IP_BANNED"  # 2captcha's own text for it: no ERROR_ prefix
KEY_DOES_NOT_EXIST = "ERROR_KEY_DOES_NOT_EXIST"
ZERO_BALANCE = "ERROR_ZERO_BALANCE"

# pingbacks (options.py, pingback_actions.py)
PINGBACK_NOT_REGISTERED = "ERROR_PINGBACK_NOT_REGISTERED"
BAD_PINGBACK = "ERROR_BAD_PINGBACK_URL"
TOO_MANY_PINGBACKS = "ERROR_TOO_MANY_PINGBACKS"
PINGBACK_OK = "OK"

# tasks (solve.py)
NOT_READY = "CAPCHA_NOT_READY"
UNSOLVABLE = "ERROR_CAPTCHA_UNSOLVABLE"
WRONG_ID = "ERROR_WRONG_CAPTCHA_ID"
NO_SLOT = "ERROR_NO_SLOT_AVAILABLE"
REPORT_OK = "OK_REPORT_RECORDED"
REPORT_NOT_RECORDED = "REPORT_NOT_RECORDED"
DUPLICATE_REPORT = "ERROR_DUPLICATE_REPORT"

# Native refusal code -> the protocol's nearest answer.
REFUSALS = {
    "ip_banned": IP_BANNED,
    "invalid_key": KEY_DOES_NOT_EXIST,
    "key_disabled": KEY_DOES_NOT_EXIST,
    "key_expired": KEY_DOES_NOT_EXIST,
    "user_disabled": KEY_DOES_NOT_EXIST,
    "unknown_type": BAD_PARAMETERS,
    "type_not_allowed": BAD_PARAMETERS,
    "ip_not_allowed": IP_NOT_ALLOWED,
    "cpm_exceeded": NO_SLOT,
    "daily_limit_reached": NO_SLOT,
    "insufficient_balance": ZERO_BALANCE,
    # not_ready (no key data yet) and anything else: NO_SLOT, try again (another agent)
}


def refusal_text(code: str | None) -> str:
    """The answer for a native refusal ``code`` (anything unknown: try again elsewhere)."""
    return REFUSALS.get(code or "", NO_SLOT)


def answer_text(result: Any) -> str:
    """The worker's result as the protocol's answer text (JSON for structured results)."""
    return result if isinstance(result, str) else json.dumps(result, separators=(",", ":"))
