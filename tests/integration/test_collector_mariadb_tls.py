"""MariaDB beyond loopback means TLS (issue 13): the collector's database URL carries
``?ssl_ca=``, the connection verifies the server's certificate and name, and a server that
requires secure transport refuses a plain one. A real mariadbd with a certificate from a test CA."""

from __future__ import annotations

from pathlib import Path

import pymysql
import pytest

from solverfleet.collector.settings import CollectorSettings
from solverfleet.collector.store import Database, StoreUnavailable
from solverfleet.settings import SettingsError
from tests.support.mariadb import PASSWORD, USER, MariaDBServer, binaries
from tests.support.tls import TestCA

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.skipif(binaries() is None, reason="mariadb-server is not installed"),
]


def cipher(db: Database) -> str:
    row = db.read(lambda tx: tx.one("SHOW SESSION STATUS LIKE 'Ssl_cipher'"))
    return row[1] if row else ""


def test_the_collector_reaches_mariadb_over_verified_tls_only(tmp_path: Path) -> None:
    ca, other = TestCA(tmp_path / "ca"), TestCA(tmp_path / "other", name="some other CA")
    cert, key = ca.server("mariadb", "127.0.0.1")
    server = MariaDBServer(
        extra_args=(
            f"--ssl-cert={cert}",
            f"--ssl-key={key}",
            f"--ssl-ca={ca.ca_file}",
            "--require-secure-transport=ON",
        )
    )
    server.start()
    try:
        verified = Database(f"{server.url}?ssl_ca={ca.ca_file}")
        assert cipher(verified).startswith(("TLS_", "ECDHE")), cipher(verified)
        # The server refuses a plain connection (PyMySQL would otherwise try unverified TLS);
        # MariaDB says "access denied" to the very credentials that work over TLS above.
        with pytest.raises(pymysql.err.OperationalError, match=r"insecure transport|denied"):
            pymysql.connect(
                host="127.0.0.1", port=server.port, user=USER, password=PASSWORD, ssl_disabled=True
            )
        # A certificate the given CA did not sign is refused by the collector's side.
        with pytest.raises(StoreUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            Database(f"{server.url}?ssl_ca={other.ca_file}").read(lambda tx: tx.one("SELECT 1"))
    finally:
        server.stop()


def test_a_database_beyond_loopback_without_tls_is_refused_at_start(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    tokens = {"fleet_token": "f" * 40, "admin_token": "a" * 40}
    remote = "mysql://u:p@db.internal.example:3306/solverfleet"
    with pytest.raises(SettingsError, match="beyond loopback"):
        CollectorSettings(db=remote, **tokens)
    with pytest.raises(SettingsError, match="db ssl_ca"):
        CollectorSettings(db=f"{remote}?ssl_ca={tmp_path / 'missing.pem'}", **tokens)
    assert CollectorSettings(db=f"{remote}?ssl_ca={ca.ca_file}", **tokens).db.endswith("ca.pem")
    for local in ("mysql://u:p@127.0.0.1/db", "mysql://u:p@localhost/db?unix_socket=/run/x"):
        CollectorSettings(db=local, **tokens)  # loopback and sockets stay as they are
