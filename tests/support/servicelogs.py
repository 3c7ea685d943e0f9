"""A failing test's report shows the logs of the services it started (issue 17: "the next flake
names its cause").

Every ``solverfleet.process.Service`` started during the run is noted with the test that was
running (setup, call or teardown). When a test fails, its report gets one section per service
that this test started, and per service still running that an earlier test (a shared fixture,
a lab) started: the last lines of its log file, which outlives the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from solverfleet.process import Service

TAIL_LINES = 60
MAX_SERVICES = 12  # a report stays readable; the newest services are the likeliest cause


@dataclass
class Started:
    nodeid: str | None
    service: Service


STARTED: list[Started] = []
_running: list[str | None] = [None]  # the test being set up, run or torn down
_original_start = Service.start


def _start(self: Service) -> Service:
    STARTED.append(Started(_running[0], self))
    return _original_start(self)


Service.start = _start  # type: ignore[method-assign]


def relevant(nodeid: str, started: list[Started]) -> list[Service]:
    """Services this test started, then those still running from earlier ones; newest first."""
    mine = [s.service for s in started if s.nodeid == nodeid]
    shared = [s.service for s in started if s.nodeid != nodeid and s.service.alive()]
    return [*reversed(mine), *reversed(shared)][:MAX_SERVICES]


def sections(nodeid: str, started: list[Started]) -> list[tuple[str, str]]:
    out = []
    for service in relevant(nodeid, started):
        code = None if service.proc is None else service.proc.returncode
        state = "running" if service.alive() else f"exit {code}"
        tail = service.log_tail(TAIL_LINES) or "(empty log)"
        out.append((f"log of {service.name} ({state}, {service.log_path})", tail))
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _running[0] = item.nodeid
    try:
        yield
    finally:
        _running[0] = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for title, text in sections(item.nodeid, STARTED):
            report.sections.append((title, text))
