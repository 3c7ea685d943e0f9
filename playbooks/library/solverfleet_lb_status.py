#!/usr/bin/python
"""Ansible module: read-only status of a solverfleet balancer host for playbooks/health.yml."""

from __future__ import annotations

DOCUMENTATION = r"""
module: solverfleet_lb_status
short_description: Read HAProxy's view of the agents and the balancer's colour state
description:
  - Sends C(show stat) to HAProxy's runtime API socket and returns the raw CSV answer; sends
    C(show map) for the blue-green colour map (C(live <backend>), the truth for traffic) and
    returns its raw answer; returns the text of the balancer's colour state file (C(null) when
    the file does not exist).
  - Read-only; never fails on what it finds (an unreachable socket or an unreadable file is
    returned in C(stat_error) / C(colour_error)), so the health report can name it.
options:
  socket:
    description: HAProxy runtime API socket (admin or operator level).
    type: path
    default: /run/haproxy/admin.sock
  colour_map:
    description: HAProxy map naming the live backend (empty = the balancer has no blue-green).
    type: str
    default: /etc/haproxy/solverfleet-colour.map
  colour_file:
    description: The balancer's colour state (JSON, written by the blue-green play).
    type: path
    default: /var/lib/solverfleet/colour.json
  timeout:
    description: Seconds to wait for HAProxy's answer.
    type: float
    default: 5
"""

RETURN = r"""
stat:
  description: HAProxy's C(show stat) CSV (empty when the socket could not be read).
  type: str
  returned: always
stat_error:
  description: Why C(show stat) could not be read, or null.
  type: str
  returned: always
map:
  description: HAProxy's C(show map) answer for C(colour_map) (empty when not asked or unread).
  type: str
  returned: always
map_error:
  description: Why C(show map) could not be read, or null.
  type: str
  returned: always
colour_text:
  description: Contents of C(colour_file), or null when it does not exist.
  type: str
  returned: always
colour_error:
  description: Why C(colour_file) could not be read (other than not existing), or null.
  type: str
  returned: always
"""

import socket  # noqa: E402 - modules document themselves before importing

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def runtime_command(path, command, timeout):
    """One command on HAProxy's runtime API (non-interactive: it answers and closes)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    return b"".join(chunks).decode("utf-8", "replace")


def read_colour(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(), None
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path}: {getattr(exc, 'strerror', None) or exc}"


def main():
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "default": "/run/haproxy/admin.sock"},
            "colour_map": {"type": "str", "default": "/etc/haproxy/solverfleet-colour.map"},
            "colour_file": {"type": "path", "default": "/var/lib/solverfleet/colour.json"},
            "timeout": {"type": "float", "default": 5.0},
        },
        supports_check_mode=True,
    )
    params = module.params
    stat, stat_error = "", None
    try:
        stat = runtime_command(params["socket"], "show stat", params["timeout"])
        if not stat.startswith("# pxname"):
            stat_error = f"unexpected answer from {params['socket']}: {stat.strip()[:200]!r}"
    except OSError as exc:
        stat_error = f"{params['socket']}: {getattr(exc, 'strerror', None) or exc}"
    colour_map, map_error = "", None
    if params["colour_map"] and stat_error is None:
        try:
            colour_map = runtime_command(
                params["socket"], f"show map {params['colour_map']}", params["timeout"]
            )
        except OSError as exc:
            map_error = f"{params['socket']}: {getattr(exc, 'strerror', None) or exc}"
    colour_text, colour_error = read_colour(params["colour_file"])
    module.exit_json(
        changed=False,
        stat=stat,
        stat_error=stat_error,
        map=colour_map,
        map_error=map_error,
        colour_text=colour_text,
        colour_error=colour_error,
    )


if __name__ == "__main__":
    main()
