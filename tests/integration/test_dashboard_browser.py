"""The admin dashboard in a real headless browser against a real fleet (gunicorn collector,
worker and agent on loopback): log in, find a solve made seconds before, watch a balance move
without reloading, see the solves in the key's and the fleet's charts (their SVG data
attributes), switch the key off from its page and see the agent refuse the next solve;
every page at 1366 and 800 px wide with no id broken across lines (screenshots kept under the
test's tmp dir, ``screenshots/``); after logout a copied session cookie gets the login page.

Debian's chromium driven by Playwright (``executable_path``: no browser download). Skipped
only when /usr/bin/chromium is missing (``make system-deps`` installs it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from solverfleet.money import format_micros
from solverfleet.process import wait_until
from tests.support.fleet import PRICE, key, micros, new_secret, solve, team, user

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed at /usr/bin/chromium (make system-deps)",
    ),
    # The dashboard's queries run on both stores in tests/unit/test_dashboard.py.
    pytest.mark.parametrize("store_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # fresh profile: no cookies from elsewhere
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


def _watch(page: Page) -> list[str]:
    """Console errors and page errors (a CSP violation shows up here) and confirm dialogs."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    return problems


PAGES = [
    "",
    "keys/alice-web",
    "usage",
    "activity?user=alice",
    "solves",
    "notifications",
    "fleet",
    "audit",
]
WIDTHS = (1366, 800)
# Every id cell whose text the browser laid out on more than one line.
_BROKEN_IDS = """() => [...document.querySelectorAll(".id")].filter((cell) => {
  const range = document.createRange();
  range.selectNodeContents(cell);
  const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
  return tops.size > 1;
}).map((cell) => cell.textContent.trim())"""


def _screenshots(page: Page, base: str, out: Path) -> None:
    """Every page at each width: kept as a file to look at, and checked for wrapped ids."""
    out.mkdir(exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for path in PAGES:
            page.goto(f"{base}/{path}")
            name = path.replace("/", "-").replace("?", "-").replace("=", "-") or "overview"
            name += f"-{width}.png"
            page.screenshot(path=str(out / name), full_page=True)
            assert page.evaluate(_BROKEN_IDS) == [], f"{path} at {width} px"


def _reload_until(page: Page, selector: str, timeout: float = 10.0) -> None:
    # Usage reaches the collector on the agent's next sync (0.25 s): reload until it shows.
    def shown() -> bool:
        page.reload()
        return page.locator(selector).count() > 0

    wait_until(shown, timeout=timeout, interval=0.2, what=f"{selector} on {page.url}")


def _wait_chart(page: Page, chart: str, total: int) -> None:
    """Until the chart's ``data-total`` is ``total`` (charts are drawn when a page loads)."""
    svg = page.locator(f'svg[data-chart="{chart}"]')

    def shown() -> bool:
        if svg.get_attribute("data-total") == str(total):
            return True
        page.reload()
        return False

    wait_until(shown, timeout=15, interval=0.2, what=f"{chart} to total {total}")


def test_dashboard_login_solves_and_key_switch_in_chromium(fleet_factory, browser, tmp_path):
    stack = fleet_factory(agents=1)
    secret = new_secret("dash")
    with stack.admin_client() as admin:
        admin.apply(
            team(
                user("alice", key("alice-web", secret, "5.00")),
                user("bob", key("bob-staging-checkout-0001", new_secret("b"), "0.00")),
                user("carol", key("carol-web", new_secret("c")), active=False),
            )
        )
        user_token = admin.create_token("user", user_id="alice")["secret"]
    stack.wait_for_key(secret)
    answer = solve(stack.agent_url(0), secret, url="https://shop.example.test/login")
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["X-Request-Id"]
    never_in_html = [secret, stack.admin_token, stack.fleet_token, user_token]

    page = browser.new_page()
    problems = _watch(page)
    base = f"{stack.collector_url}/dashboard"

    # No session: the login page. Wrong and non-admin credentials are refused there.
    page.goto(f"{base}/")
    assert page.url == f"{base}/login"
    for wrong, status, says in [
        ("sft_never-issued-token", 401, "Unknown or revoked token."),
        (user_token, 403, "this is a user token"),
        (stack.fleet_token, 403, "this is a service token"),
    ]:
        page.fill("#token", wrong)
        with page.expect_response(lambda r: r.request.method == "POST") as refused:
            page.click("form.login button")
        assert refused.value.status == status
        assert says in page.locator("p.error").inner_text()
        assert wrong not in page.content()
    page.goto(f"{base}/fleet")
    assert page.url == f"{base}/login"
    # The browser reports each refused login (401, 403) on the console; nothing else is due.
    assert all("status of 40" in p for p in problems) and len(problems) == 3, problems
    problems.clear()

    # The admin token logs in; the cookie is a random id (no token) scripts cannot read.
    page.fill("#token", stack.admin_token)
    page.click("form.login button")
    page.wait_for_url(f"{base}/")
    (cookie,) = [c for c in browser.cookies() if c["name"] == "solverfleet_dashboard"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert len(cookie["value"]) == 43 and stack.admin_token not in cookie["value"]
    response = page.reload()
    assert response.headers["content-security-policy"].startswith("default-src 'self';")
    assert page.locator('tr[data-key="alice-web"] td.state').inner_text() == "active"
    assert page.locator('tr[data-key="carol-web"] td.state').inner_text() == "inactive (user)"
    zero = page.locator('tr[data-key="bob-staging-checkout-0001"] td.balance')
    assert zero.inner_text() == "0.00 at zero"

    # The solve made seconds ago is in recent solves, with its key, type and cost.
    page.click("nav >> text=Solves")
    row_selector = f'#solves-table tr[data-request="{request_id}"]'
    _reload_until(page, row_selector)
    row = page.locator(row_selector)
    assert row.locator("td.key").inner_text() == "alice-web"
    assert row.locator("td.type").inner_text() == "turnstile"
    assert row.locator("td.status").inner_text() == "success"
    assert row.locator("td.cost").inner_text() == format_micros(micros(PRICE))
    assert row.locator("td.url").inner_text() == "https://shop.example.test/login"
    for text in never_in_html:
        assert text not in page.content()

    # The key's page re-reads its balance every few seconds, without a reload.
    row.locator("td.key a").click()
    page.wait_for_url(f"{base}/keys/alice-web")
    balance = page.locator("#key-balance")
    before = balance.inner_text()
    assert solve(stack.agent_url(0), secret).status_code == 200
    wait_until(
        lambda: balance.inner_text() != before, timeout=15, interval=0.2, what="live balance"
    )
    assert micros(before) - micros(balance.inner_text()) == micros(PRICE)
    for text in never_in_html:
        assert text not in page.content()
    # Its charts, drawn on a load, count both solves: figures from the SVG's data attributes.
    page.reload()
    _wait_chart(page, "key-solves-hourly", 2)
    _wait_chart(page, "key-spend-daily", 2 * micros(PRICE))
    for grain in ("hourly", "daily"):  # the balance now ends both histories
        chart = page.locator(f'svg[data-chart="key-balance-{grain}"]')
        assert chart.get_attribute("data-total") == str(micros(balance.inner_text()))

    # Deactivate from the page (a confirm dialog, accepted): the agent refuses the next solve.
    started = time.monotonic()
    page.click("#toggle-key")
    page.wait_for_url(f"{base}/keys/alice-web")
    assert page.locator("#key-state").inner_text() == "inactive"
    assert "agents refuse it" in page.locator("p.flash").inner_text()

    def refused() -> bool:
        return solve(stack.agent_url(0), secret).status_code in (401, 403)

    wait_until(refused, timeout=5, interval=0.02, what="the agent to refuse the key")
    latency = time.monotonic() - started
    print(f"dashboard click -> agent refuses the key after {latency * 1000:.0f} ms")
    assert latency < 2.0
    last = solve(stack.agent_url(0), secret)
    assert last.status_code == 403 and last.json()["error"] == "key_disabled"

    # And back on: solves succeed again.
    page.click("#toggle-key")
    page.wait_for_url(f"{base}/keys/alice-web")
    assert page.locator("#key-state").inner_text() == "active"
    wait_until(
        lambda: solve(stack.agent_url(0), secret).status_code == 200,
        timeout=5,
        interval=0.05,
        what="the agent to accept the key again",
    )

    # The audit page shows both clicks, each made by this session's admin from the dashboard.
    page.click("nav >> text=Audit")
    page.wait_for_url(f"{base}/audit")
    rows = page.locator("#audit tbody tr")
    assert page.locator("#audit td.action").all_inner_texts()[:2] == [
        "key.activate",
        "key.deactivate",
    ]
    assert 'via: "dashboard"' in rows.nth(0).locator("td.after").inner_text()
    for text in never_in_html:
        assert text not in page.content()

    # The fleet's chart on the overview: every stored success, the ones above included (solves
    # the agent took while the switch was on its way are counted too: compared with the API's).
    page.click("nav >> text=Accounts & keys")
    chart = page.locator('svg[data-chart="fleet-solves-hourly"]')
    with stack.admin_client() as admin:

        def agrees() -> bool:
            stored = admin.summary()["successes"]
            if stored >= 3 and chart.get_attribute("data-total") == str(stored):
                return True
            page.reload()  # not waiting for the 5 s re-read
            return False

        wait_until(agrees, timeout=15, interval=0.2, what="the fleet chart to count every solve")
    bars = chart.locator("rect[data-value]")
    values = [int(v) for v in bars.evaluate_all("rs => rs.map(r => r.dataset.value)")]
    assert len(values) == 48 and sum(values) == int(chart.get_attribute("data-total"))
    assert bars.nth(47).locator("title").text_content().endswith(f": {values[47]}")
    page.click("nav >> text=Usage")
    rate = page.locator('svg[data-chart="type-success"] rect[data-label="turnstile"]')
    assert rate.get_attribute("data-value") == "10000"  # 100.00 %: every call succeeded

    _screenshots(page, base, tmp_path / "screenshots")

    # Log out: the session is gone, also for a copy of its cookie taken before.
    page.click("form.logout button")
    page.wait_for_url(f"{base}/login")
    page.goto(f"{base}/")
    assert page.url == f"{base}/login"
    browser.add_cookies([cookie])
    page.goto(f"{base}/fleet")
    assert page.url == f"{base}/login"
    assert problems == []
