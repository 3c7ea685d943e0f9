"""Fault: MariaDB's disk fills up while the collector is ingesting usage from a fleet under load.

The server's datadir is a small tmpfs; a filler file takes its last byte mid-ingest. InnoDB
cannot grow the usage table ("table is full", 1114): the collector answers usage batches 503
``store_full`` (never 500), the agents keep them in their spools and keep serving from their
leases; once the filler is gone every spooled event is stored exactly once (the ledger).
MariaDB 10.11 sometimes aborts instead (an InnoDB write on the full disk, about one run in
several): then, as its supervisor would, the test restarts it once space is back, and the same
ledger must hold through the crash recovery.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chaos import Load, Tracker, outcome_counts, wait_for
from tests.support.chaosledger import (
    assert_ledger,
    usage_refusals,
    wait_ingest_resumes,
    wait_leases,
)
from tests.support.fleet import key, new_secret, team, user
from tests.support.mariadb import MariaDBServer, binaries

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.integration,
    pytest.mark.mariadb,
    pytest.mark.timeout(240),
]

OPENING = "500.00"
TMPFS = "16m"
# A file per table, grown in small steps: the usage table meets the full disk at once. The
# database's directory is a symlink into the tmpfs; the server's own files (system tablespace
# with the undo logs, redo log, error log) stay on the real disk, as on a server whose data
# volume fills up.
OPTIONS = ("--innodb-file-per-table=1", "--symbolic-links=1")
DATABASE = "full"


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 16 MiB tmpfs under a new temporary directory; unmounted at teardown."""
    if os.geteuid() != 0 or binaries() is None:
        pytest.skip("needs root (mount) and MariaDB")
    mount = Path(tempfile.mkdtemp(prefix="sf-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)
        mount.rmdir()


@pytest.fixture
def own_mariadb(small_disk: Path) -> Iterator[MariaDBServer]:
    server = MariaDBServer(extra_args=OPTIONS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store_url(own_mariadb: MariaDBServer, small_disk: Path) -> str:
    """Overrides tests/support/fleet.py's SQLite/MariaDB parameter: this fault is MariaDB's.
    A directory in the datadir is a database: this one lives on the small disk."""
    (small_disk / DATABASE).mkdir()
    (own_mariadb.datadir / DATABASE).symlink_to(small_disk / DATABASE)
    return own_mariadb.url_for(DATABASE)


def _fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; returns the filler file."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb") as out, contextlib.suppress(OSError):  # ENOSPC: full, as wanted
        out.write(b"\0" * free)
    return filler


def _logged(stack, text: str) -> bool:
    log = Path(stack.log_dir) / "collector.log"
    return text in log.read_text(errors="replace")


def test_mariadb_disk_full_mid_ingest(
    fleet_factory, small_disk: Path, own_mariadb: MariaDBServer
) -> None:
    stack = fleet_factory(agents=2, worker_latency_ms="5")
    secret = new_secret("full")
    with stack.admin_client() as admin:
        admin.apply(team(user("fay", key("fay-web", secret, OPENING))))
    stack.wait_for_key(secret)
    tracker = Tracker("mdb-full")
    agents = stack.urls["agents"]
    with Load(
        tracker, agents, secret, clients=4, pace=0.01, max_seconds=150, expect={200, 402}
    ) as load:
        load.wait_successes(100, timeout=30, what="load before the disk fills")
        wait_leases(stack, load, calls=50)
        refused = usage_refusals(stack)
        filler = _fill(small_disk)
        # Mid-ingest: usage batches now need space the server cannot get.
        wait_for(
            lambda: usage_refusals(stack) >= refused + 5,
            timeout=30,
            what="usage batches refused while the disk is full",
            guard=load.check,
        )
        load.wait_successes(50, timeout=30, what="agents serving while the disk is full")
        refused_full = usage_refusals(stack) - refused
        filler.unlink()
        crashed = own_mariadb.service is not None and not own_mariadb.service.alive()
        if crashed:  # systemd's Restart=on-failure, in the test's hands
            own_mariadb.restart()
        wait_ingest_resumes(stack, load)
        load.wait_successes(100, timeout=60, what="load after the fault")
        load.check()
    print(
        f"disk full: usage batches answered 503: {refused_full}, MariaDB crashed: {crashed}, "
        f"calls {outcome_counts(tracker.snapshot())}"
    )
    # The collector names the cause: the full disk, or (the server aborted) an unreachable one.
    cause = "database unavailable" if crashed else "database full"
    assert _logged(stack, cause), f"the collector names the cause ({cause})"
    assert_ledger(stack, tracker, key_id="fay-web", opening=OPENING)
