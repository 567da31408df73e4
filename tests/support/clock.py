"""A clock for the engine that moves only when a test says so."""

from __future__ import annotations


class FakeClock:
    """Milliseconds that move only when a test says so. Passed to the engine as `clock`."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        self.now_ms += round(seconds * 1000)
