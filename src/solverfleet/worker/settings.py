"""Demo worker settings: latency (fixed or a range) and failure rate, from SOLVERFLEET_* env."""

from __future__ import annotations

import dataclasses
import re

from solverfleet.settings import SettingsError

_LATENCY_RE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    latency_ms: str = "50"  # "50" (fixed) or "20-80" (uniform in the range)
    failure_rate: float = 0.0  # probability in 0..1 that a call answers 500
    seed: int | None = None  # makes latency and failure draws reproducible

    def __post_init__(self) -> None:
        self.latency_range()  # validate early: a typo fails at start, not on the first call
        rate = self.failure_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise SettingsError(f"failure_rate must be a number in 0..1, got {rate!r}")

    def latency_range(self) -> tuple[int, int]:
        match = _LATENCY_RE.match(str(self.latency_ms))
        if not match:
            raise SettingsError(
                f"latency_ms must be like '50' or '20-80' (milliseconds), got {self.latency_ms!r}"
            )
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise SettingsError(f"latency_ms range is reversed: {self.latency_ms!r}")
        return low, high
