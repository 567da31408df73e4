"""A worker's job events, throughput counts and heartbeat, recorded in Redis for the dashboard.

The keys and what they hold are in keys.py; the Redis side (the record_events script, the
heartbeat, the trim, and the dashboard's readers) in telemetry_store.py. This module is the
writer: it buffers and batches.

Event kinds: succeeded, retried, failed, released, lost (how one run of a job ended, see
hooks.Result), reclaimed and stalled (a lapsed lease this worker's reaper took back, or
failed for stalling too often), and with `record_starts` started. Payloads are never
written here.

The worker's hot path only appends to memory; a side task sends everything every
`flush_interval` seconds, one call of the record_events script per queue, all in one round
trip (a command per event would cost the worker several times more CPU per job). Recording
is best effort: while Redis is away, up to `buffer_max` events wait (the oldest are dropped
past that) and counts accumulate; a flush cut by a connection error may be sent twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any

import anyio
import orjson

from .engine import RedisEngine
from .errors import EngineError
from .keys import FAILED, FORMAT_VERSION, RETRIED, SUCCEEDED, throughput_field
from .lifecycle import JobContext, Observer, WorkerView

log = logging.getLogger(__name__)

_ERROR_SUMMARY = 300  # characters of an error kept in an event
_RUNNING_PUBLISHED = 500  # running jobs listed in a heartbeat, at most
_WARN_EVERY = 60.0  # seconds between warnings about failed flushes


class RedisTelemetry(Observer):
    """A worker's job events, throughput counts and heartbeat, sent in batches."""

    def __init__(
        self,
        *,
        events_max: int = 10_000,
        flush_interval: float = 0.5,
        heartbeat_interval: float = 1.0,
        buffer_max: int = 20_000,
        record_starts: bool = False,
    ) -> None:
        if events_max < 0 or flush_interval <= 0 or heartbeat_interval <= 0 or buffer_max < 1:
            raise ValueError("events_max must be >= 0 and the intervals and buffer_max positive")
        self.events_max = events_max  # 0: no event stream, only counts and heartbeats
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self.buffer_max = buffer_max
        self.record_starts = record_starts  # a "started" event per run too (twice the writes)
        self.offset_ms = 0  # Redis's clock minus this host's: the engine's, copied at each heartbeat
        self._events: deque[_Pending] = deque(maxlen=buffer_max)
        self._counts: dict[tuple[str, int, str], int] = {}  # (queue, minute, kind) -> runs
        self._worker: WorkerView | None = None
        self._started_ms = 0
        self._last_warning: dict[str, float] = {}  # call -> when its failure was last logged
        self._trimmed_minute = 0

    def __repr__(self) -> str:
        return f"<RedisTelemetry events_max={self.events_max} pending={len(self._events)}>"

    # -- the hot path: memory only ----------------------------------------------------------

    def _now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def _event(self, queue: str, kind: str, ctx: JobContext | None, job_id: str = "", at: int = 0) -> None:
        # Encoded now, so that the buffer holds bytes, not the run's objects.
        if self.events_max:
            at = at or self._now_ms()
            self._events.append((queue, _encode(kind, at, ctx.job_id if ctx else job_id, ctx)))

    def job_started(self, ctx: JobContext) -> None:
        if self.record_starts:
            self._event(ctx.queue, "started", ctx)

    def job_ended(self, ctx: JobContext) -> None:
        result = ctx.result or "lost"
        at = self._now_ms()
        self._event(ctx.queue, result, ctx, at=at)
        kind = {"succeeded": SUCCEEDED, "retried": RETRIED, "failed": FAILED}.get(result)
        if kind is None:
            return
        key = (ctx.queue, at // 60_000, kind)
        self._counts[key] = self._counts.get(key, 0) + 1

    def jobs_reclaimed(self, queue: str, requeued: Sequence[str], failed: Sequence[str]) -> None:
        for job_id in requeued:
            self._event(queue, "reclaimed", None, job_id)
        for job_id in failed:
            self._event(queue, "stalled", None, job_id)
        if failed:
            key = (queue, self._now_ms() // 60_000, FAILED)
            self._counts[key] = self._counts.get(key, 0) + len(failed)

    # -- the side task ----------------------------------------------------------------------

    async def serve(self, worker: WorkerView) -> None:
        if not isinstance(worker.engine, RedisEngine):
            log.warning("Redis telemetry needs a Redis engine, not %r: recording nothing", worker.engine)
            return
        self._worker = worker
        self._started_ms = time.time_ns() // 1_000_000
        next_beat = 0.0
        try:
            while True:
                if time.monotonic() >= next_beat:
                    await self._quietly(self.heartbeat)
                    next_beat = time.monotonic() + self.heartbeat_interval
                    await self._quietly(self.trim_history)
                await anyio.sleep(self.flush_interval)
                await self._quietly(self.flush)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await self._quietly(self.flush)
                await self._quietly(self.remove_heartbeat)

    async def _quietly(self, call: Callable[[], Awaitable[None]]) -> None:
        try:
            await call()
        except EngineError as exc:
            # Once a minute for each kind of call, so that one failing does not hide another.
            now, kind = time.monotonic(), call.__name__
            if now - self._last_warning.get(kind, -_WARN_EVERY) >= _WARN_EVERY:
                self._last_warning[kind] = now
                # The error names the cause (a NOPERM names the command the ACL lacks).
                log.warning("telemetry: %s; the worker carries on", exc)

    @property
    def _engine(self) -> RedisEngine:
        assert self._worker is not None, "serve() sets the worker"
        engine = self._worker.engine
        assert isinstance(engine, RedisEngine), "serve() checks the engine"
        return engine

    async def flush(self) -> None:
        """Send the buffered events and counts: one script call per queue, one round trip."""
        if not self._events and not self._counts:
            return
        events, self._events = self._events, deque(maxlen=self.buffer_max)
        counts, self._counts = self._counts, {}
        by_queue: dict[str, tuple[list[Any], list[bytes]]] = {}
        for (queue, minute, kind), n in counts.items():
            by_queue.setdefault(queue, ([], []))[0].extend((throughput_field(minute, kind), n))
        for queue, encoded_event in events:
            by_queue.setdefault(queue, ([], []))[1].append(encoded_event)
        try:
            await self._engine.record_events(by_queue, events_max=self.events_max)
        except EngineError:
            # Keep everything for the next flush (a call that did run may then count twice).
            self._events = deque([*events, *self._events], maxlen=self.buffer_max)
            for key, n in counts.items():
                self._counts[key] = self._counts.get(key, 0) + n
            raise

    def heartbeat_record(self, now_ms: int) -> dict[str, Any]:
        worker = self._worker
        assert worker is not None
        running = [
            (ctx.queue, ctx.job_id, ctx.name, ctx.started_ms + self.offset_ms)
            for ctx in list(worker.running.values())[:_RUNNING_PUBLISHED]
        ]
        return {
            "id": worker.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": worker.queues,
            "concurrency": worker.concurrency,
            "started_ms": self._started_ms + self.offset_ms,
            "seen_ms": now_ms,
            "counters": asdict(worker.counters),
            "running": running,
            # The data format this worker writes: `doctor` warns of live workers of an older one
            # (0.1's heartbeats have no such field). A field added: older readers ignore it.
            "format": FORMAT_VERSION,
        }

    async def heartbeat(self) -> None:
        """Say this worker is alive (and what it runs) until a few heartbeats from now."""
        engine = self._engine
        worker = self._worker
        assert worker is not None
        # One TIME read per heartbeat; the offset it measures dates this worker's events.
        now_ms = await engine.redis_time_ms(max_age_ms=0, action="heartbeat")
        self.offset_ms = engine.clock_offset_ms
        ttl_ms = int(self.heartbeat_interval * 5000) + 1000
        record = orjson.dumps(self.heartbeat_record(now_ms))
        await engine.write_heartbeat(worker.worker_id, record, now_ms=now_ms, ttl_ms=ttl_ms)

    async def remove_heartbeat(self) -> None:
        engine = self._engine
        worker = self._worker
        assert worker is not None
        await engine.remove_heartbeat(worker.worker_id)

    async def trim_history(self) -> None:
        """Drop minute buckets older than 24 h from this worker's queues (once a minute)."""
        minute = self._now_ms() // 60_000
        if minute == self._trimmed_minute:
            return
        self._trimmed_minute = minute
        assert self._worker is not None
        await self._engine.trim_history(self._worker.queues, minute)


_Pending = tuple[str, bytes]  # queue, the event's JSON


def _encode(kind: str, at: int, job_id: str, ctx: JobContext | None) -> bytes:
    """One event as the JSON stored in its stream entry's `event` field."""
    event: dict[str, Any] = {"kind": kind, "at": at, "id": job_id}
    if ctx is not None:
        event["job"] = ctx.name
        event["worker"] = ctx.worker_id
        event["attempt"] = ctx.attempt
        if ctx.duration is not None:
            event["ms"] = round(ctx.duration * 1000, 3)
        if ctx.error is not None:
            event["error"] = f"{type(ctx.error).__name__}: {ctx.error}"[:_ERROR_SUMMARY]
    return orjson.dumps(event)
