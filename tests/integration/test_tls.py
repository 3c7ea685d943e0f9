"""TLS on the hops that leave a host (issue 13): real collector, worker and agents on loopback.

The collector and the agents serve HTTPS through their gunicorn_conf (``tls_cert_file`` /
``tls_key_file``), with certificates for 127.0.0.1 from a private CA made for the test. The
agent verifies the collector with ``collector_ca_file``; the CLI with ``--ca-file``.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509

from solverfleet.adminclient import AdminClient
from solverfleet.cli import main
from solverfleet.fleethealth import probe
from solverfleet.process import Service, free_port, http_ok, wait_until
from tests.support.fleet import PRICE, auth, key, micros, new_secret, team, user
from tests.support.tls import TestCA

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HOST = "127.0.0.1"
BODY = {"type": "turnstile", "url": "https://shop.example/", "params": {}}


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLVERFLEET_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({f"SOLVERFLEET_{name.upper()}": value for name, value in settings.items()})
    return env


def _gunicorn(app: str, conf: str, port: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", f"python:{conf}", "--no-control-socket",
            "--bind", f"{HOST}:{port}", app]  # fmt: skip


def _https_ok(url: str, ca_file: Path) -> bool:
    try:
        return requests.get(url, timeout=2, verify=str(ca_file)).status_code == 200
    except requests.RequestException:
        return False


def _start(svc: Service, ready, what: str) -> Service:
    svc.start()
    try:
        wait_until(lambda: _alive(svc) and ready(), timeout=40, what=what)
    except Exception:
        svc.stop(5)
        raise AssertionError(f"{what}:\n{svc.log_tail()}") from None
    return svc


def _alive(svc: Service) -> bool:
    if not svc.alive():
        raise AssertionError(f"{svc.name} exited:\n{svc.log_tail()}")
    return True


class Fleet:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.logs = tmp_path / "logs"
        self.ca = TestCA(tmp_path / "ca")
        self.other_ca = TestCA(tmp_path / "other-ca", name="some other CA")
        self.fleet_token = "fleet-" + "f" * 40
        self.admin_token = "admin-" + "a" * 40
        self.services: list[Service] = []
        self.collector_port = free_port()
        self.collector_url = f"https://{HOST}:{self.collector_port}"
        self.worker_url = ""

    def start_collector(self) -> None:
        cert, keyfile = self.ca.server("collector", HOST)
        env = _env(
            db=f"sqlite:///{self.tmp / 'collector.db'}",
            fleet_token=self.fleet_token,
            admin_token=self.admin_token,
            tls_cert_file=str(cert),
            tls_key_file=str(keyfile),
        )
        argv = _gunicorn(
            "solverfleet.collector:create_app()",
            "solverfleet.collector.gunicorn_conf",
            self.collector_port,
        )
        svc = Service("collector", argv, env=env, log_dir=self.logs, cwd=self.tmp)
        self.services.append(svc)
        _start(svc, lambda: _https_ok(f"{self.collector_url}/readyz", self.ca.ca_file),
               "collector ready over HTTPS")  # fmt: skip

    def start_worker(self) -> None:
        port = free_port()
        self.worker_url = f"http://{HOST}:{port}"  # same host: plain HTTP on loopback
        env = _env(latency_ms="0", failure_rate="0")
        argv = _gunicorn(
            "solverfleet.worker:create_app()", "solverfleet.worker.gunicorn_conf", port
        )
        svc = Service("worker", argv, env=env, log_dir=self.logs)
        self.services.append(svc)
        _start(svc, lambda: http_ok(f"{self.worker_url}/healthz"), "worker ready")

    def start_agent(
        self, name: str, ca_file: Path, *, wait_ready: bool = True, port: int = 0, **extra: str
    ) -> tuple[str, Service]:
        """``extra``: more agent settings; ``port``: a chosen one (0: a free one)."""
        port = port or free_port()
        cert, keyfile = self.ca.server(name, HOST)
        env = _env(
            collector_url=self.collector_url,
            collector_ca_file=str(ca_file),
            fleet_token=self.fleet_token,
            worker_url=self.worker_url,
            agent_id=name,
            state_dir=str(self.tmp / name),
            sync_interval="0.1",
            drain_grace="2",
            tls_cert_file=str(cert),
            tls_key_file=str(keyfile),
            **extra,
        )
        argv = _gunicorn("solverfleet.agent:create_app()", "solverfleet.agent.gunicorn_conf", port)
        svc = Service(name, argv, env=env, log_dir=self.logs)
        self.services.append(svc)
        url = f"https://{HOST}:{port}"
        if wait_ready:
            _start(svc, lambda: _https_ok(f"{url}/readyz", self.ca.ca_file), f"{name} ready")
        else:
            svc.start()
        return url, svc

    def admin(self) -> AdminClient:
        return AdminClient(self.collector_url, self.admin_token, ca_file=str(self.ca.ca_file))

    def stop(self) -> None:
        for svc in reversed(self.services):
            svc.stop(20)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    try:
        fleet.start_collector()
        fleet.start_worker()
        yield fleet
    finally:
        fleet.stop()


def _plain_http_answer(port: int) -> bytes:
    """What a plain-HTTP request to ``port`` gets back (b"" when the server just hangs up)."""
    received = b""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return received


def test_solve_over_https_and_usage_reaches_the_https_collector(fleet: Fleet):
    secret = new_secret("tls")
    with fleet.admin() as admin:
        admin.apply(team(user("alice", key("alice-web", secret, balance="1.00"))))
    agent_url, agent = fleet.start_agent("solver1", fleet.ca.ca_file)

    answer = requests.post(f"{agent_url}/solve", json=BODY, headers=auth(secret), timeout=30,
                           verify=str(fleet.ca.ca_file))  # fmt: skip
    assert answer.status_code == 200, answer.text

    def charged() -> bool:
        with fleet.admin() as admin:
            events = admin.usage(key_id="alice-web")["events"]
            return len(events) == 1 and admin.get_key("alice-web")

    found = wait_until(charged, timeout=20, what="the usage event at the collector")
    assert micros(str(found["balance"])) == micros("1.00") - micros(PRICE)

    # Plain HTTP to either TLS port gets no HTTP answer at all.
    for url in (agent_url, fleet.collector_url):
        port = int(url.rsplit(":", 1)[1])
        assert not _plain_http_answer(port).startswith(b"HTTP/"), url
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://{HOST}:{port}/readyz", timeout=5)
    # The host's health probe reads the HTTPS agent with the CA file.
    port = int(agent_url.rsplit(":", 1)[1])
    status = probe.agent_status(port, 5, probe.agent_tls_context(str(fleet.ca.ca_file)))
    assert status["agent_error"] is None and status["agent"]["ready"] is True, status
    # And an HTTPS client that does not trust the CA refuses the agent.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{agent_url}/readyz", timeout=5, verify=str(fleet.other_ca.ca_file))
    assert agent.alive()


def test_agent_with_the_wrong_ca_cannot_sync_and_says_why(fleet: Fleet):
    secret = new_secret("tls")
    with fleet.admin() as admin:
        admin.apply(team(user("alice", key("alice-web", secret))))
    agent_url, agent = fleet.start_agent("solver2", fleet.other_ca.ca_file, wait_ready=False)

    def logged() -> bool:
        _alive(agent)
        return "certificate verification failed" in agent.log_path.read_text(errors="replace")

    wait_until(logged, timeout=30, what="the agent logging the failed certificate check")
    assert "/agent/v1/sync" in agent.log_path.read_text(errors="replace")
    assert fleet.fleet_token not in agent.log_path.read_text(errors="replace")
    ready = requests.get(f"{agent_url}/readyz", timeout=5, verify=str(fleet.ca.ca_file))
    assert ready.status_code == 503
    with fleet.admin() as admin:
        assert [a for a in admin.agents() if a.get("agent_id") == "solver2"] == []


def _cli(fleet: Fleet, *args: str, ca_file: str | None = None):
    env = {
        "SOLVERFLEET_COLLECTOR": fleet.collector_url,
        "SOLVERFLEET_TOKEN": fleet.admin_token,
        "SOLVERFLEET_CA_FILE": ca_file,
        "SOLVERFLEET_STACK": None,
        "COLUMNS": "200",
    }
    return CliRunner().invoke(main, list(args), env=env)


def test_cli_verifies_the_collector_with_ca_file(fleet: Fleet):
    secret = new_secret("tls")
    with fleet.admin() as admin:
        admin.apply(team(user("alice", key("alice-web", secret))))

    ok = _cli(fleet, "keys", "list", "--ca-file", str(fleet.ca.ca_file))
    assert ok.exit_code == 0, ok.output
    assert "alice-web" in ok.stdout
    by_env = _cli(fleet, "keys", "list", ca_file=str(fleet.ca.ca_file))
    assert by_env.exit_code == 0, by_env.output

    untrusted = _cli(fleet, "keys", "list")  # the system trust store does not know our CA
    assert untrusted.exit_code == 3  # cannot reach it (TLS)
    assert "cannot verify the collector's TLS certificate" in untrusted.stderr
    assert "--ca-file" in untrusted.stderr
    assert fleet.admin_token not in untrusted.output

    plain = _cli(fleet, "keys", "list", "--collector", fleet.collector_url.replace("https", "http"))
    assert plain.exit_code == 3
    assert "cannot reach the collector" in plain.stderr
    assert f"does it serve HTTPS? try {fleet.collector_url}" in plain.stderr

    wrong = _cli(fleet, "keys", "list", "--ca-file", str(fleet.other_ca.ca_file))
    assert wrong.exit_code == 3
    assert "cannot verify the collector's TLS certificate" in wrong.stderr
    assert str(fleet.other_ca.ca_file) in wrong.stderr


def _served_serial(port: int, ca_file: Path) -> int:
    """The serial number of the certificate ``port`` presents (no SNI: an IP address)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection((HOST, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_a_rotated_certificate_is_served_without_a_restart(fleet: Fleet):
    url, agent = fleet.start_agent("agent-rot", fleet.ca.ca_file)
    collector = fleet.services[0]
    listeners = [(int(url.rsplit(":", 1)[1]), "agent-rot", agent)]
    listeners.append((fleet.collector_port, "collector", collector))
    for port, label, svc in listeners:
        pid = svc.proc.pid
        before = _served_serial(port, fleet.ca.ca_file)
        old_cert, old_key = fleet.ca.dir / f"{label}.crt", fleet.ca.dir / f"{label}.key"
        new_cert, new_key = fleet.ca.server(f"{label}-next", HOST)
        # As the pki role replaces them: the key first, so for a moment the pair disagrees.
        os.replace(new_key, old_key)
        assert _served_serial(port, fleet.ca.ca_file) == before, "a broken pair was loaded"
        os.replace(new_cert, old_cert)
        wait_until(
            lambda port=port, before=before: _served_serial(port, fleet.ca.ca_file) != before,
            timeout=10,
            what=f"{label} to serve its new certificate",
        )
        assert svc.alive() and svc.proc.pid == pid, f"{label} restarted:\n{svc.log_tail()}"
    resp = requests.post(
        f"{url}/solve", json=BODY, headers=auth("nosuch"), verify=str(fleet.ca.ca_file), timeout=10
    )
    assert resp.status_code == 401, resp.text
