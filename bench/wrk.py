"""Drive wrk (a C load generator, Debian package `wrk`) and parse its figures.

wrk runs a closed loop: ``connections`` clients each send the next request as soon as the
last one answered. It costs far less CPU per request than a Python client, which matters on a
2-core machine where the client shares the CPUs with the servers under test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

LUA = """
wrk.method = "POST"
wrk.body = {body}
{headers}
local errors = 0
response = function(status, headers, body)
  if status >= 400 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("SF_RESULT %d %d %d %d %d %d\\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout + summary.errors.status,
    latency:percentile(50), latency:percentile(99), summary.duration, errors))
end
"""


@dataclass
class WrkResult:
    label: str
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    seconds: float

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    label: str,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    threads: int = 1,
) -> WrkResult:
    header_lines = "\n".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()
    )
    script = LUA.format(body=json.dumps(body.decode()), headers=header_lines)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{round(seconds)}s",
             "--timeout", "30s", "-s", lua.name, url],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout  # fmt: skip
    match = re.search(r"SF_RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    total, socket_errors, p50_us, p99_us, duration_us, http_errors = map(int, match.groups())
    return WrkResult(
        label,
        requests=total,
        errors=socket_errors + http_errors,
        p50_ms=p50_us / 1000,
        p99_ms=p99_us / 1000,
        seconds=duration_us / 1e6,
    )
