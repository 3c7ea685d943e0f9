"""Fleet health findings as health.yml's plays register them (the probe's command result, the
collector's /readyz, the balancer's show stat and map), and the report built from them: the
inputs of tests/unit/test_fleethealth*.py."""

from __future__ import annotations

import json
from pathlib import Path

from solverfleet.fleethealth import rules as health

SHOW_STAT = (
    Path(__file__).resolve().parents[1] / "unit" / "data" / "haproxy_show_stat.csv"
).read_text()
SOLVERS = ["solver1", "solver2", "solver3"]


def agent_status(**overrides) -> dict:
    status = {
        "agent_id": "solver1", "node_id": 101, "version": "0.1.0", "instance": "i-1",
        "uptime_s": 500.0, "ready": True, "reason": None, "message": "", "draining": False,
        "in_flight": 2, "spool_backlog": 0,
        "leases": {"keys": 3, "held_micros": 1_500_000, "available_micros": 1_496_000,
                   "in_flight_micros": 4000, "cpm_tokens": 10, "daily_tokens": 40},
        "collector": {"online": True, "last_sync_age_s": 0.2, "last_ship_age_s": 1.5,
                      "shipped": 120},
    }  # fmt: skip
    status.update(overrides)
    return status


def colour_found(name: str, port: int, *, release: str | None = "0.1.0", agent=None, error=None):
    return {
        "port": port, "link": f"/opt/solverfleet/{'current' if name == 'blue' else name}",
        "link_exists": release is not None, "release": release,
        "target": f"/opt/solverfleet/releases/{release}" if release else None, "link_error": None,
        "agent": agent, "agent_error": error,
    }  # fmt: skip


def probe_output(host: str, **changes) -> dict:
    out = {
        "schema": 1, "hostname": host, "time": "2026-11-23T10:00:00+00:00",
        "system": {"cpu_percent": 12.0, "cpu_count": 2, "load_avg": [0.5, 0.4, 0.3],
                   "memory": {"total_bytes": 8 << 30, "available_bytes": 6 << 30,
                              "used_percent": 25.0},
                   "disks": {"/": {"total_bytes": 100 << 30, "free_bytes": 60 << 30,
                                   "used_percent": 40.0}}},
        "colours": {
            "blue": colour_found("blue", 8600, agent=agent_status(agent_id=host)),
            "green": colour_found("green", 8601, release=None, error="connection refused"),
        },
        "worker": {"url": "http://127.0.0.1:8500/healthz", "checked": True, "ok": True,
                   "error": None, "release": "0.1.0"},
        "colour_state": {"present": False, "active": "blue", "switches": 0, "last": None,
                         "error": None},
    }  # fmt: skip
    out.update(changes)
    return out


def command_result(data: dict) -> dict:
    return {"rc": 0, "stdout": json.dumps(data), "stderr": "", "changed": False, "failed": False}


def show_stat(**statuses: str) -> str:
    """The captured answer with server statuses set, e.g. ``solverfleet_agents__solver2="DOWN"``;
    by default every blue server UP, every green one DOWN (green never deployed)."""
    lines = SHOW_STAT.splitlines()
    header = lines[0][2:].split(",")
    at = header.index("status")
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) > at and fields[1] not in ("FRONTEND", "BACKEND"):
            blue = fields[0] == "solverfleet_agents"
            fields[at] = statuses.get(f"{fields[0]}__{fields[1]}", "UP" if blue else "DOWN")
        out.append(",".join(fields))
    return "\n".join(out) + "\n"


def lb_found(stat: str | None = None, live: str | None = None, colour: dict | None = None) -> dict:
    return {
        "changed": False,
        "stat": show_stat() if stat is None else stat,
        "stat_error": None,
        "map": f"0x5584bf7a30f0 live {live}\n\n" if live else "",
        "map_error": None,
        "colour_text": None if colour is None else json.dumps(colour),
        "colour_error": None,
    }


def collector_found(ready_status: int = 200) -> dict:
    ready = {"status": ready_status, "msg": "OK", "url": "http://127.0.0.1:8400/readyz"}
    ready["json"] = (
        {"ok": True, "db": "reachable", "db_ping_ms": 0.7}
        if ready_status == 200
        else {"error": "unavailable", "message": "database unreachable"}
    )
    live = {
        "status": 200,
        "json": {"ok": True},
        "msg": "OK",
        "url": "http://127.0.0.1:8400/healthz",
    }
    return {"healthz": live, "readyz": ready}


def healthy_findings() -> dict:
    return {
        "solvers": {h: command_result(probe_output(h)) for h in SOLVERS},
        "collectors": {"collector1": collector_found()},
        "lbs": {"lb1": lb_found()},
    }


def report_of(findings: dict, **options) -> dict:
    return health.health_report(findings, options, now="2026-11-23T10:00:00+00:00")
