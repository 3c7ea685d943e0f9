"""The fleet health report as one plain-text table (playbooks/health.yml prints it).

Runs in the controller's Ansible Python: standard library only. One row per collector, per
balancer, and per agent colour of each solver host (the active colour first, marked ``*``);
below it the fleet verdict, every unhealthy thing (``FAIL host: what``) and every warning.
"""

from __future__ import annotations

from typing import Any

# fmt: off
COLUMNS = ["HOST", "ROLE", "COLOUR", "RELEASE", "AGENT", "LB", "INFL", "SPOOL", "LEASES", "SYNC",
           "SHIP", "WORKER", "CPU", "MEM", "DISK", "STATUS"]
# fmt: on


def health_table(report: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    for entry in report.get("hosts", {}).values():
        rows += _rows(entry)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    verdict = "HEALTHY" if report.get("healthy") else f"UNHEALTHY ({len(report['unhealthy'])})"
    lines.append(f"fleet: {verdict}; active colour {report.get('active_colour') or '?'}")
    lines += [f"  FAIL {p}" for p in report.get("unhealthy", [])]
    lines += [f"  warn {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)


def _rows(entry: dict[str, Any]) -> list[list[str]]:
    status = "ok" if entry["healthy"] else "FAIL"
    if entry["healthy"] and entry["warnings"]:
        status = "warn"
    blank = ["-"] * len(COLUMNS)
    if entry["role"] == "collector":
        row = list(blank)
        row[4] = "up" if entry.get("alive") else "down"
        db = entry.get("db", "?")
        ping = entry.get("db_ping_ms")
        row[11] = f"db {db}" + (f" {ping}ms" if ping is not None else "")
        return [_fill(row, entry, status)]
    if entry["role"] == "lb":
        row = list(blank)
        row[2] = f"{entry.get('active_colour') or '?'}*"
        row[5] = (
            " ".join(
                f"{b['up']}/{b['servers']}{'*' if b['active'] else ''}"
                for b in (entry.get("backends") or {}).values()
            )
            or "-"
        )
        return [_fill(row, entry, status)]
    out = []
    colours = entry.get("colours") or {}
    ordered = sorted(colours.items(), key=lambda kv: not kv[1]["active"])
    for n, (name, agent) in enumerate(ordered or [("-", {})]):
        row = list(blank)
        row[2] = name + ("*" if agent.get("active") else "")
        row[3] = agent.get("release") or "-"
        row[4] = _agent_state(agent)
        row[5] = agent.get("lb") or "-"
        row[6] = _num(agent.get("in_flight"))
        row[7] = _num(agent.get("spool_backlog"))
        leases = agent.get("leases") or {}
        if leases:
            row[8] = f"{leases.get('keys', 0)}k {_money(leases.get('held_micros', 0))}"
        row[9] = _age(agent.get("last_sync_age_s"))
        row[10] = _age(agent.get("last_ship_age_s"))
        if n == 0:
            worker = entry.get("worker") or {}
            row[11] = "-" if not worker.get("checked") else ("up" if worker.get("ok") else "down")
        out.append(_fill(row, entry, status, system=n == 0))
    return out


def _fill(row: list[str], entry: dict[str, Any], status: str, system: bool = True) -> list[str]:
    row[0], row[1], row[-1] = entry["host"], entry["role"], status
    sysinfo = entry.get("system") or {}
    if system and sysinfo:
        row[12] = f"{sysinfo.get('cpu_percent', 0):.0f}%"
        row[13] = f"{(sysinfo.get('memory') or {}).get('used_percent', 0):.0f}%"
        used = [
            d["used_percent"] for d in (sysinfo.get("disks") or {}).values() if "used_percent" in d
        ]
        row[14] = f"{max(used):.0f}%" if used else "-"
    return row


def _agent_state(agent: dict[str, Any]) -> str:
    if not agent:
        return "-"
    if not agent.get("up"):
        return "down"
    if agent.get("ready"):
        return "ready"
    return agent.get("reason") or "not ready"


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def _age(seconds: Any) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 100 else f"{seconds / 60:.0f}m"


def _money(micros: int) -> str:
    """Integer micros as a decimal string, at least two decimals (as solverfleet.money)."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(int(micros)), 1_000_000)
    digits = f"{frac:06d}".rstrip("0")
    return f"{sign}{whole}.{digits.ljust(2, '0')}"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"solverfleet_health_table": health_table}
