"""gunicorn settings for the demo worker: one gevent process, many cheap concurrent waits.

``--bind`` and other command-line flags override these.
"""

bind = "127.0.0.1:8500"
workers = 1
worker_class = "gevent"
worker_connections = 10_000
graceful_timeout = 30
# keepalive stays at gunicorn's default (2 s): on SIGTERM gunicorn waits for idle keep-alive
# connections too, so a long keepalive would stretch every graceful stop.

# gunicorn 27 opens a control socket at ~/.gunicorn/gunicorn.ctl by default; several servers
# on one host would fight over that one path.
control_socket_disable = True
