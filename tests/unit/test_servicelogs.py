"""A failing test's report names the logs of the services it started (tests/support/servicelogs)."""

from __future__ import annotations

import sys
from pathlib import Path

from solverfleet.process import Service, wait_until
from tests.support import servicelogs


def test_a_failing_report_carries_the_logs_of_its_services(tmp_path: Path) -> None:
    say = [sys.executable, "-c", "import sys; print('boom: port in use'); sys.stdout.flush()"]
    stay = [sys.executable, "-c", "import time; print('shared up', flush=True); time.sleep(60)"]
    mine = Service("collector-x", say, log_dir=tmp_path)
    shared = Service("mariadb-shared", stay, log_dir=tmp_path)
    gone = Service("earlier-test", say, log_dir=tmp_path)
    started = [
        servicelogs.Started("t::earlier", gone),
        servicelogs.Started("t::fixture", shared),
        servicelogs.Started("t::this", mine),
    ]
    for s in started:
        s.service.start()
    try:
        wait_until(lambda: not mine.alive() and not gone.alive(), timeout=10, what="exit")
        wait_until(lambda: "shared up" in shared.log_tail(), timeout=10, what="shared log")
        sections = dict(servicelogs.sections("t::this", started))
        titles = list(sections)
        assert titles[0].startswith("log of collector-x (exit 0,")
        assert titles[1].startswith("log of mariadb-shared (running,")
        assert len(titles) == 2  # an earlier test's service that has exited is not shown
        assert "boom: port in use" in sections[titles[0]]
        assert "shared up" in sections[titles[1]]
    finally:
        for s in started:
            s.service.stop(5)


def test_every_started_service_is_noted_with_the_running_test(tmp_path: Path) -> None:
    before = len(servicelogs.STARTED)
    svc = Service("noted", [sys.executable, "-c", "pass"], log_dir=tmp_path).start()
    try:
        noted = servicelogs.STARTED[before:]
        assert [s.service for s in noted] == [svc]
        assert noted[0].nodeid and noted[0].nodeid.endswith(
            "test_every_started_service_is_noted_with_the_running_test"
        )
    finally:
        svc.stop(5)
