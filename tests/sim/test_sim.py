"""The simulator's bounded run in the normal suite: ~60 s of seeded schedules (SIM_SECONDS),
or one seed (SIM_SEED=123) to replay a failure. Prints schedules, steps and faults injected;
a failure prints its seed and the shrunk schedule."""

from __future__ import annotations

import logging
import os

import pytest

from tests.sim import schedule


def test_simulated_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    seed = os.environ.get("SIM_SEED")
    seconds = float(os.environ.get("SIM_SECONDS", "0" if seed else "60"))
    lines: list[str] = []
    logging.disable(logging.WARNING)  # every dropped request logs a warning
    try:
        totals = schedule.explore(
            seconds, int(seed) if seed else None, out=lines.append, shrink_budget=10.0
        )
    finally:
        logging.disable(logging.NOTSET)
    with capsys.disabled():
        print("\n" + "\n".join(lines) + ("\n" if lines else "") + schedule.format_totals(totals))
    assert not totals["failures"], "\n".join(
        f"seed {f['seed']}: {f['message']} (replay: SIM_SEED={f['seed']})"
        for f in totals["failures"]
    )


def test_fixed_seeds_hold_every_invariant() -> None:
    """Seeds 1-120, strictly (deterministic: a regression fails here, whatever the random
    exploration above happens to draw)."""
    logging.disable(logging.WARNING)
    failures = []
    try:
        for seed in range(1, 121):
            try:
                schedule.run(schedule.generate(seed), seed)
            except schedule.SimFailure as exc:
                failures.append(f"SIM_SEED={seed}: {exc}")
    finally:
        logging.disable(logging.NOTSET)
    assert not failures, "\n".join(failures)
