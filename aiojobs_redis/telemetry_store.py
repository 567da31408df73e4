"""Telemetry in Redis: the writes a worker's RedisTelemetry sends and the dashboard's reads.

`TelemetryStore` is mixed into RedisEngine; the keys are in keys.py (events, throughput,
workers, worker), the records in records.py. events.py buffers and batches; this module
only talks to Redis.

The commands these send and read with are in the least-privilege ACL of acl.py (xadd in the
record_events script, zremrangebyscore in the heartbeat, xrevrange for the dashboard, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .boundary import redis_errors, text
from .keys import QueueKeys, parse_throughput_field, worker_key, workers_key
from .records import Event, RunningJob, Throughput, WorkerInfo
from .scripts import ScriptCall, run_pipelined

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .config import Settings
    from .scripts import Scripts

HISTORY_MINUTES = 24 * 60
HISTORY_TTL_MS = 25 * 3_600_000
_EVENTS_PER_CALL = 1_000  # events per script call, so that no call blocks Redis for long
_DEAD_WORKERS_MS = 60_000  # heartbeats lapsed longer ago than this are dropped from the set

# Per queue: the throughput buckets to add (field, amount, field, amount, ...) and the events.
EventBatch = Mapping[str, tuple[Sequence[Any], Sequence[bytes]]]


class TelemetryStore:
    """The telemetry methods of RedisEngine."""

    settings: Settings
    redis: Redis
    scripts: Scripts

    if TYPE_CHECKING:

        def keys(self, queue: str) -> QueueKeys: ...

    # -- writes (a worker's RedisTelemetry) -----------------------------------------------------

    async def record_events(self, batch: EventBatch, *, events_max: int) -> None:
        """Add throughput counts and events: one record_events call per queue, one round trip.

        A stream is capped near `events_max` entries. A call cut by a connection error may
        have run: sent again, its counts would count twice.
        """
        calls: list[ScriptCall] = []
        head = [events_max, HISTORY_TTL_MS]
        for queue, (buckets, encoded) in batch.items():
            keys = self.keys(queue)
            for start in range(0, max(1, len(encoded)), _EVENTS_PER_CALL):
                chunk = encoded[start : start + _EVENTS_PER_CALL]
                args = [*head, len(buckets) // 2, *buckets, *chunk] if start == 0 else [*head, 0, *chunk]
                calls.append((self.scripts.record_events, [keys.events, keys.throughput, keys.totals], args))
        async with redis_errors("record job events", timeout=self.settings.dispatch_timeout):
            await run_pipelined(self.redis, calls)

    async def write_heartbeat(self, worker_id: str, record: bytes, *, now_ms: int, ttl_ms: int) -> None:
        """Say `worker_id` is alive until `now_ms + ttl_ms` (Redis's clock), with its record."""
        prefix = self.settings.prefix
        async with (
            redis_errors("heartbeat", timeout=self.settings.dispatch_timeout),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            pipe.set(worker_key(prefix, worker_id), record, px=ttl_ms)
            pipe.zadd(workers_key(prefix), {worker_id: now_ms + ttl_ms})
            pipe.zremrangebyscore(workers_key(prefix), "-inf", now_ms - _DEAD_WORKERS_MS)
            await pipe.execute()

    async def remove_heartbeat(self, worker_id: str) -> None:
        prefix = self.settings.prefix
        async with (
            redis_errors("remove heartbeat", timeout=self.settings.dispatch_timeout),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            pipe.zrem(workers_key(prefix), worker_id)
            pipe.delete(worker_key(prefix, worker_id))
            await pipe.execute()

    async def trim_history(self, queues: Iterable[str], now_minute: int) -> int:
        """Delete throughput buckets older than HISTORY_MINUTES; return how many went."""
        keys = [self.keys(q).throughput for q in queues]
        async with (
            redis_errors("trim throughput history", timeout=self.settings.dispatch_timeout),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for key in keys:
                pipe.hgetall(key)
            hashes: list[dict[bytes, bytes]] = await pipe.execute()
        oldest = now_minute - HISTORY_MINUTES + 1
        removed = 0
        async with (
            redis_errors("trim throughput history", timeout=self.settings.dispatch_timeout),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for key, buckets in zip(keys, hashes, strict=True):
                old = [f for f in buckets if _minute_of(f) < oldest]
                if old:
                    pipe.hdel(key, *old)
                    removed += len(old)
            if removed:
                await pipe.execute()
        return removed

    # -- reads (the dashboard) ----------------------------------------------------------------

    async def recent_events(self, queues: Sequence[str], count: int = 50) -> list[Event]:
        """The newest `count` events of `queues`, newest first."""
        async with (
            redis_errors("read job events", timeout=self.settings.dispatch_timeout),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for queue in queues:
                pipe.xrevrange(self.keys(queue).events, count=count)
            replies: list[list[tuple[bytes, dict[bytes, bytes]]]] = await pipe.execute()
        found: list[Event] = []
        for queue, entries in zip(queues, replies, strict=True):
            found.extend(_event_of(queue, entry_id, fields) for entry_id, fields in entries)
        found.sort(key=lambda e: _entry_order(e.entry_id), reverse=True)
        return found[:count]

    async def throughput(
        self, queues: Sequence[str], now_ms: int, minutes: int = 60
    ) -> dict[str, Throughput]:
        """Runs per minute of each queue over the last `minutes` minutes (this one included)."""
        minutes = max(1, min(minutes, HISTORY_MINUTES))
        async with (
            redis_errors("read throughput", timeout=self.settings.dispatch_timeout),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for queue in queues:
                pipe.hgetall(self.keys(queue).throughput)
            hashes: list[dict[bytes, bytes]] = await pipe.execute()
        start = now_ms // 60_000 - minutes + 1
        result: dict[str, Throughput] = {}
        for queue, buckets in zip(queues, hashes, strict=True):
            series = Throughput(start, [0] * minutes, [0] * minutes, [0] * minutes)
            for name, value in buckets.items():
                parsed = parse_throughput_field(name)
                if parsed is None:
                    continue
                try:
                    index, count = parsed[0] - start, int(value)
                except ValueError:
                    continue
                if 0 <= index < minutes:
                    series.of(parsed[1])[index] += count
            result[queue] = series
        return result

    async def alive_workers(self, now_ms: int) -> list[WorkerInfo]:
        """Workers whose heartbeat has not lapsed, by id."""
        prefix = self.settings.prefix
        async with redis_errors("read workers", timeout=self.settings.dispatch_timeout):
            ids: list[Any] = await self.redis.zrangebyscore(workers_key(prefix), now_ms, "+inf")
            if not ids:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for worker_id in ids:  # GETs, not one MGET: the keys may live in several Cluster slots
                    pipe.get(worker_key(prefix, text(worker_id)))
                records: list[Any] = await pipe.execute()
        found: list[WorkerInfo] = []
        for raw in records:
            if raw is None:
                continue
            try:
                found.append(_worker_of(orjson.loads(raw)))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # not a heartbeat we wrote: leave it out
        return sorted(found, key=lambda w: w.id)


def _minute_of(bucket_field: bytes) -> int:
    parsed = parse_throughput_field(bucket_field)
    return -1 if parsed is None else parsed[0]  # -1: not ours, trimmed too


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _event_of(queue: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    ident = entry_id.decode()
    try:
        data = orjson.loads(fields.get(b"event", b"{}"))
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        data = {"kind": "?"}  # not an entry we wrote: shown, not trusted

    def field(name: str) -> str:
        value = data.get(name)
        return "" if value is None else str(value)

    def number(name: str) -> float | None:
        value = data.get(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    return Event(
        queue=queue,
        entry_id=ident,
        at_ms=int(number("at") or _entry_order(ident)[0]),
        kind=field("kind"),
        job_id=field("id"),
        name=field("job"),
        worker=field("worker"),
        attempt=int(number("attempt") or 0),
        duration_ms=number("ms"),
        error=field("error"),
    )


def _worker_of(data: dict[str, Any]) -> WorkerInfo:
    return WorkerInfo(
        id=str(data["id"]),
        host=str(data["host"]),
        pid=int(data["pid"]),
        queues=[str(q) for q in data["queues"]],
        concurrency=int(data["concurrency"]),
        started_ms=int(data["started_ms"]),
        seen_ms=int(data["seen_ms"]),
        counters={str(k): int(v) for k, v in data["counters"].items()},
        running=[RunningJob(str(q), str(i), str(n), int(s)) for q, i, n, s in data["running"]],
        format_version=int(data["format"]) if "format" in data else None,  # 0.1 wrote none
    )
