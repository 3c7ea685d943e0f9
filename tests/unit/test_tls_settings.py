"""TLS settings (issue 13): validation of the certificate/key/CA files, the gunicorn confs'
certfile/keyfile, the agent's and the CLI's ``verify=`` and the CLI's URL hint."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from solverfleet.adminclient import AdminClient, AdminError
from solverfleet.agent.fleetclient import FleetClient, system_ca, tls_verify
from solverfleet.agent.settings import AgentSettings
from solverfleet.cli import main
from solverfleet.collector.settings import CollectorSettings
from solverfleet.settings import SettingsError, load_settings
from tests.support.tls import TestCA

AGENT = {"SOLVERFLEET_COLLECTOR_URL": "https://collector.test:8400", "SOLVERFLEET_FLEET_TOKEN": "t"}
COLLECTOR = {"SOLVERFLEET_FLEET_TOKEN": "fleet", "SOLVERFLEET_ADMIN_TOKEN": "admin"}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def pair(ca: TestCA) -> tuple[str, str]:
    cert, key = ca.server("server", "127.0.0.1", "collector.test")
    return str(cert), str(key)


def agent(**settings: str) -> AgentSettings:
    env = {**AGENT, **{f"SOLVERFLEET_{k.upper()}": v for k, v in settings.items()}}
    return load_settings(AgentSettings, env=env)


def collector(**settings: str) -> CollectorSettings:
    env = {**COLLECTOR, **{f"SOLVERFLEET_{k.upper()}": v for k, v in settings.items()}}
    return CollectorSettings.load(env=env)


LOADERS = [pytest.param(agent, id="agent"), pytest.param(collector, id="collector")]


@pytest.mark.parametrize("load", LOADERS)
def test_tls_is_off_by_default(load):
    settings = load()
    assert (settings.tls_cert_file, settings.tls_key_file) == ("", "")


@pytest.mark.parametrize("load", LOADERS)
def test_a_certificate_and_its_key_are_accepted(load, pair):
    settings = load(tls_cert_file=pair[0], tls_key_file=pair[1])
    assert (settings.tls_cert_file, settings.tls_key_file) == pair


@pytest.mark.parametrize("load", LOADERS)
def test_cert_without_key_and_key_without_cert_are_refused(load, pair):
    with pytest.raises(SettingsError, match=r"^tls_key_file: must be set when tls_cert_file"):
        load(tls_cert_file=pair[0])
    with pytest.raises(SettingsError, match=r"^tls_cert_file: must be set when tls_key_file"):
        load(tls_key_file=pair[1])


@pytest.mark.parametrize("load", LOADERS)
def test_missing_files_are_named(load, pair, tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(SettingsError, match=r"^tls_cert_file: no such file: .*nope\.pem"):
        load(tls_cert_file=missing, tls_key_file=pair[1])
    with pytest.raises(SettingsError, match=r"^tls_key_file: no such file: .*nope\.pem"):
        load(tls_cert_file=pair[0], tls_key_file=missing)
    with pytest.raises(SettingsError, match=r"^tls_key_file: .* is a directory"):
        load(tls_cert_file=pair[0], tls_key_file=str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
@pytest.mark.parametrize("load", LOADERS)
def test_unreadable_key_is_named(load, pair, tmp_path):
    key = tmp_path / "locked.key"
    key.write_bytes(Path(pair[1]).read_bytes())
    key.chmod(0)
    with pytest.raises(SettingsError, match=r"^tls_key_file: cannot read .*locked\.key"):
        load(tls_cert_file=pair[0], tls_key_file=str(key))


@pytest.mark.parametrize("load", LOADERS)
def test_mismatched_or_non_pem_files_are_refused(load, pair, tmp_path):
    _, other_key = TestCA(tmp_path / "other").server("other")
    with pytest.raises(SettingsError, match=r"^tls_cert_file/tls_key_file: .*KEY_VALUES_MISMATCH"):
        load(tls_cert_file=pair[0], tls_key_file=str(other_key))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match=r"^tls_cert_file/tls_key_file: "):
        load(tls_cert_file=str(junk), tls_key_file=pair[1])


def test_collector_ca_file(ca, pair, tmp_path):
    assert agent().collector_ca_file == ""
    assert agent(collector_ca_file=str(ca.ca_file)).collector_ca_file == str(ca.ca_file)
    with pytest.raises(SettingsError, match=r"^collector_ca_file: no such file"):
        agent(collector_ca_file=str(tmp_path / "ca.pem"))
    with pytest.raises(SettingsError, match=r"^collector_ca_file: .* holds no PEM CA"):
        agent(collector_ca_file=pair[1])  # a key, not a certificate


def test_settings_file_names_work_too(ca, pair, tmp_path):
    config = tmp_path / "agent.yml"
    config.write_text(
        f"tls_cert_file: {pair[0]}\ntls_key_file: {pair[1]}\ncollector_ca_file: {ca.ca_file}\n"
    )
    settings = load_settings(AgentSettings, env={**AGENT, "SOLVERFLEET_CONFIG": str(config)})
    assert (settings.tls_cert_file, settings.collector_ca_file) == (pair[0], str(ca.ca_file))


# --- gunicorn confs ---------------------------------------------------------------------------


def _conf(module: str, monkeypatch, env: dict[str, str]):
    for name in list(os.environ):
        if name.startswith("SOLVERFLEET_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    mod = importlib.import_module(module)
    return importlib.reload(mod)


@pytest.mark.parametrize(
    ("module", "base"),
    [
        ("solverfleet.collector.gunicorn_conf", COLLECTOR),
        ("solverfleet.agent.gunicorn_conf", AGENT),
    ],
)
def test_gunicorn_confs_serve_tls_only_when_configured(module, base, pair, monkeypatch):
    plain = _conf(module, monkeypatch, base)
    assert not hasattr(plain, "certfile") and not hasattr(plain, "keyfile")
    tls = {**base, "SOLVERFLEET_TLS_CERT_FILE": pair[0], "SOLVERFLEET_TLS_KEY_FILE": pair[1]}
    served = _conf(module, monkeypatch, tls)
    assert (served.certfile, served.keyfile) == pair
    with pytest.raises(SettingsError, match="tls_key_file"):
        _conf(module, monkeypatch, {**tls, "SOLVERFLEET_TLS_KEY_FILE": ""})


# --- clients ----------------------------------------------------------------------------------


def test_verify_is_the_ca_file_or_the_system_store_never_false(ca, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/somewhere/else.pem")
    assert tls_verify("https://c:8400", str(ca.ca_file)) == str(ca.ca_file)
    assert tls_verify("https://c:8400", "") == system_ca()
    assert system_ca() is not False
    client = FleetClient("https://c:8400", "tok", 1.0, ca_file=str(ca.ca_file))
    assert client.verify == client.session.verify == str(ca.ca_file)
    admin = AdminClient("https://c:8400", "tok", ca_file=str(ca.ca_file))
    assert admin.verify == str(ca.ca_file)
    assert AdminClient("HTTPS://c:8400", "tok").verify == system_ca()


def test_admin_client_refuses_a_url_without_scheme():
    with pytest.raises(AdminError, match=r"no scheme: did you mean https://collector\.test:8400\?"):
        AdminClient("collector.test:8400", "tok")


def _cli(*args: str, **env: str | None):
    base = {"SOLVERFLEET_TOKEN": "tok", "SOLVERFLEET_STACK": None, "SOLVERFLEET_CA_FILE": None}
    return CliRunner().invoke(main, list(args), env={**base, **env})


def test_cli_collector_without_scheme_gets_a_hint():
    result = _cli("keys", "list", "--collector", "collector.test:8400")
    assert result.exit_code == 2
    assert "--collector: collector URL 'collector.test:8400' has no scheme" in result.stderr
    assert "https://collector.test:8400" in result.stderr
    env_too = _cli("keys", "list", SOLVERFLEET_COLLECTOR="ftp://collector.test")
    assert env_too.exit_code == 2 and "must be http://HOST:PORT or https://" in env_too.stderr


def test_cli_ca_file_must_exist(tmp_path):
    missing = str(tmp_path / "ca.pem")
    result = _cli("keys", "list", "--collector", "https://c:1", "--ca-file", missing)
    assert result.exit_code == 2
    assert "--ca-file" in result.stderr and "does not exist" in result.stderr
    by_env = _cli("keys", "list", "--collector", "https://c:1", SOLVERFLEET_CA_FILE=missing)
    assert by_env.exit_code == 2 and "does not exist" in by_env.stderr


# --- the health probe against an HTTPS agent -----------------------------------------------------


def test_probe_reads_an_https_agent_and_verifies_its_chain(ca, tmp_path):
    import ssl
    import threading

    from flask import Flask, jsonify
    from werkzeug.serving import make_server

    from solverfleet.fleethealth import probe
    from solverfleet.process import free_port

    app = Flask("agent_stand_in")
    app.get("/admin/status")(lambda: jsonify(agent_id="solver1", ready=True))
    cert, key = ca.server("solver1", "solver1.example")  # named as the LB knows the host
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        good = probe.agent_status(port, 5, probe.agent_tls_context(str(ca.ca_file)))
        assert good == {"agent": {"agent_id": "solver1", "ready": True}, "agent_error": None}
        other = TestCA(tmp_path / "other")
        bad = probe.agent_status(port, 5, probe.agent_tls_context(str(other.ca_file)))
        assert bad["agent"] is None and "certificate verify failed" in bad["agent_error"]
        plain = probe.agent_status(port, 5)  # HTTP to the HTTPS port: no answer to read
        assert plain["agent"] is None and plain["agent_error"]
        args = probe.parser().parse_args(
            ["--agent-tls", "--ca-file", str(ca.ca_file), "--colour", f"blue:{port}:/nonexistent"]
        )
        assert args.agent_tls and args.ca_file == str(ca.ca_file)
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_the_agent_verifies_the_collector_with_collector_ca_file(ca, tmp_path):
    from solverfleet.agent import agent_of, create_app

    settings = load_settings(
        AgentSettings,
        env={**AGENT, "SOLVERFLEET_COLLECTOR_CA_FILE": str(ca.ca_file)},
        overrides={"state_dir": str(tmp_path / "state")},
    )
    agent = agent_of(create_app(settings, start_background=False))
    try:
        assert agent.client.verify == str(ca.ca_file)
    finally:
        agent.client.close()


def test_the_fleet_token_can_come_from_a_file_and_follows_its_rotation(tmp_path):
    token = tmp_path / "agent.token"
    token.write_text("first-token\n")
    token.chmod(0o600)
    settings = AgentSettings(collector_url="http://c:8400", fleet_token_file=str(token))
    assert settings.fleet_token == "first-token"
    with pytest.raises(SettingsError, match="not both"):
        AgentSettings(collector_url="http://c", fleet_token="x", fleet_token_file=str(token))
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        AgentSettings(collector_url="http://c", fleet_token_file=str(empty))
    with pytest.raises(SettingsError, match="fleet_token_file: no such file"):
        AgentSettings(collector_url="http://c", fleet_token_file=str(tmp_path / "missing"))

    client = FleetClient("http://c:8400", settings.fleet_token, 1.0, token_file=str(token))
    client._follow_token_file()
    assert client.session.headers["Authorization"] == "Bearer first-token"
    replacement = tmp_path / "agent.token.new"
    replacement.write_text("second-token\n")
    os.replace(replacement, token)  # as Ansible's copy does: a new inode
    client._follow_token_file()
    assert client.session.headers["Authorization"] == "Bearer second-token"
