"""Failed dashboard logins are counted per address across processes: two collectors (gunicorn,
one worker each, like two workers of one collector) on one database share the count, so
failures spread over both still reach the limit. In-process twin: tests/unit/test_dashboard.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from solverfleet.collector.dashboard import loginlimit
from tests.support.collector import CollectorProcess, sqlite_url

pytestmark = pytest.mark.integration
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _login(base: str, token: str) -> requests.Response:
    """A fresh browser: the login form (its CSRF token and form cookie), then the post."""
    with requests.Session() as browser:
        form = browser.get(f"{base}/dashboard/login", timeout=10)
        assert form.status_code == 200, form.status_code
        csrf = _CSRF.search(form.text).group(1)
        return browser.post(
            f"{base}/dashboard/login",
            data={"token": token, "csrf": csrf},
            allow_redirects=False,
            timeout=10,
        )


def test_failed_logins_spread_over_two_collectors_reach_the_limit(tmp_path: Path):
    url = sqlite_url(tmp_path / "collector.db")
    first = CollectorProcess(url, tmp_path / "a", name="collector-a", workers=1)
    second = CollectorProcess(
        url, tmp_path / "b", name="collector-b", workers=1, admin_token=first.admin_token
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with first, second:  # started in turn: one migrates, the other finds it done
        for n in range(loginlimit.MAX_FAILURES):  # 3 on one, 2 on the other
            assert _login((first.url, second.url)[n % 2], "sft_wrong").status_code == 401
        for base in (first.url, second.url):
            refused = _login(base, first.admin_token)  # even the right token waits
            assert refused.status_code == 429
            assert 0 < int(refused.headers["Retry-After"]) <= loginlimit.WINDOW_MS // 1000
