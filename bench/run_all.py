"""Run every benchmark in turn and print its figures (``make bench``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    "bench_precheck.py",
    "bench_overhead.py",
    "bench_inflight.py",
    "bench_ingest.py",
    "bench_reports.py",
    "bench_obs.py",
    "bench_lease.py",
    "bench_revocation.py",
    "bench_fleet_scale.py",  # MariaDB, 50 and 200 simulated agents x 10k keys, ~3 min
    "bench_rollout.py",  # root: a lab of namespace hosts, ~15 min
]


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"\n=== {name} ===", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)], cwd=HERE).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
