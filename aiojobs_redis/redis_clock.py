"""Redis's clock, tracked once per engine: the one offset leases, delays and telemetry go by.

`RedisClock` is mixed into RedisEngine, so `engine.redis_time_ms()` and
`engine.clock_offset_ms` are engine members. A method of the engine's own class rather than a
separate object, so that the dispatch path that reads it costs no extra frame.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .boundary import redis_errors

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .config import Settings


class RedisClock:
    """TIME read now and then and followed on the monotonic clock in between."""

    redis: Redis
    settings: Settings
    _redis_offset_ms: float | None = None  # Redis's clock minus the monotonic clock
    _offset_read_ms = 0.0
    # Redis's clock minus this host's wall clock, at the last reading.
    clock_offset_ms = 0

    async def redis_time_ms(self, *, max_age_ms: int = 60_000, action: str = "read the time") -> int:
        """Redis's clock now, in ms: the one clock leases, delays and telemetry go by.

        TIME is read (one round trip) when the last reading is older than `max_age_ms`, and
        followed in between on the monotonic clock, so a wall clock stepped back by NTP does
        not matter. Each reading also updates `clock_offset_ms`. `action` names the caller
        in an error. Always Redis's TIME, also for an engine given a test `clock`.
        """
        local_ms = time.monotonic() * 1000
        if self._redis_offset_ms is None or local_ms - self._offset_read_ms >= max_age_ms:
            wall_before = time.time_ns() // 1_000_000
            async with redis_errors(action, timeout=self.settings.dispatch_timeout):
                seconds, micros = await self.redis.time()
            wall_after = time.time_ns() // 1_000_000
            after_ms = time.monotonic() * 1000
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            self._redis_offset_ms = now_ms - (local_ms + after_ms) / 2
            self._offset_read_ms = after_ms
            self.clock_offset_ms = now_ms - (wall_before + wall_after) // 2
            return now_ms
        return round(local_ms + self._redis_offset_ms)
