"""Observability shared by the agent and the collector: JSON logs with request ids
(logjson), gunicorn's logger (gunicornlog), and the Flask side of /metrics and /openapi.json
(web)."""
