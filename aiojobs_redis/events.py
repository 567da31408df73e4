"""Job events, throughput history and worker heartbeats in Redis: what the dashboard reads.

Keys, for prefix ``jobs:`` and queue ``payments`` (a queue's keys share its hash tag)::

    jobs:{payments}:events   stream  one entry per job event, capped near `events_max`
                                     (XADD MAXLEN ~); its one field, `event`, is JSON: kind,
                                     at (ms, Redis's clock), id, job, worker, attempt, ms
                                     (handle() run time), error (a one-line summary)
    jobs:{payments}:tp       hash    "<minute>:s" / "<minute>:f" -> runs that succeeded / failed
                                     in that minute (minutes since the epoch, Redis's clock);
                                     fields older than 24 h are trimmed, and the key expires
                                     25 h after its last write
    jobs:workers             zset    worker id -> when its heartbeat lapses (ms)
    jobs:worker:<id>         string  the worker's heartbeat (JSON: host, pid, queues, counters,
                                     the jobs it runs and since when); expires with it

Event kinds: succeeded, retried, failed, released, lost (how one run of a job ended, see
hooks.Result), reclaimed and stalled (a lapsed lease this worker's reaper took back, or
failed for stalling too often), and with `record_starts` started. Payloads are never
written here.

The worker's hot path only appends to memory; a side task sends everything every
`flush_interval` seconds, one call of the events.lua script per queue, all in one round trip
(a command per event would cost the worker several times more CPU per job). Recording is
best effort: while Redis is away, up to `buffer_max` events wait (the oldest are dropped
past that) and counts accumulate; a flush cut by a connection error may be sent twice.

A Redis ACL user for a worker needs, besides the engine's commands, those in
TELEMETRY_COMMANDS; the dashboard reads with time, smembers, llen, zcard, zrevrange, hgetall,
zrange, hmget, xrevrange, zrangebyscore and get, and its buttons use the engine's
failed-set scripts.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from .engine import RedisEngine, redis_errors
from .errors import EngineError
from .keys import QueueKeys
from .lifecycle import JobContext, Observer, WorkerView
from .scripts import ScriptCall, run_pipelined

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript


log = logging.getLogger(__name__)

# What a worker's telemetry sends, in events.lua and around it (for a Redis ACL user; the
# engine's own commands, evalsha and script|load among them, aside).
TELEMETRY_COMMANDS = (
    "xadd",
    "hincrby",
    "pexpire",
    "hgetall",
    "hdel",
    "set",
    "del",
    "zadd",
    "zrem",
    "zremrangebyscore",
    "time",
)
HISTORY_MINUTES = 24 * 60
_HISTORY_TTL_MS = 25 * 3_600_000
_EVENTS_PER_CALL = 1_000  # events per script call, so that no call blocks Redis for long
_ERROR_SUMMARY = 300  # characters of an error kept in an event
_RUNNING_PUBLISHED = 500  # running jobs listed in a heartbeat, at most
_WARN_EVERY = 60.0  # seconds between warnings about failed flushes


def events_key(keys: QueueKeys) -> str:
    return f"{keys.base}:events"


def throughput_key(keys: QueueKeys) -> str:
    return f"{keys.base}:tp"


def workers_key(prefix: str) -> str:
    return f"{prefix}workers"


def worker_key(prefix: str, worker_id: str) -> str:
    return f"{prefix}worker:{worker_id}"


# -- records the dashboard reads -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    queue: str
    entry_id: str  # the stream entry id: Redis's time in ms, then a sequence number
    at_ms: int
    kind: str
    job_id: str
    name: str
    worker: str
    attempt: int
    duration_ms: float | None
    error: str


@dataclass(frozen=True, slots=True)
class RunningJob:
    queue: str
    id: str
    name: str
    started_ms: int  # Redis's clock


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    started_ms: int
    seen_ms: int
    counters: dict[str, int]
    running: list[RunningJob] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Throughput:
    """Runs per minute, oldest first, for the minutes `start_minute` .. `start_minute + len - 1`."""

    start_minute: int
    succeeded: list[int]
    failed: list[int]


# -- the writer ------------------------------------------------------------------------------


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
        self.offset_ms = 0  # Redis's clock minus this host's, measured at each heartbeat
        self._events: deque[_Pending] = deque(maxlen=buffer_max)
        self._counts: dict[tuple[str, int, str], int] = {}
        self._worker: WorkerView | None = None
        self._started_ms = 0
        self._last_warning = -_WARN_EVERY
        self._trimmed_minute = 0
        self._loaded: tuple[RedisEngine, AsyncScript] | None = None

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
        if result == "succeeded":
            bucket = "s"
        elif result in ("retried", "failed"):
            bucket = "f"
        else:
            return
        key = (ctx.queue, at // 60_000, bucket)
        self._counts[key] = self._counts.get(key, 0) + 1

    def jobs_reclaimed(self, queue: str, requeued: Sequence[str], failed: Sequence[str]) -> None:
        for job_id in requeued:
            self._event(queue, "reclaimed", None, job_id)
        for job_id in failed:
            self._event(queue, "stalled", None, job_id)
        if failed:
            key = (queue, self._now_ms() // 60_000, "f")
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
                    await self._quietly("heartbeat", self.heartbeat)
                    next_beat = time.monotonic() + self.heartbeat_interval
                    await self._quietly("trim throughput history", self.trim_history)
                await anyio.sleep(self.flush_interval)
                await self._quietly("record job events", self.flush)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await self._quietly("record job events", self.flush)
                await self._quietly("remove heartbeat", self.remove_heartbeat)

    async def _quietly(self, what: str, call: Callable[[], Awaitable[None]]) -> None:
        try:
            await call()
        except EngineError as exc:
            now = time.monotonic()
            if now - self._last_warning >= _WARN_EVERY:
                self._last_warning = now
                log.warning("%s failed (%s); the worker carries on", what, type(exc).__name__)

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
        for (queue, minute, bucket), n in counts.items():
            by_queue.setdefault(queue, ([], []))[0].extend((f"{minute}:{bucket}", n))
        for queue, encoded_event in events:
            by_queue.setdefault(queue, ([], []))[1].append(encoded_event)
        engine = self._engine
        script = self._script(engine)
        calls: list[ScriptCall] = []
        for queue, (buckets, encoded) in by_queue.items():
            keys = engine.keys(queue)
            head = [self.events_max, _HISTORY_TTL_MS]
            for start in range(0, max(1, len(encoded)), _EVENTS_PER_CALL):
                chunk = encoded[start : start + _EVENTS_PER_CALL]
                args = [*head, len(buckets) // 2, *buckets, *chunk] if start == 0 else [*head, 0, *chunk]
                calls.append((script, [events_key(keys), throughput_key(keys)], args))
        try:
            async with redis_errors("record job events"):
                await run_pipelined(engine.redis, calls)
        except EngineError:
            # Keep everything for the next flush (a call that did run may then count twice).
            self._events = deque([*events, *self._events], maxlen=self.buffer_max)
            for key, n in counts.items():
                self._counts[key] = self._counts.get(key, 0) + n
            raise

    def _script(self, engine: RedisEngine) -> AsyncScript:
        if self._loaded is None or self._loaded[0] is not engine:
            source = (resources.files(__package__) / "events.lua").read_text("utf-8")
            self._loaded = (engine, engine.redis.register_script(source))
        return self._loaded[1]

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
        }

    async def heartbeat(self) -> None:
        """Say this worker is alive (and what it runs) until a few heartbeats from now."""
        engine = self._engine
        worker = self._worker
        assert worker is not None
        before = time.time_ns() // 1_000_000
        async with redis_errors("heartbeat"):
            seconds, micros = await engine.redis.time()
        after = time.time_ns() // 1_000_000
        now_ms = seconds * 1000 + micros // 1000
        self.offset_ms = now_ms - (before + after) // 2
        ttl_ms = int(self.heartbeat_interval * 5000) + 1000
        prefix = engine.settings.prefix
        async with redis_errors("heartbeat"), engine.redis.pipeline(transaction=False) as pipe:
            record = orjson.dumps(self.heartbeat_record(now_ms))
            pipe.set(worker_key(prefix, worker.worker_id), record, px=ttl_ms)
            pipe.zadd(workers_key(prefix), {worker.worker_id: now_ms + ttl_ms})
            pipe.zremrangebyscore(workers_key(prefix), "-inf", now_ms - 60_000)
            await pipe.execute()

    async def remove_heartbeat(self) -> None:
        engine = self._engine
        worker = self._worker
        assert worker is not None
        prefix = engine.settings.prefix
        async with redis_errors("remove heartbeat"), engine.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(workers_key(prefix), worker.worker_id)
            pipe.delete(worker_key(prefix, worker.worker_id))
            await pipe.execute()

    async def trim_history(self) -> None:
        """Drop minute buckets older than 24 h from this worker's queues (once a minute)."""
        minute = self._now_ms() // 60_000
        if minute == self._trimmed_minute:
            return
        self._trimmed_minute = minute
        assert self._worker is not None
        await trim_history(self._engine, self._worker.queues, minute)


async def trim_history(engine: RedisEngine, queues: Iterable[str], now_minute: int) -> int:
    """Delete throughput buckets older than HISTORY_MINUTES; return how many went."""
    keys = [throughput_key(engine.keys(q)) for q in queues]
    async with redis_errors("trim throughput history"), engine.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        hashes: list[dict[bytes, bytes]] = await pipe.execute()
    oldest = now_minute - HISTORY_MINUTES + 1
    removed = 0
    async with redis_errors("trim throughput history"), engine.redis.pipeline(transaction=False) as pipe:
        for key, buckets in zip(keys, hashes, strict=True):
            old = [f for f in buckets if _minute_of(f) < oldest]
            if old:
                pipe.hdel(key, *old)
                removed += len(old)
        if removed:
            await pipe.execute()
    return removed


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


def _minute_of(bucket_field: bytes) -> int:
    try:
        return int(bucket_field.split(b":", 1)[0])
    except ValueError:
        return -1  # not ours: trimmed too


# -- the readers -----------------------------------------------------------------------------


async def redis_now_ms(engine: RedisEngine) -> int:
    async with redis_errors("read the time"):
        seconds, micros = await engine.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def recent_events(engine: RedisEngine, queues: Sequence[str], count: int = 50) -> list[Event]:
    """The newest `count` events of `queues`, newest first."""
    async with redis_errors("read job events"), engine.redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.xrevrange(events_key(engine.keys(queue)), count=count)
        replies: list[list[tuple[bytes, dict[bytes, bytes]]]] = await pipe.execute()
    found: list[Event] = []
    for queue, entries in zip(queues, replies, strict=True):
        found.extend(_event_of(queue, entry_id, fields) for entry_id, fields in entries)
    found.sort(key=lambda e: _entry_order(e.entry_id), reverse=True)
    return found[:count]


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

    def text(name: str) -> str:
        value = data.get(name)
        return "" if value is None else str(value)

    def number(name: str) -> float | None:
        value = data.get(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    return Event(
        queue=queue,
        entry_id=ident,
        at_ms=int(number("at") or _entry_order(ident)[0]),
        kind=text("kind"),
        job_id=text("id"),
        name=text("job"),
        worker=text("worker"),
        attempt=int(number("attempt") or 0),
        duration_ms=number("ms"),
        error=text("error"),
    )


async def throughput(
    engine: RedisEngine, queues: Sequence[str], now_ms: int, minutes: int = 60
) -> dict[str, Throughput]:
    """Runs per minute of each queue over the last `minutes` minutes (this one included)."""
    minutes = max(1, min(minutes, HISTORY_MINUTES))
    async with redis_errors("read throughput"), engine.redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.hgetall(throughput_key(engine.keys(queue)))
        hashes: list[dict[bytes, bytes]] = await pipe.execute()
    start = now_ms // 60_000 - minutes + 1
    result: dict[str, Throughput] = {}
    for queue, buckets in zip(queues, hashes, strict=True):
        series = Throughput(start, [0] * minutes, [0] * minutes)
        for name, value in buckets.items():
            minute, _, kind = name.decode("ascii", "replace").partition(":")
            try:
                index, count = int(minute) - start, int(value)
            except ValueError:
                continue
            if 0 <= index < minutes:
                (series.succeeded if kind == "s" else series.failed)[index] += count
        result[queue] = series
    return result


async def alive_workers(engine: RedisEngine, now_ms: int) -> list[WorkerInfo]:
    """Workers whose heartbeat has not lapsed, by id."""
    prefix = engine.settings.prefix
    async with redis_errors("read workers"):
        ids: list[Any] = await engine.redis.zrangebyscore(workers_key(prefix), now_ms, "+inf")
        if not ids:
            return []
        async with engine.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:  # GETs, not one MGET: the keys may live in several Cluster slots
                pipe.get(worker_key(prefix, _text(worker_id)))
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


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


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
    )
