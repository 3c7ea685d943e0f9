"""One solver host's figures as JSON on stdout, for playbooks/health.yml.

    /opt/solverfleet/current/venv/bin/python -m solverfleet.fleethealth.probe \\
        --colour NAME:PORT:LINK [--colour ...] \\
        --worker-url http://127.0.0.1:8500/healthz --worker-link /opt/solverfleet/worker \\
        --colour-file /var/lib/solverfleet/colour.json --disk / --disk /var/lib/solverfleet
        [--agent-tls --ca-file /etc/solverfleet/tls/ca.pem]

It reports, it does not judge: psutil CPU, memory and disks; per colour (playbooks/health.yml
passes one ``--colour`` per entry of the colour table, see ``colours``) the release its link
points at and its agent's ``/admin/status`` (or why there is none); the worker's health; the
host's ``colour.json``. Verdicts are made on the controller. Only the standard library and
psutil are used, and nothing here changes the host. Exit status 0 whenever JSON was printed.

Agents that serve HTTPS (their ``tls_cert_file``) are read with ``--agent-tls``: the chain is
verified against ``--ca-file`` (default: the system trust store); the name is not, since the
call goes to 127.0.0.1 while the certificate names the host as the load balancer knows it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from solverfleet.fleethealth.colours import (
    Colour,
    parse_colour,
    parse_colour_state,
    unreadable_colour_state,
)

SCHEMA = 1
# Loopback calls only: a proxy from the environment must never see them.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def agent_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verifies a local agent's certificate chain against ``ca_file`` (or the system store)."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.check_hostname = False  # loopback: the certificate names the host, not 127.0.0.1
    return context  # verify_mode stays CERT_REQUIRED


def http_json(url: str, timeout: float, context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """(status, parsed JSON body or None). Raises OSError when nothing answered."""
    opener = _OPENER
    if context is not None:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
    try:
        with opener.open(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def _reason(exc: BaseException) -> str:
    """A short, stable reason: 'connection refused', 'timed out', ..."""
    inner = getattr(exc, "reason", exc)
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, TimeoutError | socket.timeout):
        return "timed out"
    text = str(inner) or type(inner).__name__
    return text[:200]


def agent_status(port: int, timeout: float, tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    """``{"agent": ..., "agent_error": None}`` from ``/admin/status``, or ``{"agent": None,
    "agent_error": why}``. An agent of a release without ``/admin/status`` (404) is read from
    ``/readyz`` instead (``"partial": true``). ``tls``: the agent serves HTTPS."""
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        status, body = http_json(f"{base}/admin/status", timeout, tls)
        if status == 404:
            status, body = http_json(f"{base}/readyz", timeout, tls)
            if not isinstance(body, dict):
                return {"agent": None, "agent_error": f"/readyz answered {status} without JSON"}
            ready = status == 200
            return {
                "agent_error": None,
                "agent": {
                    "partial": True,
                    "ready": ready,
                    "reason": None if ready else body.get("error"),
                    "message": "" if ready else body.get("message", ""),
                    "in_flight": body.get("in_flight"),
                    "spool_backlog": body.get("spool_backlog"),
                },
            }
    except OSError as exc:
        return {"agent": None, "agent_error": _reason(exc)}
    if status != 200 or not isinstance(body, dict):
        return {"agent": None, "agent_error": f"/admin/status answered {status}"}
    return {"agent": body, "agent_error": None}


def release_of(link: str) -> dict[str, Any]:
    """Where a release link points: ``{"link_exists", "release", "target", "link_error"}``."""
    path = Path(link)
    if not path.is_symlink() and not path.exists():
        return {"link_exists": False, "release": None, "target": None, "link_error": None}
    target = os.path.realpath(path)
    if not os.path.isdir(target):
        return {
            "link_exists": True,
            "release": None,
            "target": target,
            "link_error": f"{link} points at {target}, which is not a directory",
        }
    return {
        "link_exists": True,
        "release": os.path.basename(target),
        "target": target,
        "link_error": None,
    }


def worker_health(url: str, link: str, timeout: float) -> dict[str, Any]:
    """The worker's health URL answer, and the release its link points at (if it has one)."""
    out: dict[str, Any] = {
        "url": url,
        "checked": bool(url),
        "ok": None,
        "error": None,
        "release": release_of(link)["release"] if link else None,
    }
    if not url:
        return out
    try:
        status, _ = http_json(url, timeout)
    except OSError as exc:
        return {**out, "ok": False, "error": _reason(exc)}
    ok = status == 200
    return {**out, "ok": ok, "error": None if ok else f"answered {status}"}


def colour_state(path: str) -> dict[str, Any]:
    """The host's colour.json: a missing file means blue is active and there is no history."""
    try:
        text: str | None = Path(path).read_text()
    except FileNotFoundError:
        text = None
    except OSError as exc:
        return unreadable_colour_state(f"{path}: {exc.strerror or exc}")
    return parse_colour_state(text, source=path)


def system(disks: list[str], cpu_interval: float) -> dict[str, Any]:
    mem = psutil.virtual_memory()
    out: dict[str, Any] = {
        "cpu_percent": psutil.cpu_percent(interval=cpu_interval),
        "cpu_count": psutil.cpu_count() or 0,
        "load_avg": [round(x, 2) for x in psutil.getloadavg()],
        "memory": {
            "total_bytes": mem.total,
            "available_bytes": mem.available,
            "used_percent": mem.percent,
        },
        "disks": {},
    }
    for path in disks:
        try:
            usage = psutil.disk_usage(path)
        except OSError as exc:
            out["disks"][path] = {"error": exc.strerror or str(exc)}
            continue
        out["disks"][path] = {
            "total_bytes": usage.total,
            "free_bytes": usage.free,
            "used_percent": usage.percent,
        }
    return out


def colour_figures(colour: Colour, timeout: float, tls: ssl.SSLContext | None) -> dict[str, Any]:
    """One colour's release link and agent."""
    return {
        "port": colour.port,
        "link": colour.link,
        **release_of(colour.link),
        **agent_status(colour.port, timeout, tls),
    }


def probe(args: argparse.Namespace) -> dict[str, Any]:
    tls = agent_tls_context(args.ca_file) if getattr(args, "agent_tls", False) else None
    colours = {c.name: colour_figures(c, args.timeout, tls) for c in args.colour}
    return {
        "schema": SCHEMA,
        "hostname": socket.gethostname(),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "system": system(args.disk, args.cpu_interval),
        "colours": colours,
        "worker": worker_health(args.worker_url, args.worker_link, args.timeout),
        "colour_state": colour_state(args.colour_file),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m solverfleet.fleethealth.probe", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--colour",
        type=parse_colour,
        action="append",
        required=True,
        metavar="NAME:PORT:LINK",
        help="an agent colour: its port and release link (repeatable)",
    )
    p.add_argument(
        "--worker-url",
        default="http://127.0.0.1:8500/healthz",
        help="the worker's health URL ('' = not checked)",
    )
    p.add_argument(
        "--worker-link",
        default="/opt/solverfleet/worker",
        help="the worker's release link ('' = none)",
    )
    p.add_argument("--colour-file", default="/var/lib/solverfleet/colour.json")
    p.add_argument(
        "--disk",
        action="append",
        default=[],
        metavar="PATH",
        help="report the file system holding PATH (repeatable)",
    )
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per HTTP call")
    p.add_argument(
        "--agent-tls",
        action="store_true",
        help="the agents serve HTTPS (their tls_cert_file is set)",
    )
    p.add_argument(
        "--ca-file",
        default=None,
        metavar="PEM",
        help="with --agent-tls: CA bundle verifying the agents' certificates "
        "(default: the system trust store)",
    )
    p.add_argument(
        "--cpu-interval", type=float, default=0.5, help="seconds over which CPU use is measured"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.disk:
        args.disk = ["/"]
    json.dump(probe(args), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
