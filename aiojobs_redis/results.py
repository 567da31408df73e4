"""Results and progress: waiting for a job's end, reading what it returned and how far it got.

A class with `keep_result = "+1 hour"` has what handle() returns (JSON) kept at
``<base>:r:<id>`` for that long after the job is done (ack.lua); when such a job ends, done
or failed, its script also adds one entry to the stream ``<base>:n:<id>`` (expiring after a
minute). A waiter reads the job's state, then blocks on that stream with XREAD, which does
not consume it: every waiter of the job wakes, in one round trip. The XREAD blocks in slices
(1 s, growing to 5 s), after each of which the state is read again: a job that ends without
a notice (a job of a class that keeps no result, a stalled job failed by a reaper, an abort)
is seen within a slice. Blocking calls use a client of their own whose socket timeout
outlasts a slice (redis-py's default, 5 s, would cut them).

Plain jobs (no keep_result) pay nothing: their ack and fail calls are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from . import sharding, topology
from .boundary import redis_errors
from .context import current_engine
from .errors import AiojobsRedisError, JobAborted, JobFailed, JobNotFound
from .keys import validate_job_id, validate_queue

if TYPE_CHECKING:
    from .config import Settings
    from .keys import QueueKeys
    from .records import ClaimedJob, JobInfo
    from .scripts import Scripts

FIRST_SLICE = 1.0  # seconds a waiter blocks before it reads the state again
LAST_SLICE = 5.0  # ... growing to this
CLUSTER_BLOCKING_CONNECTIONS = 256  # per node, as topology.open_client(blocking=True) makes them


@dataclass(frozen=True, slots=True)
class _Pending:
    """The job has not ended yet."""


PENDING = _Pending()


class Results:
    """The engine's side of results and progress (mixed into RedisEngine)."""

    if TYPE_CHECKING:
        redis: Redis
        settings: Settings
        scripts: Scripts
        _options: dict[str, Any]

        def keys(self, queue: str) -> QueueKeys: ...

        async def _get_job(self, queue: str, job_id: str, with_payload: bool) -> JobInfo | None: ...

        async def _find_inline(self, queue: str, job_id: str, with_payload: bool) -> JobInfo | None: ...

    _waiting: Redis | None = None  # for XREAD BLOCK (see the module's docstring)
    _waiting_slots: anyio.Semaphore | None = None

    async def set_progress(self, job: ClaimedJob, progress: bytes) -> bool:
        """Record a running job's progress (JSON), if this run still holds its lease."""
        async with redis_errors(f"set progress of {job.id}"):
            key = self.keys(job.queue).job(job.id)
            done = await self.scripts.progress(keys=[key], args=[job.token, progress])
        return bool(done)

    async def progress(self, queue: str, job_id: str) -> Any:
        """The progress the job last recorded, or None (none recorded, or its record is gone:
        a plain job's record goes when it is done)."""
        queue = await self._located(queue, validate_job_id(job_id))
        async with redis_errors(f"read progress of {job_id}"):
            raw = await self.redis.hget(self.keys(queue).job(job_id), "G")
        return None if raw is None else orjson.loads(raw)

    async def kept_result(self, queue: str, job_id: str) -> tuple[bool, Any]:
        """(True, value) when the job is done and its result is kept; else (False, None)."""
        queue = await self._located(queue, validate_job_id(job_id))
        async with redis_errors(f"read result of {job_id}"):
            raw = await self.redis.get(self.keys(queue).result(job_id))
        return (False, None) if raw is None else (True, orjson.loads(raw))

    async def result(self, queue: str, job_id: str, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Wait for the job to end and return what its handle() returned (keep_result).

        Raises JobFailed (it failed for good: reason, type, message), JobAborted, JobNotFound
        (an unknown id, or the job ended and its result was not kept or has expired), or
        TimeoutError when it has not ended within `timeout` seconds (None: no limit); the job
        is left as it is.
        """
        validate_job_id(job_id)
        queue = await self._located(validate_queue(queue), job_id)
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        seen = "0"  # the last notice read: only a newer one wakes the next XREAD
        block = FIRST_SLICE
        while True:
            outcome = await self._outcome(queue, job_id)
            if outcome is not PENDING:
                return outcome
            left = deadline - anyio.current_time()
            if left <= 0:
                raise TimeoutError(f"job {job_id} did not end within {timeout:g} s (it is left as it is)")
            seen = await self._wait_notice(queue, job_id, seen, min(left, block))
            block = min(block * 2, LAST_SLICE)

    # -- reading the state ---------------------------------------------------------------------

    async def _outcome(self, queue: str, job_id: str, *, looked_inline: bool = False) -> Any:
        """The kept result, or PENDING; raises for a job that ended otherwise or is unknown."""
        keys = self.keys(queue)
        reading = redis_errors(f"read the state of {job_id}")
        async with reading, self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.result(job_id))
            pipe.type(keys.job(job_id))
            pipe.hmget(keys.job(job_id), "s", "e", "X")
            result, kind, fields = await pipe.execute(raise_on_error=False)
        if result is not None:
            return orjson.loads(result)
        if kind == b"hash" and isinstance(fields, list):
            return _judge(job_id, *fields)
        if kind == b"none" and not looked_inline:
            # Unknown, or waiting inline in the queue list: no key of its own until claimed
            # (the list is read in slices, O(jobs waiting)). If not there, a claim may have
            # taken it meanwhile: read again.
            if await self._find_inline(queue, job_id, False) is not None:
                return PENDING
            return await self._outcome(queue, job_id, looked_inline=True)
        raise JobNotFound(f"job {job_id} in queue {queue}: unknown, or ended with no result kept")

    async def _located(self, queue: str, job_id: str) -> str:
        """The shard of a sharded queue that holds the job (else `queue` itself)."""
        members = sharding.members(queue)
        if len(members) == 1:
            return queue
        async with redis_errors(f"find job {job_id}"), self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.exists(self.keys(member).result(job_id), self.keys(member).job(job_id))
            present = await pipe.execute()
        for member, exists in zip(members, present, strict=True):
            if exists:
                return member
        for member in members:  # waiting inline: only its shard's list holds it
            if await self._get_job(member, job_id, False) is not None:
                return member
        return queue

    # -- waiting -------------------------------------------------------------------------------

    async def _wait_notice(self, queue: str, job_id: str, seen: str, seconds: float) -> str:
        """Block until a notice newer than `seen` arrives or `seconds` pass; the last id seen."""
        client, slots = self._waiting_client()
        stream = self.keys(queue).ended(job_id)
        async with slots, redis_errors(f"wait for {job_id}"):
            if isinstance(client, RedisCluster):
                # Discovered once, shielded: many first waits at once, or one cancelled half
                # way, break redis-py's discovery (as topology.blpop_any does).
                with anyio.CancelScope(shield=True):
                    await client.initialize()
            reply: Any = await client.xread({stream: seen}, count=1, block=max(1, round(seconds * 1000)))
        if not reply:
            return seen
        # [[stream, [(id, fields)]]] (RESP2) or {stream: [[(id, fields)]]} (RESP3)
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        return entries[-1][0].decode() if entries else seen

    def _waiting_client(self) -> tuple[Redis, anyio.Semaphore]:
        """A client like the engine's, with a socket timeout that outlasts a slice, and how
        many may wait at once (more wait their turn here rather than fail in the pool)."""
        if self._waiting is None or self._waiting_slots is None:
            options = dict(self._options, socket_timeout=LAST_SLICE + self.settings.socket_timeout)
            slots = self.settings.max_connections
            kind = topology.of(self.settings).kind
            if kind == "single":
                pool = BlockingConnectionPool.from_url(
                    self.settings.url, max_connections=slots, timeout=None, **options
                )
                self._waiting = Redis(connection_pool=pool)
            elif kind == "cluster":
                self._waiting = topology.open_client(self.settings, options, blocking=True)
                slots = CLUSTER_BLOCKING_CONNECTIONS
            else:  # Sentinel: a pool as large as the engine's
                self._waiting = topology.open_client(self.settings, options)
            self._waiting_slots = anyio.Semaphore(slots)
        return self._waiting, self._waiting_slots

    async def _close_waiting(self) -> None:
        if self._waiting is not None:
            await topology.close(self._waiting)
            self._waiting = None


def _judge(job_id: str, state: bytes | None, error: bytes | None, aborted: bytes | None) -> Any:
    """What a job hash's state says: PENDING, or the exception for a job that ended."""
    record: dict[str, Any] = {}
    if error is not None:
        try:
            record = orjson.loads(error)
        except orjson.JSONDecodeError:
            record = {"message": error.decode("utf-8", "replace")}
    if state == b"aborted" or (state == b"failed" and record.get("reason") == "aborted"):
        reason = aborted.decode("utf-8", "replace") if aborted else record.get("message")
        raise JobAborted(job_id, reason)
    if state == b"failed":
        raise JobFailed(job_id, record)
    if state == b"done":
        raise JobNotFound(f"job {job_id} is done; its result was not kept (keep_result)")
    return PENDING


class JobRef:
    """A job by id, to wait for its result or read its progress: `SomeJob.ref(job_id)`.

    No I/O until a method is awaited; the engine is the current one (connect()), unless given.
    """

    def __init__(self, job_id: str, queue: str, engine: Any = None) -> None:
        self.id, self.queue = validate_job_id(job_id), validate_queue(queue)
        self._engine = engine

    def _results(self) -> Any:
        engine = self._engine or current_engine()
        if not hasattr(engine, "result"):
            raise AiojobsRedisError(f"{type(engine).__name__} keeps no results: use the Redis engine")
        return engine

    async def result(self, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (the API's promise)
        """Wait for the job's end: its kept result, or JobFailed, JobAborted, JobNotFound or
        TimeoutError (see RedisEngine.result)."""
        return await self._results().result(self.queue, self.id, timeout=timeout)

    async def progress(self) -> Any:
        """The progress the job last recorded (set_progress), or None."""
        return await self._results().progress(self.queue, self.id)

    def __repr__(self) -> str:
        return f"<JobRef {self.id} queue={self.queue}>"
