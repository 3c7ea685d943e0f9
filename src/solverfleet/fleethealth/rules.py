"""The fleet health rules: findings from every host -> verdicts -> the report.

``health_report(findings, options)`` takes what playbooks/health.yml registered (the solver
probe's command result, the collector's /healthz and /readyz, the balancer's ``show stat``,
``show map`` and colour state) and returns the report written to the JSON file;
playbooks/filter_plugins/solverfleet_health_table.py renders it. ``probe_args`` builds the
probe's command line.

Standard library only: playbooks/filter_plugins/solverfleet_health.py loads this package by file
path into the controller's Ansible Python, where solverfleet is not installed (hence the
relative import).

Rules (docs/ANSIBLE.md, "Fleet health"): the active colour is the one HAProxy serves (its
colour map's ``live`` entry; none = blue). A solver host is unhealthy when its active colour's
agent is missing, not ready, out of sync with the collector, or not shipping usage, when its
worker does not answer, when its colour state disagrees with the balancer's, or when a disk or
memory is nearly full. An idle colour's agent that exists but is down is a warning: it only
costs an instant rollback. The balancer is unhealthy when a solver host is not UP in the
active colour's backend.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

from .colours import default_colours, format_colour, parse_colour_state

DEFAULT_OPTIONS: dict[str, Any] = {
    # The repository's colour table, the one the roles read (health.yml passes an inventory's).
    "colours": default_colours("/opt/solverfleet"),
    "max_sync_age": 10.0,  # s without a successful sync before an agent is called cut off
    "max_ship_age": 60.0,  # s a non-empty spool may go without an acknowledged shipment
    "spool_backlog_warn": 10000,
    "disk_warn_percent": 85.0,
    "disk_fail_percent": 95.0,
    "memory_warn_percent": 90.0,
    "memory_fail_percent": 97.0,
    "load_warn_per_cpu": 2.0,  # 1-minute load average per CPU (an instant CPU % is noise)
}
PROBE_SCHEMA = 1


# ---- parsing what the hosts returned ----------------------------------------------------------


def task_failure(result: Any) -> str | None:
    """Why a registered task result holds nothing usable, or None."""
    if not isinstance(result, dict) or not result:
        return "not probed (the host failed or was skipped before the probe)"
    if result.get("unreachable"):
        return f"unreachable: {_first_line(result.get('msg'))}"
    if result.get("skipped"):
        return "not probed (skipped)"
    return None


def parse_probe(result: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The probe's JSON from its command result, or (None, why not)."""
    why = task_failure(result)
    if why:
        return None, why
    if result.get("rc", 0) != 0:
        detail = _first_line(result.get("stderr") or result.get("msg"), last=True)
        return None, f"probe failed (exit {result.get('rc')}): {detail}"
    try:
        data = json.loads(result.get("stdout") or "")
    except ValueError:
        return None, f"probe printed no JSON: {_first_line(result.get('stdout'))}"
    if not isinstance(data, dict):
        return None, "probe printed no JSON object"
    return data, None


def parse_show_stat(text: str) -> list[dict[str, str]]:
    """HAProxy's ``show stat`` CSV (``# pxname,svname,...``) as one dict per row."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    return [{k: (v or "") for k, v in row.items() if k} for row in reader]


def backends(rows: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """Backend name -> {"status": its own status, "servers": {name: row}}."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        name, server = row.get("pxname", ""), row.get("svname", "")
        if server == "FRONTEND":
            continue
        entry = out.setdefault(name, {"status": None, "servers": {}})
        if server == "BACKEND":
            entry["status"] = row.get("status")
        else:
            entry["servers"][server] = row
    return {k: v for k, v in out.items() if v["status"] is not None}


# ---- verdicts ---------------------------------------------------------------------------------


class Verdict:
    def __init__(self, host: str, role: str) -> None:
        self.entry: dict[str, Any] = {
            "host": host,
            "role": role,
            "healthy": True,
            "problems": [],
            "warnings": [],
        }

    def fail(self, text: str) -> None:
        self.entry["problems"].append(text)
        self.entry["healthy"] = False

    def warn(self, text: str) -> None:
        self.entry["warnings"].append(text)

    def note(self, text: str, serious: bool) -> None:
        (self.fail if serious else self.warn)(text)


def _options(options: dict[str, Any] | None) -> dict[str, Any]:
    merged = dict(DEFAULT_OPTIONS)
    merged.update({k: v for k, v in (options or {}).items() if v is not None})
    return merged


def parse_live_map(text: str | None) -> tuple[str | None, str | None]:
    """(live backend or None, error or None) from ``show map`` of the colour map. No map (a
    balancer without blue-green) or no ``live`` entry means the default backend: None."""
    text = (text or "").strip()
    if not text or text.lower().startswith("unknown map"):
        return None, None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] == "live":
            return fields[2], None
    if all(line.startswith("0x") for line in text.splitlines()):
        return None, None  # entries, none of them `live`
    return None, f"unexpected show map answer: {text[:200]!r}"


def judge_balancer(
    host: str, found: Any, solvers: list[str], opts: dict[str, Any], presence: dict[str, set[str]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report entry, {"active": colour or None, "views": {solver: {colour: status}}})."""
    verdict = Verdict(host, "lb")
    entry, views = verdict.entry, {s: {} for s in solvers}
    why = task_failure(found)
    if not why and found.get("failed"):
        why = f"status module failed: {_first_line(found.get('msg'))}"
    if why:
        verdict.fail(why)
        return entry, {"active": None, "views": views}
    if found.get("stat_error"):
        verdict.fail(f"HAProxy runtime API: {found['stat_error']}")
        entry["colour_state"] = parse_colour_state(found.get("colour_text"))
        entry["active_colour"] = None  # only HAProxy knows which colour it serves
        return entry, {"active": None, "views": views}
    active = _balancer_colour(verdict, found, opts)
    seen = backends(parse_show_stat(found.get("stat", "")))
    entry["backends"] = {}
    for colour in opts["colours"]:
        name, backend = colour["name"], colour["backend"]
        is_active = name == active
        if backend not in seen:
            if is_active:
                verdict.fail(f"HAProxy has no backend {backend} for the active colour {name}")
            continue
        servers = seen[backend]["servers"]
        up = sum(1 for s in solvers if servers.get(s, {}).get("status", "").startswith("UP"))
        entry["backends"][backend] = {
            "colour": name,
            "active": is_active,
            "status": seen[backend]["status"],
            "up": up,
            "servers": len(servers),
        }
        for solver in solvers:
            row = servers.get(solver)
            views[solver][name] = "absent" if row is None else row.get("status", "")
            # A colour that never ran on a host has its server down by design.
            if is_active or solver in presence.get(name, set()):
                _judge_server(verdict, solver, row, backend, name, is_active)
        if is_active and not up and solvers:
            verdict.fail(f"no agent UP in {backend}: the active colour serves nothing")
    return entry, {"active": active, "views": views}


def _balancer_colour(verdict: Verdict, found: dict[str, Any], opts: dict[str, Any]) -> str | None:
    """The colour HAProxy serves (its colour map; none = the first colour), checked against
    the balancer's recorded colour state."""
    entry = verdict.entry
    state = parse_colour_state(found.get("colour_text"))
    if found.get("colour_error"):
        state = {**state, "active": None, "error": found["colour_error"]}
    entry["colour_state"] = state
    if state["error"]:
        verdict.fail(f"colour state unreadable: {state['error']}")
    by_backend = {c["backend"]: c["name"] for c in opts["colours"]}
    live, problem = parse_live_map(found.get("map"))
    if found.get("map_error") or problem:
        verdict.fail(f"colour map unreadable: {found.get('map_error') or problem}")
        active = state["active"]  # second best: what was recorded
    elif live is None:
        active = opts["colours"][0]["name"]
    elif live in by_backend:
        active = by_backend[live]
    else:
        verdict.fail(f"HAProxy serves {live}, which is no colour's backend")
        active = None
    entry["live_backend"] = live
    if active and state["active"] and state["active"] != active:
        verdict.fail(f"colour state records {state['active']} as active, HAProxy serves {active}")
    entry["active_colour"] = active
    return active


def _judge_server(
    verdict: Verdict,
    solver: str,
    row: dict[str, str] | None,
    backend: str,
    colour: str,
    active: bool,
) -> None:
    role = "active" if active else "idle"
    if row is None:
        verdict.note(f"{solver} is not a server of {backend} ({colour}, {role})", active)
        return
    status = row.get("status", "")
    if status.startswith("UP"):
        return
    check = " ".join(x for x in (row.get("check_status"), row.get("check_desc")) if x)
    detail = f": {check}" if check else ""
    verdict.note(f"sees {solver} {status} in {backend} ({colour}, {role}){detail}", active)


def judge_collector(host: str, found: Any) -> dict[str, Any]:
    verdict = Verdict(host, "collector")
    entry = verdict.entry
    found = found if isinstance(found, dict) else {}
    live, ready = found.get("healthz"), found.get("readyz")
    why = task_failure(live)
    if why:
        verdict.fail(why)
        return entry
    entry["alive"] = live.get("status") == 200
    if not entry["alive"]:
        verdict.fail(f"collector not answering /healthz: {_uri_error(live)}")
        return entry
    why = task_failure(ready)
    if why:
        verdict.fail(f"readiness not checked: {why}")
        return entry
    body = ready.get("json") if isinstance(ready.get("json"), dict) else {}
    if ready.get("status") == 200:
        entry["db"] = "reachable"
        entry["db_ping_ms"] = body.get("db_ping_ms")
    elif ready.get("status") == 503:
        entry["db"] = "unreachable"
        verdict.fail(f"database unreachable (collector /readyz: {body.get('message', '503')})")
    else:
        entry["db"] = "unknown"
        verdict.fail(f"collector /readyz: {_uri_error(ready)}")
    return entry


def judge_solver(
    host: str, result: Any, fleet_active: str | None, lb_view: dict[str, str], opts: dict[str, Any]
) -> dict[str, Any]:
    verdict = Verdict(host, "solver")
    entry = verdict.entry
    data, why = parse_probe(result)
    if data is None:
        verdict.fail(why or "no probe data")
        return entry
    if data.get("schema") != PROBE_SCHEMA:
        verdict.warn(f"probe schema {data.get('schema')} (this playbook reads {PROBE_SCHEMA})")
    state = data.get("colour_state") or {}
    entry["colour_state"] = state
    if state.get("error"):
        verdict.fail(f"colour state unreadable: {state['error']}")
    own = state.get("active")
    if fleet_active and own and own != fleet_active:
        verdict.fail(f"colour state records {own} as active, the balancer serves {fleet_active}")
    active = fleet_active or own or opts["colours"][0]["name"]
    entry["active_colour"] = active
    entry["colours"] = {}
    for colour in opts["colours"]:
        name = colour["name"]
        found = (data.get("colours") or {}).get(name) or {}
        exists = bool(found.get("link_exists")) or found.get("agent") is not None
        if name != active and not exists:
            continue
        entry["colours"][name] = _agent_figures(found, name == active, lb_view.get(name))
        _judge_agent(verdict, name, found, name == active, opts)
    _judge_worker(verdict, data.get("worker") or {})
    entry["system"] = data.get("system") or {}
    _judge_system(verdict, entry["system"], opts)
    return entry


def _agent_figures(found: dict[str, Any], active: bool, lb: str | None) -> dict[str, Any]:
    agent = found.get("agent") or {}
    collector = agent.get("collector") or {}
    return {
        "active": active,
        "port": found.get("port"),
        "release": found.get("release"),
        "link": found.get("link"),
        "up": found.get("agent") is not None,
        "error": found.get("agent_error"),
        "ready": agent.get("ready"),
        "reason": agent.get("reason"),
        "version": agent.get("version"),
        "node_id": agent.get("node_id"),
        "in_flight": agent.get("in_flight"),
        "spool_backlog": agent.get("spool_backlog"),
        "leases": agent.get("leases"),
        "last_sync_age_s": collector.get("last_sync_age_s"),
        "last_ship_age_s": collector.get("last_ship_age_s"),
        "uptime_s": agent.get("uptime_s"),
        "lb": lb,
    }


def _judge_agent(
    verdict: Verdict, name: str, found: dict[str, Any], active: bool, opts: dict[str, Any]
) -> None:
    role = "active" if active else "idle"
    label = f"agent {name} ({role}, port {found.get('port')})"
    if found.get("link_error"):
        verdict.note(f"{label}: {found['link_error']}", active)
    elif not found.get("link_exists"):
        verdict.note(f"{label}: release link {found.get('link')} is missing", active)
    agent = found.get("agent")
    if agent is None:
        verdict.note(f"{label} not answering: {found.get('agent_error') or 'no answer'}", active)
        return
    if not agent.get("ready"):
        reason = ": ".join(x for x in (agent.get("reason"), agent.get("message")) if x)
        verdict.note(f"{label} not ready: {reason or 'no reason given'}", active)
    collector = agent.get("collector") or {}
    sync_age = collector.get("last_sync_age_s")
    if agent.get("ready") and sync_age is not None and sync_age > opts["max_sync_age"]:
        verdict.note(f"{label}: no sync with the collector for {sync_age:.0f} s", active)
    backlog = agent.get("spool_backlog") or 0
    ship_age = collector.get("last_ship_age_s")
    waited = ship_age if ship_age is not None else agent.get("uptime_s")
    if backlog > 0 and waited is not None and waited > opts["max_ship_age"]:
        verdict.note(f"{label}: {backlog} usage events not shipped for {waited:.0f} s", active)
    elif backlog >= opts["spool_backlog_warn"]:
        verdict.warn(f"{label}: spool backlog {backlog}")


def _judge_worker(verdict: Verdict, worker: dict[str, Any]) -> None:
    verdict.entry["worker"] = worker
    if worker.get("checked") and not worker.get("ok"):
        verdict.fail(f"worker not answering at {worker.get('url')}: {worker.get('error')}")


def _judge_system(verdict: Verdict, system: dict[str, Any], opts: dict[str, Any]) -> None:
    for path, disk in sorted((system.get("disks") or {}).items()):
        if "error" in disk:
            verdict.warn(f"disk {path}: {disk['error']}")
            continue
        used = disk.get("used_percent", 0)
        if used >= opts["disk_warn_percent"]:
            serious = used >= opts["disk_fail_percent"]
            verdict.note(f"disk {path} {used:.0f}% full", serious)
    memory = (system.get("memory") or {}).get("used_percent", 0)
    if memory >= opts["memory_warn_percent"]:
        verdict.note(f"memory {memory:.0f}% used", memory >= opts["memory_fail_percent"])
    load, cpus = (system.get("load_avg") or [0])[0], system.get("cpu_count") or 1
    if load / cpus >= opts["load_warn_per_cpu"]:
        verdict.warn(f"load average {load:.1f} on {cpus} CPUs")


# ---- the report -------------------------------------------------------------------------------


def health_report(
    findings: dict[str, Any], options: dict[str, Any] | None = None, now: str | None = None
) -> dict[str, Any]:
    """``findings``: {"solvers": {host: probe result}, "collectors": {host: {"healthz",
    "readyz"}}, "lbs": {host: lb status result}} -> the report (see the module docstring)."""
    opts = _options(options)
    solvers = dict(findings.get("solvers") or {})
    collectors = dict(findings.get("collectors") or {})
    lbs = dict(findings.get("lbs") or {})
    # Which colours exist on which host, so the balancer judges idle backends fairly.
    presence: dict[str, set[str]] = {}
    for host, result in solvers.items():
        data, _ = parse_probe(result)
        for name, found in ((data or {}).get("colours") or {}).items():
            if (found or {}).get("link_exists") or (found or {}).get("agent") is not None:
                presence.setdefault(name, set()).add(host)
    hosts: list[dict[str, Any]] = []
    views: dict[str, dict[str, str]] = {s: {} for s in solvers}
    actives = []
    for host in sorted(lbs):
        entry, seen = judge_balancer(host, lbs[host], sorted(solvers), opts, presence)
        hosts.append(entry)
        if seen["active"] is not None:
            actives.append((host, seen["active"]))
        for solver, by_colour in seen["views"].items():
            for colour, status in by_colour.items():
                views[solver].setdefault(colour, status)  # the first balancer's view
    fleet_active = actives[0][1] if actives else None
    if len({a for _, a in actives}) > 1:
        for entry in hosts:
            if entry.get("active_colour") not in (None, fleet_active):
                entry["problems"].append(
                    f"active colour {entry['active_colour']} differs from {actives[0][0]}'s "
                    f"{fleet_active}"
                )
                entry["healthy"] = False
    hosts += [judge_collector(h, collectors[h]) for h in sorted(collectors)]
    hosts += [judge_solver(h, solvers[h], fleet_active, views[h], opts) for h in sorted(solvers)]
    unhealthy = [f"{e['host']}: {p}" for e in hosts for p in e["problems"]]
    warnings = [f"{e['host']}: {w}" for e in hosts for w in e["warnings"]]
    if not solvers:
        unhealthy.append("fleet: no solver host in the inventory")
    if not collectors:
        unhealthy.append("fleet: no collector host in the inventory")
    if not lbs:
        warnings.append("fleet: no balancer in the inventory (nothing checks what HAProxy sees)")
    return {
        "generated_at": now or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "healthy": not unhealthy,
        "active_colour": fleet_active,
        "unhealthy": unhealthy,
        "warnings": warnings,
        "hosts": {e["host"]: e for e in hosts},
    }


def _first_line(text: Any, last: bool = False) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    if not lines:
        return "no details"
    return (lines[-1] if last else lines[0])[:300]


def _uri_error(result: dict[str, Any]) -> str:
    body = result.get("json") if isinstance(result.get("json"), dict) else {}
    if body.get("message"):
        return f"{result.get('status')} {body['message']}"
    return _first_line(result.get("msg"))


def probe_args(colours: list[dict[str, Any]], disks: list[str]) -> list[str]:
    """The probe's ``--colour NAME:PORT:LINK`` and ``--disk PATH`` arguments."""
    args: list[str] = []
    for colour in colours:
        args += ["--colour", format_colour(colour["name"], colour["port"], colour["link"])]
    for path in disks:
        args += ["--disk", str(path)]
    return args
