"""``python -m tests.sim --seconds 3600 [--seed N]`` (what ``make sim`` runs)."""

from __future__ import annotations

import argparse
import logging
import sys

from tests.sim import schedule


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=None, help="first seed (replay: --seconds 0)")
    parser.add_argument("--steps", type=int, default=schedule.STEPS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    totals = schedule.explore(args.seconds, args.seed, steps=args.steps)
    print(schedule.format_totals(totals))
    return 1 if totals["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
