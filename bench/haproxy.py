"""A throwaway HAProxy in front of one HTTP backend, for benchmark baselines."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from solverfleet.process import Service, free_port, wait_until

CONFIG = """\
global
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend bench
    bind 127.0.0.1:{port}
    default_backend target
backend target
    http-reuse always
    server s1 {backend} maxconn 10000
"""


def start_haproxy(backend_url: str, workdir: Path) -> tuple[Service, str]:
    """Start HAProxy proxying to ``backend_url``; return the service and its base URL."""
    parts = urlsplit(backend_url)
    port = free_port()
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(CONFIG.format(port=port, backend=f"{parts.hostname}:{parts.port}"))
    subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], check=True)
    service = Service("haproxy", ["haproxy", "-db", "-f", str(cfg)], log_dir=workdir).start()
    url = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout=10, what="haproxy listening")
    return service, url
