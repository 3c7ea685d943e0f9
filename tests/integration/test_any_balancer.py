"""res.php behind any balancer (issue 16): a plain round-robin HAProxy, no task-id rules.

Three real agents under gunicorn over TLS (the test CA of tests/integration/test_tls.py), each
registering its address and node id with a real collector; HAProxy on loopback passes TLS
through (mode tcp) round-robin, so in.php and each res.php land on whichever agent is next.
The official ``2captcha-python`` client (PyPI), pointed at the balancer with its documented
``server`` argument (it speaks in.php/res.php over https), solves reCAPTCHA v2, Turnstile and an
image, and ``python-anticaptcha`` (createTask/getTaskResult) three images; the balance moves by
exactly the prices. Then an agent is gracefully restarted between
in.php and res.php: its answer is still fetched through the balancer and charged once.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
from python_anticaptcha import AnticaptchaClient, ImageToTextTask
from twocaptcha import TwoCaptcha

from solverfleet.agent.compat.forward import node_of
from solverfleet.process import Service, free_port, wait_until
from tests.integration.test_agent_pingback import receiver  # noqa: F401 - the POST recorder
from tests.integration.test_tls import HOST, Fleet, fleet  # noqa: F401 - the HTTPS fleet fixture
from tests.support.fleet import key, micros, new_secret, team, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
PAGE = "https://shop.test/login"
PRICES = {"recaptcha-v2": "0.003", "turnstile": "0.002", "image-to-text": "0.0007"}
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2  # 520 bytes: over the 100-byte minimum
NODES = (201, 202, 203)
# The test's pingback receiver listens on loopback: allowed explicitly (refused by default).
PINGBACK_SETTINGS = {"pingback_allow_cidrs": "127.0.0.0/8", "pingback_backoff": "0.2"}


def _haproxy(stack: Fleet, port: int, agents: list[int]) -> Service:
    """A plain round-robin balancer: TLS passed through, no rule about task ids."""
    ca = stack.ca.ca_file
    servers = "\n".join(
        f"  server a{i} {HOST}:{p} check check-ssl verify required ca-file {ca}"
        " inter 200ms fall 1 rise 1"
        for i, p in enumerate(agents)
    )
    config = stack.tmp / "haproxy.cfg"
    config.write_text(
        "global\n  maxconn 200\n"
        "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n"
        "  timeout server 30s\n  retries 3\n  option redispatch\n"
        f"frontend fe\n  bind {HOST}:{port}\n  default_backend agents\n"
        "backend agents\n  balance roundrobin\n  option httpchk GET /readyz\n"
        f"{servers}\n"
    )
    svc = Service("haproxy", ["haproxy", "-db", "-f", str(config)], log_dir=stack.logs)
    stack.services.append(svc)
    return svc.start()


def _agents_behind_a_balancer(stack: Fleet) -> tuple[list[int], list[tuple[str, Service]], int]:
    """3 agents registering their addresses, and the round-robin balancer's port."""
    ports = [free_port() for _ in NODES]
    agents = []
    for i, (node, port) in enumerate(zip(NODES, ports, strict=True)):
        agents.append(stack.start_agent(
            f"solver{i}", stack.ca.ca_file, port=port, node_id=str(node),
            advertise_url=f"https://{HOST}:{port}", **PINGBACK_SETTINGS,
        ))  # fmt: skip
    lb_port = free_port()
    _haproxy(stack, lb_port, ports)
    return ports, agents, lb_port


def _forwards(stack: Fleet, urls: list[str]) -> Decimal:
    """Requests the agents answered with another agent's answer (their /metrics)."""
    total = Decimal(0)
    for url in urls:
        text = requests.get(f"{url}/metrics", timeout=5, verify=str(stack.ca.ca_file)).text
        for line in text.splitlines():
            if line.startswith('solverfleet_agent_compat_forwards_total{outcome="answered"}'):
                total += Decimal(line.split()[-1])
    return total


def _spent(stack: Fleet) -> tuple[int, int]:
    with stack.admin() as admin:
        events = admin.usage(key_id="alice-web")["events"]
        found = admin.get_key("alice-web")
    return len([e for e in events if e["status"] == "success"]), micros(str(found["balance"]))


def test_official_client_through_a_round_robin_balancer(fleet: Fleet, monkeypatch):  # noqa: F811
    secret = new_secret("anybal")
    with fleet.admin() as admin:
        admin.apply(team(user("alice", key("alice-web", secret, "1.00")), prices=PRICES))
    ports, agents, lb_port = _agents_behind_a_balancer(fleet)
    urls = [url for url, _ in agents]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fleet.ca.ca_file))  # the client's own requests
    solver = TwoCaptcha(secret, server=f"{HOST}:{lb_port}", pollingInterval=1)
    wait_until(lambda: _balance_ok(solver), timeout=20, what="the balancer serving the key")

    recaptcha = solver.recaptcha(sitekey="6Le-wvkSAAAAAPBMRTvw0Q4Muexq9bi0DJwx", url=PAGE)
    turnstile = solver.turnstile(sitekey="0x4AAAAAAAC3DHQFLr1GavRN", url=PAGE)
    image = solver.normal(base64.b64encode(IMAGE).decode())
    for result in (recaptcha, turnstile, image):
        assert result["code"].startswith("demo-"), result
    # The JSON task protocol too (python-anticaptcha): getTaskResult polls land anywhere.
    anti = AnticaptchaClient(secret, host=f"{HOST}:{lb_port}", use_ssl=True)
    jobs = [anti.createTask(ImageToTextTask(IMAGE)) for _ in NODES]
    for job in jobs:
        job.join(maximum_time=30)
        assert job.get_captcha_text().startswith("demo-")
    assert _forwards(fleet, urls) > 0  # some polls landed on an agent that did not own it

    spent = sum(micros(p) for p in PRICES.values()) + len(NODES) * micros(PRICES["image-to-text"])
    wait_until(lambda: _spent(fleet) == (6, micros("1.00") - spent), timeout=20,
               what="exactly the three prices charged")  # fmt: skip

    # Graceful restart of the owner between in.php and res.php.
    task_id = solver.send(method="turnstile", sitekey="0x4AAAAAAAC3DHQFLr1GavRN", pageurl=PAGE)
    owner = NODES.index(node_of(task_id))
    url, svc = agents[owner]
    svc.stop(20)  # SIGTERM: drain, keep the undelivered answer, ship, return leases
    assert (fleet.tmp / f"solver{owner}" / "compat-tasks.json").exists()
    fleet.services.remove(svc)
    fleet.start_agent(
        f"solver{owner}", fleet.ca.ca_file, port=ports[owner], node_id=str(NODES[owner]),
        advertise_url=url, **PINGBACK_SETTINGS,
    )  # fmt: skip
    answer = solver.wait_result(task_id, 30, 1)
    assert answer.startswith("demo-")
    for _ in range(3):  # again, through whichever agent: the same answer, no charge
        assert solver.get_result(task_id) == answer
    spent += micros(PRICES["turnstile"])
    wait_until(lambda: _spent(fleet) == (7, micros("1.00") - spent), timeout=20,
               what="the restarted agent's answer charged once")  # fmt: skip
    assert not Path(fleet.tmp / f"solver{owner}" / "compat-tasks.json").exists()


def _balance_ok(solver: TwoCaptcha) -> bool:
    try:
        return Decimal(str(solver.balance())) == Decimal("1.00")
    except Exception:  # the library raises its own errors while agents come up
        return False


def test_pingbacks_through_a_round_robin_balancer(fleet: Fleet, receiver) -> None:  # noqa: F811
    """A pingback URL registered through the balancer (on whichever agent) is accepted by
    every agent; in.php's pingback and createTask's callbackUrl are called with the answer,
    which res.php / getTaskResult through the balancer then return again, charged once."""
    secret = new_secret("anybal-ping")
    with fleet.admin() as admin:
        admin.apply(team(user("alice", key("alice-web", secret, "1.00")), prices=PRICES))
    _, _, lb_port = _agents_behind_a_balancer(fleet)
    lb = f"https://{HOST}:{lb_port}"
    ca = str(fleet.ca.ca_file)

    def res(**params) -> str:
        return requests.get(f"{lb}/res.php", params={"key": secret, **params}, timeout=10,
                            verify=ca).text  # fmt: skip

    wait_until(lambda: res(action="getbalance") == "1.00", timeout=20, what="the key served")
    hook = f"{receiver.url}/ok"
    assert res(action="add_pingback", addr=hook) == "OK"
    # Every agent holds it after its next delta: three get_pingback in a row hit all three.
    wait_until(lambda: all(res(action="get_pingback") == f"OK|{hook}" for _ in NODES),
               timeout=10, what="the pingback URL on every agent")  # fmt: skip
    form = {"key": secret, "method": "turnstile", "sitekey": "0x4AAAAAAAC3DHQFLr1GavRN",
            "pageurl": PAGE, "pingback": hook}  # fmt: skip
    submitted = requests.post(f"{lb}/in.php", data=form, timeout=10, verify=ca).text
    assert submitted.startswith("OK|"), submitted
    task = submitted[3:]
    created = requests.post(
        f"{lb}/createTask", timeout=10, verify=ca,
        json={"clientKey": secret, "callbackUrl": hook, "task": {
            "type": "TurnstileTaskProxyless", "websiteURL": PAGE, "websiteKey": "0x4A"}},
    ).json()  # fmt: skip
    assert created["errorId"] == 0, created
    wait_until(lambda: len(receiver.to("/ok")) == 2, timeout=15, what="both pingbacks")
    forms = [b for kind, b in receiver.to("/ok") if kind.startswith("application/x-www")]
    [sent] = [parse_qs(b.decode()) for b in forms]
    assert sent["id"] == [task]
    for _ in NODES:  # through whichever agent: the pingback's answer again, no charge
        assert res(action="get", id=task) == f"OK|{sent['code'][0]}"
    spent = 2 * micros(PRICES["turnstile"])
    wait_until(lambda: _spent(fleet) == (2, micros("1.00") - spent), timeout=20,
               what="each pingback's answer charged once")  # fmt: skip
