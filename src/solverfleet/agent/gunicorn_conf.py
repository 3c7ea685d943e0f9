"""gunicorn settings for the agent (``gunicorn -c python:solverfleet.agent.gunicorn_conf``).

Why exactly ONE worker of class gevent:
- The limiter (leases, holds, CPM/daily tokens) lives in one process's memory. A second worker
  would be a second limiter with its own view of the same leases: limits could be passed and
  the spool/lease ownership (one agent_id) would be shared by two writers.
- 5,000 concurrent 10-second solves mostly wait on the worker's socket. Greenlets cost a few
  KB each; 5,000 OS threads would cost gigabytes of stacks and scheduler time. gevent's
  ``worker_connections`` (10,000) is the cap on concurrent connections.

SIGTERM (sent by supervisord/systemd to the master, which relays it to the worker) runs the
agent's graceful stop before gunicorn closes its listener: readiness fails and new solves get
503 ``draining``, in-flight solves finish (``drain_grace``), the spool is shipped, leases are
returned. ``graceful_timeout`` is sized so the master's SIGKILL never cuts that short.
"""

from __future__ import annotations

import logging
import signal
import threading

from solverfleet.agent.settings import load
from solverfleet.obs.gunicornlog import LOGCONFIG

_settings = load()

bind = _settings.bind
workers = 1
worker_class = "gevent"
worker_connections = 10000
# gunicorn's SIGTERM wind-down also waits for idle keep-alive connections: keep it short.
keepalive = 2
# gunicorn 27 opens a control socket at ~/.gunicorn/gunicorn.ctl by default; several servers
# on one host (agent, worker, blue and green) would fight over that one path.
control_socket_disable = True
# drain + loop stop + ship + release, each bounded; plus slack for gunicorn's own wind-down.
graceful_timeout = int(
    _settings.drain_grace + _settings.ship_timeout + 3 * _settings.collector_timeout + 10
)
proc_name = f"solverfleet-agent-{_settings.agent_id}"
# JSON lines from gunicorn and the agent alike; access lines only with --access-logfile.
logger_class = "solverfleet.obs.gunicornlog.JsonLogger"
logconfig_dict = LOGCONFIG
# HTTPS for HAProxy (and anyone else) when the settings name a certificate and key.
if _settings.tls_cert_file:  # validated as a pair by the settings
    certfile = _settings.tls_cert_file
    keyfile = _settings.tls_key_file
    # A rotated certificate is served from the next handshake on, without a restart.
    from solverfleet.tls import gunicorn_ssl_context as ssl_context  # noqa: F401


def post_worker_init(worker) -> None:
    """Replace gunicorn's SIGTERM handler: stop the agent first, then let gunicorn exit."""
    from solverfleet.agent.lifecycle import current_agent

    # The agent's own log lines go where gunicorn's error log goes, at its level.
    ours = logging.getLogger("solverfleet")
    ours.handlers = list(worker.log.error_log.handlers)
    ours.setLevel(worker.log.error_log.level)
    ours.propagate = False
    agent = current_agent()
    if agent is None:
        return
    gunicorn_exit = worker.handle_exit
    stopping = False

    def stop_then_exit() -> None:
        try:
            agent.shutdown()
        finally:
            gunicorn_exit(signal.SIGTERM, None)  # alive = False: close listeners, exit

    def on_sigterm(signum, frame) -> None:
        # This runs inside gevent's loop, where nothing may block (not even a log write's
        # lock): flip readiness at once, do the real work in a new greenlet.
        nonlocal stopping
        agent.begin_drain(quiet=True)
        if not stopping:
            stopping = True
            _spawn(stop_then_exit)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)


def _spawn(target) -> None:
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        import gevent

        gevent.spawn(target)  # never blocks, unlike Thread.start() waiting for "started"
    else:
        threading.Thread(target=target, name="agent-stop", daemon=True).start()


def worker_exit(server, worker) -> None:
    """Last chance in the worker process: ship stragglers, or a quick stop after SIGINT/QUIT."""
    from solverfleet.agent.lifecycle import current_agent

    agent = current_agent()
    if agent is not None:
        agent.shutdown(drain_grace=0.0, ship_timeout=1.5)
