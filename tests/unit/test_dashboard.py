"""The admin dashboard's views through Flask's test client (both stores): login, sessions,
CSRF, escaping, secrets kept out of the HTML, security headers, filters and paging.

The real-browser test (chromium, real processes) is tests/integration/test_dashboard_browser.py.
"""

from __future__ import annotations

import re

import pytest

from solverfleet.collector import CollectorSettings, create_app
from solverfleet.collector.dashboard import loginlimit, sessions
from solverfleet.keyhash import hash_secret
from solverfleet.settings import SettingsError
from tests.support.collector import (
    T0,
    AppHarness,
    event,
    key_config,
    make_app,
    team_config,
    user_config,
)

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]

PAGES = [
    "/dashboard/",
    "/dashboard/keys/alice-web",
    "/dashboard/usage",
    "/dashboard/activity?account=acme",
    "/dashboard/solves",
    "/dashboard/notifications",
    "/dashboard/fleet",
    "/dashboard/audit",
]
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
HOOK_SECRET = "whsec-0123456789abcdef-never-shown"
HOOK_URL = "https://hooks.example.test/notify/path-token-XYZ?auth=query-token-XYZ"


class Browser:
    """A test client that keeps cookies and reads CSRF tokens from pages, like a browser."""

    def __init__(self, app) -> None:
        self.client = app.test_client()

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, **kwargs):
        return self.client.post(path, data=data or {}, **kwargs)

    def csrf(self, path: str = "/dashboard/login") -> str:
        page = self.get(path)
        assert page.status_code == 200, page.status_code
        return _CSRF.search(page.get_data(as_text=True)).group(1)

    def login(self, token: str):
        return self.post("/dashboard/login", {"token": token, "csrf": self.csrf()})

    def cookie(self):
        return self.client.get_cookie(sessions.COOKIE, path="/dashboard")


def _active(h: AppHarness, key_id: str) -> bool:
    return h.admin("GET", f"/admin/v1/keys/{key_id}").get_json()["active"]


def _token(h: AppHarness, **body) -> dict:
    response = h.admin("POST", "/admin/v1/tokens", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def h(collector_app: AppHarness) -> AppHarness:
    collector_app.apply(
        team_config(
            [
                user_config("alice", [key_config("alice-web")]),
                user_config("bob", [key_config("bob-web", balance="0.004")]),
            ],
            low_balance_alert={
                "enabled": True,
                "threshold": "1.00",
                "webhooks": [{"url": HOOK_URL, "secret": HOOK_SECRET}],
            },
        )
    )
    return collector_app


@pytest.fixture
def admin(h: AppHarness) -> Browser:
    browser = Browser(h.app)
    response = browser.login(h.admin_token)
    assert response.status_code == 303 and response.headers["Location"] == "/dashboard/"
    return browser


# --- login required ---------------------------------------------------------------------------


def test_every_page_needs_a_session_and_a_bearer_token_does_not_open_one(h: AppHarness):
    browser = Browser(h.app)
    for path in PAGES:
        for headers in ({}, {"Authorization": f"Bearer {h.admin_token}"}):
            response = browser.get(path, headers=headers)
            assert response.status_code == 302, path
            assert response.headers["Location"] == "/dashboard/login"
    # A state change without a session goes back to the login and changes nothing.
    response = browser.post("/dashboard/keys/alice-web/deactivate", {"csrf": "x"})
    assert response.status_code == 303 and response.headers["Location"] == "/dashboard/login"
    assert _active(h, "alice-web")


def test_login_page_is_served_with_a_csrf_token_and_no_secret(h: AppHarness):
    page = Browser(h.app).get("/dashboard/login")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert _CSRF.search(html) and 'type="password"' in html
    assert h.admin_token not in html


@pytest.mark.parametrize(
    ("credential", "status", "says"),
    [
        ("wrong", 401, "Unknown or revoked token."),
        ("", 400, "Enter an admin token."),
        ("fleet", 403, "needs an admin token; this is a service token"),
        ("user", 403, "needs an admin token; this is a user token"),
        ("revoked", 401, "Unknown or revoked token."),
    ],
)
def test_wrong_credentials_are_refused(h: AppHarness, credential: str, status: int, says: str):
    tokens = {
        "wrong": "sft_this-was-never-issued",
        "": "",
        "fleet": h.fleet_token,
        "user": _token(h, role="user", user_id="alice")["secret"],
        "revoked": _token(h, role="admin")["secret"],
    }
    if credential == "revoked":
        token_id = h.admin("GET", "/admin/v1/tokens").get_json()["tokens"][-1]["id"]
        assert h.admin("POST", f"/admin/v1/tokens/{token_id}/revoke").status_code == 200
    browser = Browser(h.app)
    response = browser.login(tokens[credential])
    html = response.get_data(as_text=True)
    assert response.status_code == status
    assert says in html
    if tokens[credential]:
        assert tokens[credential] not in html  # never echoed back into the form
    assert browser.get("/dashboard/").status_code == 302  # still not logged in


def test_bootstrap_admin_logs_in_with_a_strict_cookie_held_server_side(h: AppHarness):
    browser = Browser(h.app)
    response = browser.login(h.admin_token)
    assert response.status_code == 303
    cookie_header = next(
        c for c in response.headers.getlist("Set-Cookie") if c.startswith(sessions.COOKIE + "=")
    )
    assert "HttpOnly" in cookie_header and "SameSite=Strict" in cookie_header
    assert "Path=/dashboard" in cookie_header
    assert "Secure" not in cookie_header  # plain HTTP here: a Secure cookie would never return
    # The cookie is a random 256-bit id; the database keeps only its sha256, never the id.
    session_id = browser.cookie().value
    assert len(session_id) == 43 and h.admin_token not in session_id
    rows = h.db.read(lambda tx: tx.all("SELECT id_hash, token_id FROM dashboard_sessions"))
    assert rows == [(hash_secret(session_id), None)]
    page = browser.get("/dashboard/")
    assert page.status_code == 200
    assert "admin token (settings)" in page.get_data(as_text=True)


def test_the_cookie_is_secure_when_the_browser_came_over_https(h: AppHarness):
    browser = Browser(h.app)
    csrf = browser.csrf()
    response = browser.post(
        "/dashboard/login",
        {"token": h.admin_token, "csrf": csrf},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert response.status_code == 303
    cookies = response.headers.getlist("Set-Cookie")
    assert [c for c in cookies if c.startswith(sessions.COOKIE + "=")]
    assert all("Secure" in c for c in cookies), cookies


def test_a_stored_admin_token_logs_in_and_its_revocation_ends_the_session(h: AppHarness):
    made = _token(h, role="admin", label="ops laptop")
    browser = Browser(h.app)
    assert browser.login(made["secret"]).status_code == 303
    page = browser.get("/dashboard/")
    assert page.status_code == 200
    assert f"admin token {made['token']['id']} (ops laptop)" in page.get_data(as_text=True)
    assert h.admin("POST", f"/admin/v1/tokens/{made['token']['id']}/revoke").status_code == 200
    assert browser.get("/dashboard/").status_code == 302


def test_sessions_expire_after_twelve_hours(h: AppHarness, admin: Browser):
    h.clock.advance(sessions.MAX_AGE_MS / 1000 - 1)
    assert admin.get("/dashboard/fleet").status_code == 200
    h.clock.advance(2)
    assert admin.get("/dashboard/fleet").status_code == 302


def test_logout_needs_csrf_and_ends_the_session(h: AppHarness, admin: Browser):
    assert admin.post("/dashboard/logout").status_code == 400
    assert admin.get("/dashboard/").status_code == 200
    response = admin.post("/dashboard/logout", {"csrf": admin.csrf("/dashboard/")})
    assert response.status_code == 303 and response.headers["Location"] == "/dashboard/login"
    assert admin.get("/dashboard/").status_code == 302
    assert "Logged out." in admin.get("/dashboard/login").get_data(as_text=True)


def test_sessions_survive_a_restart_until_the_admin_token_setting_changes(
    collector_db_url: str,
):
    def app(admin_token: str):
        settings = CollectorSettings(
            fleet_token="fleet-token",
            admin_token=admin_token,
            db=collector_db_url,
            notify_sender=False,
            refill_runner=False,
        )
        return create_app(settings)

    first = Browser(app("admin-one"))
    assert first.login("admin-one").status_code == 303
    cookie = first.cookie().value

    def visit(target) -> int:
        browser = Browser(target)
        browser.client.set_cookie(sessions.COOKIE, cookie, path="/dashboard")
        return browser.get("/dashboard/").status_code

    assert visit(app("admin-one")) == 200  # another process (or a restart): same database
    assert visit(app("admin-two")) == 302  # admin_token changed: bootstrap sessions end


def test_logout_kills_a_copied_cookie_and_leaves_other_sessions(h: AppHarness, admin: Browser):
    other = Browser(h.app)
    assert other.login(h.admin_token).status_code == 303
    thief = Browser(h.app)
    thief.client.set_cookie(sessions.COOKIE, admin.cookie().value, path="/dashboard")
    assert thief.get("/dashboard/").status_code == 200  # a copy works while the session lives
    assert admin.post("/dashboard/logout", {"csrf": admin.csrf("/dashboard/")}).status_code == 303
    assert thief.get("/dashboard/").status_code == 302
    assert thief.post("/dashboard/keys/alice-web/deactivate", {"csrf": "x"}).status_code == 303
    assert _active(h, "alice-web")
    assert other.get("/dashboard/").status_code == 200


def test_deactivating_the_tokens_user_ends_the_session(h: AppHarness):
    h.apply(
        team_config(
            [user_config("root", [], role="admin"), user_config("alice", [key_config("a-1")])]
        )
    )
    made = _token(h, role="admin", user_id="root")
    browser = Browser(h.app)
    assert browser.login(made["secret"]).status_code == 303
    assert browser.get("/dashboard/").status_code == 200
    assert h.admin("POST", "/admin/v1/users/root/deactivate").status_code == 200
    assert browser.get("/dashboard/").status_code == 302


# --- failed logins, limited per address -------------------------------------------------------


def test_failed_logins_are_limited_per_address_and_a_success_resets(h: AppHarness):
    browser = Browser(h.app)
    for _ in range(loginlimit.MAX_FAILURES):
        assert browser.login("sft_wrong").status_code == 401
    refused = browser.login(h.admin_token)  # even the right token: the address must wait
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == loginlimit.WINDOW_MS // 1000
    assert "Too many failed logins" in refused.get_data(as_text=True)
    # Another address is not affected.
    elsewhere = browser.post(
        "/dashboard/login",
        {"token": h.admin_token, "csrf": browser.csrf()},
        environ_overrides={"REMOTE_ADDR": "192.0.2.9"},
    )
    assert elsewhere.status_code == 303
    h.clock.advance(loginlimit.WINDOW_MS / 1000)
    assert Browser(h.app).login(h.admin_token).status_code == 303  # the window passed
    # A success clears the count: four more failures are allowed again, not one.
    fresh = Browser(h.app)
    for _ in range(loginlimit.MAX_FAILURES - 1):
        assert fresh.login("sft_wrong").status_code == 401
    assert fresh.login(h.admin_token).status_code == 303
    for _ in range(loginlimit.MAX_FAILURES - 1):
        assert Browser(h.app).login("sft_wrong").status_code == 401
    assert Browser(h.app).login(h.admin_token).status_code == 303


def test_dashboard_secret_must_be_long_and_stays_out_of_repr():
    with pytest.raises(SettingsError, match="dashboard_secret"):
        CollectorSettings(fleet_token="f", admin_token="a", dashboard_secret="short")
    settings = CollectorSettings(fleet_token="f", admin_token="a", dashboard_secret="x" * 32)
    assert "x" * 32 not in repr(settings)


def test_the_failed_login_count_holds_across_workers_and_forgets_old_failures(
    h: AppHarness, collector_db_url: str
):
    # A second app on the same store: another gunicorn worker, or another collector.
    other = make_app(collector_db_url, h.clock)
    try:
        for n in range(loginlimit.MAX_FAILURES):
            app = (h.app, other.app)[n % 2]  # the failures alternate between the two
            assert Browser(app).login("sft_wrong").status_code == 401
        for app in (h.app, other.app):
            refused = Browser(app).login(h.admin_token)
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) == loginlimit.WINDOW_MS // 1000
        h.clock.advance(60)
        later = Browser(other.app).login(h.admin_token)
        assert later.status_code == 429
        assert int(later.headers["Retry-After"]) == loginlimit.WINDOW_MS // 1000 - 60
        h.clock.advance(loginlimit.WINDOW_MS / 1000 - 60)
        # Past the window: another address's failure deletes the expired rows.
        elsewhere = {"REMOTE_ADDR": "192.0.2.9"}
        stranger = Browser(other.app)
        assert (
            stranger.post(
                "/dashboard/login",
                {"token": "sft_wrong", "csrf": stranger.csrf()},
                environ_overrides=elsewhere,
            ).status_code
            == 401
        )
        rows = h.db.read(
            lambda tx: tx.all("SELECT address FROM dashboard_login_failures ORDER BY id")
        )
        assert [r[0] for r in rows] == ["192.0.2.9"]
        assert Browser(h.app).login(h.admin_token).status_code == 303
    finally:
        other.db.close()


# --- CSRF and the key switch ------------------------------------------------------------------


def test_deactivate_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
    h: AppHarness, admin: Browser
):
    for data in ({}, {"csrf": "not-the-token"}, {"csrf": ""}):
        response = admin.post("/dashboard/keys/alice-web/deactivate", data)
        assert response.status_code == 400
        assert "CSRF" in response.get_data(as_text=True)
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert _active(h, "alice-web")
    # A login form's token from another browser (session) is no good either.
    other = Browser(h.app).csrf()
    assert admin.post("/dashboard/keys/alice-web/deactivate", {"csrf": other}).status_code == 400
    assert _active(h, "alice-web")


def test_the_key_switch_is_the_admin_apis_and_reaches_agents(h: AppHarness, admin: Browser):
    version = h.sync()["config_version"]
    csrf = admin.csrf("/dashboard/keys/alice-web")
    response = admin.post("/dashboard/keys/alice-web/deactivate", {"csrf": csrf})
    assert response.status_code == 303
    assert response.headers["Location"] == "/dashboard/keys/alice-web"
    assert not _active(h, "alice-web")
    synced = h.sync()
    assert synced["config_version"] > version  # agents see it on their next sync
    assert [k["active"] for k in synced["config"]["keys"] if k["id"] == "alice-web"] == [False]
    page = admin.get("/dashboard/keys/alice-web").get_data(as_text=True)
    assert "agents refuse it from their next sync" in page and "Activate key" in page

    response = admin.post("/dashboard/keys/alice-web/activate", {"csrf": csrf})
    assert response.status_code == 303 and _active(h, "alice-web")


def test_the_key_switch_refuses_unknown_keys_and_fields(h: AppHarness, admin: Browser):
    csrf = admin.csrf("/dashboard/")
    response = admin.post("/dashboard/keys/nobody/deactivate", {"csrf": csrf})
    assert response.status_code == 404
    assert "key &#39;nobody&#39; does not exist" in response.get_data(as_text=True)
    response = admin.post("/dashboard/keys/alice-web/deactivate", {"csrf": csrf, "x": "1"})
    assert response.status_code == 400 and _active(h, "alice-web")


# --- what pages show, and what they never show ------------------------------------------------


def test_pages_escape_everything_they_show(h: AppHarness, admin: Browser):
    evil_email = "<script>alert(1)</script>@evil.test"
    h.apply(team_config([user_config("mallory", [key_config("mallory-web")], email=evil_email)]))
    h.usage(
        [
            event(
                "mallory-web",
                user_id="mallory",
                url='https://x.test/"><img src=x onerror=alert(2)>',
                status="failed",
                cost=0,
                error="worker_error",
                message="<b>boom</b>",
            )
        ]
    )
    for path in ["/dashboard/", "/dashboard/solves", "/dashboard/usage?since=all"]:
        html = admin.get(path).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>boom" not in html
    overview = admin.get("/dashboard/").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@evil.test" in overview
    solves = admin.get("/dashboard/solves").get_data(as_text=True)
    assert "&lt;img src=x onerror=alert(2)&gt;" in solves and "&lt;b&gt;boom&lt;/b&gt;" in solves
    # Query text comes back into the filter form escaped too.
    page = admin.get('/dashboard/solves?user="><script>x</script>').get_data(as_text=True)
    assert "<script>x" not in page and "&#34;&gt;&lt;script&gt;x" in page


def test_no_secret_token_or_webhook_detail_in_any_page(h: AppHarness, admin: Browser):
    # bob's 0.004 falls to zero: a notification with a delivery to the webhook.
    h.usage([event("bob-web", user_id="bob", cost=4000)])
    h.sync("agent-1", release="1.2.3", stats={"in_flight": 2, "spool_backlog": 7})
    stored = _token(h, role="admin")["secret"]
    forbidden = [
        h.admin_token,
        h.fleet_token,
        stored,
        "sk_test_alice-web_secret",
        "sk_test_bob-web_secret",
        HOOK_SECRET,
        "path-token-XYZ",
        "query-token-XYZ",
    ]
    responses = [(path, admin.get(path)) for path in [*PAGES, "/dashboard/keys/bob-web"]]
    responses.append(("login", Browser(h.app).get("/dashboard/login")))
    for path, response in responses:
        assert response.status_code == 200, path
        html = response.get_data(as_text=True)
        for secret in forbidden:
            assert secret not in html, (path, secret)
    notifications = admin.get("/dashboard/notifications").get_data(as_text=True)
    assert "https://hooks.example.test: pending" in notifications  # scheme://host only
    assert "bob-web" in notifications and "zero" in notifications


def test_pages_carry_the_security_headers_and_no_inline_script_or_style(admin: Browser):
    for path in [*PAGES, "/dashboard/keys/nobody", "/dashboard/solves?status=bogus"]:
        response = admin.get(path)
        headers = response.headers
        assert headers["Content-Security-Policy"].startswith("default-src 'self';"), path
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"
        html = response.get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path  # every script is a file
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html), path
        assert "//" not in " ".join(re.findall(r'(?:src|href)="([^"]*)"', html)), path
    js = admin.get("/dashboard/static/dashboard.js")
    assert js.status_code == 200 and "javascript" in js.mimetype


def test_overview_shows_keys_with_balances_leases_and_freshness(h: AppHarness, admin: Browser):
    h.usage([event("alice-web", cost=2500)])
    h.sync(leases=[{"key_id": "alice-web", "kind": "balance", "want_micros": 1_000_000}])
    html = admin.get("/dashboard/").get_data(as_text=True)
    row = re.search(r'<tr data-key="alice-web">(.*?)</tr>', html, re.S).group(1)
    assert '<td class="num balance">9.9975</td>' in row
    leased = h.admin("GET", "/admin/v1/keys/alice-web").get_json()["leased"]
    assert f'<td class="num">{leased}</td>' in row and leased != "0.00"
    assert "Newest usage stored: 0.0 s ago" in html
    assert 'data-refresh="5"' in html


def test_solves_filters_and_cursor_paging(h: AppHarness, admin: Browser):
    h.usage([event("alice-web", ts=T0 - i) for i in range(55)])
    h.usage([event("bob-web", user_id="bob", ts=T0 + 1, status="failed", cost=0)])
    first = admin.get("/dashboard/solves").get_data(as_text=True)
    assert first.count('<tr class="status-') == 50
    older = re.search(r'<a href="([^"]+)" id="older">', first).group(1).replace("&amp;", "&")
    second = admin.get(older).get_data(as_text=True)
    assert second.count('<tr class="status-') == 6
    assert 'id="older"' not in second and "← newest" in second
    failed = admin.get("/dashboard/solves?status=failed&key=").get_data(as_text=True)
    assert failed.count('<tr class="status-') == 1 and "bob-web" in failed
    keyed = admin.get("/dashboard/solves?key=bob-web").get_data(as_text=True)
    assert keyed.count('<tr class="status-') == 1


def test_text_stored_before_the_check_is_never_rendered_raw(h: AppHarness, admin: Browser):
    # Ingest cleans text now; a row written by an older collector may still hold a NUL.
    h.usage([event("alice-web")])
    h.db.transaction(lambda tx: tx.execute("UPDATE usage_events SET url = ?", ("x\x00\x1b[31m",)))
    page = admin.get("/dashboard/solves").get_data(as_text=True)
    assert "x\ufffd\ufffd[31m" in page and "\x00" not in page and "\x1b" not in page


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/dashboard/solves?status=bogus", "unknown status"),
        ("/dashboard/solves?since=yesterday-ish", "not a time"),
        ("/dashboard/solves?cursor=abc", "not a cursor"),
        ("/dashboard/solves?colour=red", "unknown query parameter"),
        ("/dashboard/solves?user=a&user=b", "given twice"),
        ("/dashboard/usage?since=2026-11-02&until=2026-11-01", "since must be before until"),
        ("/dashboard/notifications?since=soon", "not a time"),
        ("/dashboard/keys/nobody", "does not exist"),
    ],
)
def test_bad_input_is_a_4xx_page_with_the_reason(admin: Browser, path: str, says: str):
    response = admin.get(path)
    assert 400 <= response.status_code < 500
    assert response.mimetype == "text/html"
    assert says in response.get_data(as_text=True)


def test_usage_page_shows_the_reports_exactly(h: AppHarness, admin: Browser):
    h.usage(
        [
            event("alice-web", cost=2000, ts=h.clock.now, project="web"),
            event("alice-web", cost=1, ts=h.clock.now, project="web"),
            event("bob-web", user_id="bob", cost=0, status="failed", ts=h.clock.now),
        ]
    )
    html = admin.get("/dashboard/usage").get_data(as_text=True)
    total = re.search(r"<tfoot><tr><th>TOTAL</th><th></th>(.*?)</tr>", html, re.S).group(1)
    assert '<th class="num">2</th><th class="num">1</th><th class="num">0.002001</th>' in total
    # The project's row links to its charts.
    link = '<a href="/dashboard/activity?project=web">web</a>'
    assert f'<td>{link}</td><td class="num">2</td>' in html


def test_keys_show_their_effective_state_and_low_or_zero_balances(h: AppHarness, admin: Browser):
    h.apply(
        team_config(
            [
                user_config("alice", [key_config("alice-web"), key_config("alice-low", "1.00")]),
                user_config("bob", [key_config("bob-web"), key_config("bob-zero", "0.00")]),
                user_config("carol", [key_config("carol-web")], active=False),
            ],
            low_balance_alert={"enabled": True, "threshold": "1.00", "webhooks": []},
        )
    )
    html = admin.get("/dashboard/").get_data(as_text=True)

    def row(key_id: str) -> str:
        return re.search(rf'<tr data-key="{key_id}"[^>]*>(.*?)</tr>', html, re.S).group(0)

    assert "level-" not in row("alice-web") and ">active<" in row("alice-web")
    assert 'class="level-low"' in row("alice-low") and ">low</span>" in row("alice-low")
    assert 'class="level-zero"' in row("bob-zero") and ">at zero</span>" in row("bob-zero")
    # carol's key is switched on, but carol is not: agents refuse it, so it is not "active".
    assert ">inactive (user)</span>" in row("carol-web")
    page = admin.get("/dashboard/keys/carol-web").get_data(as_text=True)
    assert ">inactive (user)</span>" in page
    assert ">at zero</span>" in admin.get("/dashboard/keys/bob-zero").get_data(as_text=True)
    usage = admin.get("/dashboard/usage?since=all").get_data(as_text=True)
    assert ">inactive (user)</span>" in re.search(r"carol-web</a>.*?</tr>", usage, re.S).group(0)


def test_fleet_page_shows_health_colour_release_last_sync_and_leases(h: AppHarness, admin: Browser):
    h.sync("solver-7", release="2.0.1", stats={"in_flight": 3, "spool_backlog": 11})
    h.sync("solver-7-green", release="2.1.0")
    h.clock.advance(2.5)

    def row(agent_id: str) -> str:
        html = admin.get("/dashboard/fleet").get_data(as_text=True)
        return re.search(rf'<tr class="([^"]*)" data-agent="{agent_id}">(.*?)</tr>', html, re.S)

    found = row("solver-7")
    assert found.group(1) == "health-ok"
    cells = found.group(2)
    assert ">ok</span>" in cells and '<td class="colour">blue</td>' in cells
    assert "2.0.1" in cells and "2.5 s ago" in cells and '<td class="leases">none</td>' in cells
    assert '<td class="num">3</td>' in cells and '<td class="num">11</td>' in cells
    assert '<td class="colour">green</td>' in row("solver-7-green").group(2)
    h.clock.advance(10)
    assert row("solver-7").group(1) == "health-stale"
    h.clock.advance(h.state.settings.lease_ttl)
    assert row("solver-7").group(1) == "health-silent" and ">silent</span>" in row(
        "solver-7"
    ).group(2)
