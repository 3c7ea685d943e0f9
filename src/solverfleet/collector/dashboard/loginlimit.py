"""Failed dashboard logins, limited per client address: after ``MAX_FAILURES`` refused logins
within ``WINDOW_MS`` an address gets 429 (with Retry-After) until the oldest leaves the window;
a successful login clears its count.

Counted in memory, per collector process (each worker counts on its own, and a restart forgets):
it slows guessing, it is not a lockout. The address is ``request.remote_addr``, the collector's
client address everywhere (behind a proxy: the proxy's, unless a WSGI ProxyFix sets it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

MAX_FAILURES = 5
WINDOW_MS = 5 * 60 * 1000
MAX_ADDRESSES = 10_000  # bounded memory: the address failing least recently is forgotten first


class LoginLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[int]] = OrderedDict()

    def _recent(self, address: str, now_ms: int) -> deque[int]:
        times = self._failures.get(address, deque())
        while times and times[0] <= now_ms - WINDOW_MS:
            times.popleft()
        return times

    def retry_after_s(self, address: str, now_ms: int) -> int:
        """Seconds until ``address`` may try again; 0: it may try now."""
        with self._lock:
            times = self._recent(address, now_ms)
            if len(times) < MAX_FAILURES:
                return 0
            return max(1, -(-(times[0] + WINDOW_MS - now_ms) // 1000))

    def failed(self, address: str, now_ms: int) -> None:
        with self._lock:
            times = self._recent(address, now_ms)
            times.append(now_ms)
            self._failures[address] = times
            self._failures.move_to_end(address)
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
