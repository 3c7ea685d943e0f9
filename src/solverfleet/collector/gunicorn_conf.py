"""gunicorn settings for the collector (``gunicorn -c python:solverfleet.collector.gunicorn_conf``).

One process of gthread workers, as before this file existed (the role's fallback flags): the
ingest group writer merges concurrent batches inside one process, SQLite wants one writer,
and /metrics counters are per process (with several workers a scrape would see one of them).
Threads, not greenlets: a blocked database call must not stall other requests. ``--bind``
comes from the command line (role, ``solverfleet local``).

HTTPS when the settings name ``tls_cert_file`` and ``tls_key_file`` (read here as the app reads
them: ``SOLVERFLEET_CONFIG`` file, then ``SOLVERFLEET_*`` variables); plain HTTP otherwise.
"""

from __future__ import annotations

from solverfleet.collector.settings import CollectorSettings
from solverfleet.obs.gunicornlog import LOGCONFIG

_settings = CollectorSettings.load()

workers = 1
worker_class = "gthread"
threads = 16
# gunicorn 27 opens a control socket at ~/.gunicorn/gunicorn.ctl by default; several servers
# on one host would fight over that one path.
control_socket_disable = True
proc_name = "solverfleet-collector"
# JSON lines from gunicorn and the collector alike; access lines only with --access-logfile.
logger_class = "solverfleet.obs.gunicornlog.JsonLogger"
logconfig_dict = LOGCONFIG

if _settings.tls_cert_file:  # validated as a pair by the settings
    certfile = _settings.tls_cert_file
    keyfile = _settings.tls_key_file
    # A rotated certificate is served from the next handshake on, without a restart.
    from solverfleet.tls import gunicorn_ssl_context as ssl_context  # noqa: F401
