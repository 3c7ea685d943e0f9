"""Failed dashboard logins, limited per client address: after ``MAX_FAILURES`` refused logins
within ``WINDOW_MS`` an address gets 429 (with Retry-After) until enough of them leave the
window; a successful login clears its count.

Counted in the store (``dashboard_login_failures``, schema 15), so every gunicorn worker and
every collector on the same database sees the same count, and a restart forgets nothing. The
check and the count are two statements, not one lock: logins racing from one address across
workers may get a few more tries in, one per concurrent request. It slows guessing, it is not
a lockout. The address is ``request.remote_addr``, the collector's client address everywhere
(behind a proxy: the proxy's, unless a WSGI ProxyFix sets it).
"""

from __future__ import annotations

from solverfleet.collector.store import Database, Tx

MAX_FAILURES = 5
WINDOW_MS = 5 * 60 * 1000
MAX_ADDRESS = 128  # the column's width; remote_addr is an IP address, far shorter


class LoginLimiter:
    def __init__(self, db: Database) -> None:
        self._db = db

    def retry_after_s(self, address: str, now_ms: int) -> int:
        """Seconds until ``address`` may try again; 0: it may try now."""

        def read(tx: Tx) -> list[tuple]:
            # The newest MAX_FAILURES in the window: bounded however many there are.
            return tx.all(
                "SELECT failed_ms FROM dashboard_login_failures WHERE address = ?"
                " AND failed_ms > ? ORDER BY failed_ms DESC LIMIT ?",
                (address[:MAX_ADDRESS], now_ms - WINDOW_MS, MAX_FAILURES),
            )

        times = self._db.read(read)
        if len(times) < MAX_FAILURES:
            return 0
        # Free again when the MAX_FAILURES-th newest failure leaves the window.
        return max(1, -(-(int(times[-1][0]) + WINDOW_MS - now_ms) // 1000))

    def failed(self, address: str, now_ms: int) -> None:
        def write(tx: Tx) -> None:
            tx.execute(
                "DELETE FROM dashboard_login_failures WHERE failed_ms <= ?",
                (now_ms - WINDOW_MS,),
            )
            tx.execute(
                "INSERT INTO dashboard_login_failures (address, failed_ms) VALUES (?, ?)",
                (address[:MAX_ADDRESS], now_ms),
            )

        self._db.transaction(write)

    def succeeded(self, address: str) -> None:
        self._db.transaction(
            lambda tx: tx.execute(
                "DELETE FROM dashboard_login_failures WHERE address = ?", (address[:MAX_ADDRESS],)
            )
        )
