"""The JSON task protocol through an unmodified public client: ``python-anticaptcha`` (PyPI).

Two real agents under gunicorn, a real collector and worker. The library is pointed at each
agent with its documented ``host`` and ``use_ssl`` arguments (nothing else is changed); each
client creates tasks on, and polls, one agent, as a client behind the balancer's task-id
routing does. Money is checked exactly: at the collector, and through the library's
``getBalance`` on every agent. A second test runs the library over HTTPS against an agent
with a certificate from a test CA (tests/integration/test_tls.py's fleet).
"""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import requests
from python_anticaptcha import (
    AnticaptchaClient,
    AnticaptchaException,
    HCaptchaTaskProxyless,
    ImageToTextTask,
    NoCaptchaTaskProxylessTask,
)

from solverfleet.process import wait_until
from tests.integration.test_tls import Fleet, fleet  # noqa: F401 - the HTTPS fleet fixture
from tests.support.fleet import key, micros, new_secret, team, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
PAGE = "https://shop.test/login"
PRICES = {"recaptcha-v2": "0.003", "hcaptcha": "0.002", "image-to-text": "0.0007"}
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2  # 520 bytes: over the 100-byte minimum


def _client(url: str, secret: str) -> AnticaptchaClient:
    scheme, host = url.split("://")
    return AnticaptchaClient(secret, host=host, use_ssl=scheme == "https")


def _tasks():
    return [
        ("recaptcha-v2", NoCaptchaTaskProxylessTask(PAGE, "6Le-wvkSAAAAAPBMRTvw0Q4Muexq9bi0DJwx")),
        ("hcaptcha", HCaptchaTaskProxyless(PAGE, "10000000-ffff-ffff-ffff-000000000001")),
        ("image-to-text", ImageToTextTask(IMAGE, numeric=1)),
    ]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store is not the point
def test_public_client_solves_and_pays_exactly(fleet_factory):
    stack = fleet_factory(agents=2, extra_agent_env=lambda i: {"SOLVERFLEET_NODE_ID": str(101 + i)})
    secret = new_secret("tasks")
    with stack.admin_client() as admin:
        admin.apply(team(user("alice", key("alice-web", secret, "1.00")), prices=PRICES))
    stack.wait_for_key(secret)
    clients = [_client(stack.agent_url(i), secret) for i in range(2)]
    assert all(Decimal(str(c.getBalance())) == Decimal("1.00") for c in clients)

    # Every task type on each agent; the library's own polling (join) fetches the answers.
    jobs = [(slug, c.createTask(task)) for c in clients for slug, task in _tasks()]
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda job: job[1].join(maximum_time=30, backoff=True), jobs))
    for slug, job in jobs:
        if slug == "image-to-text":
            assert job.get_captcha_text().startswith("demo-")
        else:
            assert job.get_solution_response().startswith("demo-")
        assert (
            job._last_result["cost"] == PRICES[slug]
        )  # the raw answer: the library has no getter for cost
    assert jobs[0][1].check_is_ready()  # fetching again charges nothing more
    assert jobs[0][1].report_incorrect_recaptcha() is True
    assert jobs[2][1].report_incorrect_image() is True

    spent = 2 * sum(micros(p) for p in PRICES.values())
    expected = micros("1.00") - spent

    def settled():
        with stack.admin_client() as admin:
            summary = admin.summary()
        return summary["successes"] == len(jobs) and summary["events"] == len(jobs) + 2

    wait_until(settled, timeout=15, what="usage shipped")
    with stack.admin_client() as admin:
        summary = admin.summary()
    assert summary["usage_micros"] == spent
    assert summary["keys"]["alice-web"]["balance_micros"] == expected
    want = Decimal(expected) / 1_000_000
    for c in clients:
        wait_until(lambda c=c: Decimal(str(c.getBalance())) == want, timeout=10,
                   what="balance on each agent")  # fmt: skip

    # The library raises the protocol's errors as they are spelled.
    with pytest.raises(AnticaptchaException) as refused:
        _client(stack.agent_url(0), new_secret("never-issued")).getBalance()
    assert refused.value.error_code == "ERROR_KEY_DOES_NOT_EXIST"
    with pytest.raises(AnticaptchaException) as refused:
        clients[0].createTask(ImageToTextTask(base64.b64decode("aGk=")))
    assert refused.value.error_code == "ERROR_ZERO_CAPTCHA_FILESIZE"
    # Agents without advertise_url are no peers: their tasks are unknown elsewhere.
    with pytest.raises(AnticaptchaException) as refused:
        clients[1].getTaskResult(jobs[0][1].task_id)
    assert refused.value.error_code == "ERROR_NO_SUCH_CAPCHA_ID"


def test_public_client_over_https_with_the_fleet_ca(fleet: Fleet, monkeypatch):  # noqa: F811
    """The library's own HTTPS (use_ssl, the default) trusts the fleet's CA through requests'
    standard REQUESTS_CA_BUNDLE; an untrusted CA is refused."""
    secret = new_secret("tasks-tls")
    with fleet.admin() as admin:
        admin.apply(team(user("alice", key("alice-web", secret, "1.00")), prices=PRICES))
    agent_url, _ = fleet.start_agent("solver1", fleet.ca.ca_file)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fleet.ca.ca_file))
    client = _client(agent_url, secret)
    job = client.createTask(_tasks()[0][1])
    job.join(maximum_time=30, backoff=True)
    assert job.get_solution_response().startswith("demo-")
    want = Decimal("1.00") - Decimal(PRICES["recaptcha-v2"])
    wait_until(lambda: Decimal(str(client.getBalance())) == want, timeout=10,
               what="the price off the balance")  # fmt: skip
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fleet.other_ca.ca_file))
    with pytest.raises(requests.exceptions.SSLError):
        _client(agent_url, secret).getBalance()
