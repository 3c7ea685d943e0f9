"""gunicorn's logging for the agent and the collector: JSON lines, like the apps' own.

Both gunicorn_conf modules set ``logger_class = JsonLogger`` and ``logconfig_dict =
LOGCONFIG``. ``LOGCONFIG`` sends gunicorn's error log, the ``solverfleet`` loggers and the
root logger to stderr through ``JsonFormatter``; ``--log-level`` still sets the level.

Access lines are off unless ``--access-logfile`` is given (e.g. ``GUNICORN_CMD_ARGS=
"--access-logfile -"``). With a ``logconfig_dict`` plain gunicorn would build its access
atoms (every header and environ entry) on every request even when nothing is written; the
agent's hot path should not pay for that. When on, a line carries method, path, status,
duration, size, peer and request id, and never the query string (in.php/res.php carry the
API key there) or any header.
"""

from __future__ import annotations

import logging

from gunicorn.glogging import Logger

from solverfleet.obs.logjson import JsonFormatter

LOGCONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "solverfleet.obs.logjson.JsonFormatter"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    # No "level" on these two: gunicorn has already applied --log-level to them.
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "propagate": False},
        "solverfleet": {"handlers": ["stderr"], "propagate": False},
    },
    "root": {"level": "WARNING", "handlers": ["stderr"]},
}


class JsonLogger(Logger):
    def setup(self, cfg) -> None:
        super().setup(cfg)  # applies LOGCONFIG (cfg.logconfig_dict) last
        logging.getLogger("solverfleet").setLevel(self.loglevel)
        formatter = JsonFormatter()
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            handler.setFormatter(formatter)  # also --access-logfile's own handler

    def _compute_access_log_enabled(self) -> bool:
        return self.cfg.accesslog is not None

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        request_id = next(
            (value for name, value in resp.headers if name.lower() == "x-request-id"), None
        )
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
        self.access_log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "status": int(status),
                "duration_ms": round(request_time.total_seconds() * 1000, 3),
                "bytes": getattr(resp, "sent", None),
                "peer": environ.get("REMOTE_ADDR"),
                "request_id": request_id,
            },
        )
