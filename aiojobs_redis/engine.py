"""All Redis I/O of the Redis engine. It never starts tasks, and sleeps only to idle under a
prefix whose data format is too new for it (versioning.py): the worker does the rest."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from . import durable as durability
from . import sharding, topology
from .batching import GroupCommit, PendingAck, PendingDispatch
from .codec import encode_payload
from .config import Settings, redact_url
from .errors import AiojobsRedisError, EngineError, EngineUnavailable, PayloadTooLarge
from .ids import new_job_id
from .keys import QueueKeys, format_key, is_valid_queue, queues_key, validate_job_id, validate_queue
from .records import Claim, ClaimedJob, JobInfo, Quarantined, QueueStats, Reaped, inline_prefix
from .scripts import ScriptCall, Scripts, run_pipelined
from .versioning import FormatGuard, stored_version
from .wire import Wire

if TYPE_CHECKING:
    from .job import Job

log = logging.getLogger(__name__)

Clock = Callable[[], int]  # milliseconds; tests inject one, production uses Redis TIME
_BATCH = 1000  # ids per call in bulk operations, so no single script blocks Redis for long


class redis_errors:
    """`async with redis_errors(action):` maps redis-py exceptions to ours, once, at the boundary.

    A class rather than an @asynccontextmanager: it is on the path of every call, and a
    generator-based context manager costs several times more.
    """

    __slots__ = ("action",)

    def __init__(self, action: str) -> None:
        self.action = action

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is not None and isinstance(exc, Exception) and not isinstance(exc, AiojobsRedisError):
            mapped = _map_error(exc, self.action)
            if mapped is not None:
                raise mapped from exc


def _map_error(exc: Exception, action: str) -> Exception | None:
    """Ours for a redis-py (or transport) exception; None leaves it as it is."""
    if isinstance(exc, rex.ConnectionError | rex.TimeoutError | OSError):
        return EngineUnavailable(f"{action}: Redis unavailable ({type(exc).__name__}: {exc})")
    if isinstance(exc, topology.UNAVAILABLE_ERRORS):  # a Cluster in failover or resharding
        return EngineUnavailable(f"{action}: Redis unavailable ({type(exc).__name__}: {exc})")
    if isinstance(exc, rex.RedisClusterException):
        if topology.is_unavailable(exc):
            return EngineUnavailable(f"{action}: Redis Cluster unavailable ({exc})")
        return EngineError(f"{action}: Redis Cluster refused the command: {exc}")
    if isinstance(exc, rex.ResponseError):
        if "payload too large" in str(exc):
            return PayloadTooLarge(f"{action}: {exc}")
        return EngineError(f"{action}: Redis refused the command: {_explain(exc)}")
    if isinstance(exc, RuntimeError) and _is_closed_transport(exc):
        return EngineUnavailable(f"{action}: Redis connection lost ({exc})")
    return None


def _is_closed_transport(exc: BaseException) -> bool:
    """uvloop reports a write to a reset connection as RuntimeError('... handler is closed')."""
    return isinstance(exc, RuntimeError) and "closed" in str(exc)


def _group(items: list[PendingDispatch]) -> dict[tuple[str, tuple[str, int, int]], list[PendingDispatch]]:
    """Dispatches by queue and kind, in order: each group is one script call."""
    groups: dict[tuple[str, tuple[str, int, int]], list[PendingDispatch]] = {}
    for pending in items:
        groups.setdefault((pending.queue, pending.kind), []).append(pending)
    return groups


def _map_reply_error(reply: Exception, action: str) -> Exception:
    """An error reply from one call of a pipeline, as one of ours."""
    if isinstance(reply, rex.ResponseError) and "payload too large" in str(reply):
        return PayloadTooLarge(f"{action}: {reply}")
    if topology.is_unavailable(reply):
        return EngineUnavailable(f"{action}: Redis unavailable ({type(reply).__name__}: {reply})")
    if isinstance(reply, rex.RedisError):
        return EngineError(f"{action}: Redis refused the command: {_explain(reply)}")
    return reply


def _explain(error: Exception) -> str:
    text = str(error)
    if "maxmemory" in text or text.startswith("OOM"):
        return f"Redis is out of memory (maxmemory reached; nothing of this call was stored): {text}"
    return text


def _parse_claim(keys: QueueKeys, reply: Any) -> Claim:
    flat, bad, next_due, more, _newer = reply
    jobs = [
        ClaimedJob(
            queue=keys.queue,
            id=flat[i].decode(),
            token=flat[i + 1].decode(),
            name=flat[i + 2],
            payload=flat[i + 3],
            attempts_used=int(flat[i + 4]),
            max_attempts=int(flat[i + 5]),
            runs=int(flat[i + 6]),
        )
        for i in range(0, len(flat), 7)
    ]
    quarantined = [_quarantined(keys, _text(bad[i]), _text(bad[i + 1])) for i in range(0, len(bad), 2)]
    return Claim(jobs, quarantined, int(next_due), bool(more))


def _quarantined(keys: QueueKeys, job_id: str, reason: str) -> Quarantined:
    if job_id == keys.ready:  # the queue key itself, renamed aside: see claim.lua
        return Quarantined("", reason, keys.bad_queue)
    return Quarantined(job_id, reason, keys.failed)


def _is_wrong_type(error: Exception) -> bool:
    return isinstance(error, rex.ResponseError) and str(error).startswith("WRONGTYPE")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class RedisEngine:
    """The Redis engine; open it with `aiojobs_redis.connect()` or `async with RedisEngine()`."""

    def __init__(self, settings: Settings | None = None, *, clock: Clock | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._clock = clock
        options: dict[str, Any] = {
            "socket_timeout": self.settings.socket_timeout,
            "socket_connect_timeout": self.settings.socket_timeout,
            # redis-py replays a command after a connection error; every script is safe to
            # run twice, so a few quick replays are welcome. Longer outages are the
            # worker's business (it reconnects with its own capped backoff).
            "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3),
            # RuntimeError: uvloop's word for a write to a connection that was reset.
            "retry_on_error": [rex.ConnectionError, rex.TimeoutError, RuntimeError],
            "health_check_interval": 30,
        }
        if self.settings.db is not None:
            options["db"] = self.settings.db
        # One server, a Cluster (a RedisCluster client) or Sentinel's primary: topology.py.
        self.redis: Redis = topology.open_client(self.settings, options)
        self._options = options
        self._blocking: Redis | None = None  # for BLPOP, with a socket timeout that outlasts it
        self._blocking_timeout = 0.0
        self.wire: Wire | None = None
        pool = getattr(self.redis, "connection_pool", None)
        if self.settings.multiplex and topology.of(self.settings).kind == "single" and pool is not None:
            self.wire = Wire(pool, timeout=self.settings.socket_timeout, retry=options["retry"])
        self.scripts = Scripts(self.redis, self.wire)
        self._keys: dict[str, QueueKeys] = {}
        self._registered: set[str] = set()
        self._format = FormatGuard(self.settings.prefix)
        self._format_recorded = False
        self._redis_offset_ms: float | None = None  # Redis clock minus local clock
        self._offset_read_ms = 0.0
        self._dispatches = GroupCommit[PendingDispatch](self._send_dispatches)
        self._durable_dispatches = GroupCommit[PendingDispatch](self._send_durable_dispatches)
        self._router = sharding.Router()
        self._acks = GroupCommit[PendingAck](self._send_acks)
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------

    def keys(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys.of(self.settings.prefix, queue)
        return keys

    def _now_arg(self) -> int | str:
        return self._clock() if self._clock is not None else ""

    async def __aenter__(self) -> RedisEngine:
        await self.ping()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def ping(self) -> None:
        async with redis_errors("ping"):
            await self.redis.ping()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.wire is not None:
            await self.wire.aclose()
        if self._blocking is not None:
            await topology.close(self._blocking)
        await topology.close(self.redis)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<RedisEngine {redact_url(self.settings.url)} prefix={self.settings.prefix!r} {state}>"

    async def register_queues(self, queues: Iterable[str]) -> None:
        new = [validate_queue(q) for q in queues if q not in self._registered]
        if new:
            async with redis_errors("register queues"):
                await self.redis.sadd(queues_key(self.settings.prefix), *new)
                if not self._format_recorded:
                    stored = await self.scripts.format(keys=[format_key(self.settings.prefix)])
                    self._format.met(int(stored), format_key(self.settings.prefix))
                    self._format_recorded = True
            self._registered.update(new)

    async def known_queues(self) -> list[str]:
        async with redis_errors("list queues"):
            members = await self.redis.smembers(queues_key(self.settings.prefix))
        names = sorted(_text(m) for m in members)
        valid = [name for name in names if is_valid_queue(name)]
        if len(valid) < len(names):
            log.warning(
                "ignored %d invalid queue name(s) in %s",
                len(names) - len(valid),
                queues_key(self.settings.prefix),
            )
        return valid

    # -- dispatch ---------------------------------------------------------------------------

    async def dispatch(self, job: Job, *, durable: bool | None = None) -> str:
        """Store `job`; return its id once Redis has acknowledged it.

        Concurrent calls are coalesced into one round trip (see batching.py). `durable`
        (default: the `durable` setting) also waits for replicas: see durable.py.
        """
        pending = self._prepare(job)
        durable = self.settings.durable if durable is None else durable
        await (self._durable_dispatches if durable else self._dispatches).submit(pending)
        job.id = pending.job_id
        return pending.job_id

    async def dispatch_many(
        self, jobs: Sequence[Job], *, chunk: int = 500, durable: bool | None = None
    ) -> list[str]:
        """Store many jobs in as few round trips as possible; return their ids in order.

        Each chunk of up to `chunk` jobs of one queue is stored atomically. If Redis fails
        part way, the jobs of earlier chunks are stored (their `id` is set) and the error
        is raised.
        """
        prepared = [self._prepare(job) for job in jobs]
        batches = [
            items[i : i + chunk] for items in _group(prepared).values() for i in range(0, len(items), chunk)
        ]
        durable = self.settings.durable if durable is None else durable
        for start in range(0, len(batches), 16):  # a few chunks per round trip
            await self._store(batches[start : start + 16], durable=durable)
            for batch in batches[start : start + 16]:
                for pending in batch:
                    if pending.error is not None:
                        raise pending.error
        for job, pending in zip(jobs, prepared, strict=True):
            job.id = pending.job_id
        return [p.job_id for p in prepared]

    def _prepare(self, job: Job) -> PendingDispatch:
        """Validate and encode before any I/O: bad input costs nothing."""
        # Validates the name (it may be set on the instance); a sharded queue's next shard.
        queue = self.keys(self._router.route(job)).queue
        payload = encode_payload(job.payload, self.settings.max_payload_bytes)
        return PendingDispatch(
            queue=queue,
            kind=(job.name, job.attempts, job.effective_delay_ms),
            job_id=new_job_id(),
            payload=payload,
        )

    async def _send_dispatches(self, batch: list[PendingDispatch]) -> None:
        await self._store(list(_group(batch).values()))

    async def _send_durable_dispatches(self, batch: list[PendingDispatch]) -> None:
        await self._store(list(_group(batch).values()), durable=True)

    def _dispatch_calls(self, batches: list[list[PendingDispatch]], deadline_ms: int) -> list[ScriptCall]:
        calls: list[ScriptCall] = []
        for batch in batches:
            keys = self.keys(batch[0].queue)
            name, attempts, delay_ms = batch[0].kind
            args: list[Any] = [
                keys.base,
                keys.queue,
                self.settings.max_payload_bytes,
                self._now_arg(),
                name,
                attempts,
                delay_ms,
                deadline_ms,
                self.settings.replay_guard_ms,
            ]
            for pending in batch:
                args += (pending.job_id, pending.payload)
            calls.append((self.scripts.dispatch, [keys.ready, keys.delayed, keys.wake], args))
        return calls

    async def _dispatch_deadline_ms(self) -> int:
        """When, in Redis time, a dispatch sent now is given up by its caller.

        dispatch.lua refuses a call that arrives later, so a copy delivered late cannot
        store a job that may have run and ended meanwhile. Redis's clock is read once a
        minute (one TIME round trip) and followed in between on the local clock.
        """
        timeout_ms = round(self.settings.dispatch_timeout * 1000) + 1000  # + a margin for the offset
        if self._clock is not None:
            return self._clock() + timeout_ms
        # Followed on the monotonic clock: a wall clock stepped back by NTP must not matter.
        local_ms = time.monotonic() * 1000
        if self._redis_offset_ms is None or local_ms - self._offset_read_ms > 60_000:
            seconds, micros = await self.redis.time()
            after_ms = time.monotonic() * 1000
            self._redis_offset_ms = seconds * 1000 + micros / 1000 - (local_ms + after_ms) / 2
            self._offset_read_ms = after_ms
        return round(local_ms + self._redis_offset_ms) + timeout_ms

    async def _store(self, batches: list[list[PendingDispatch]], *, durable: bool = False) -> None:
        """One dispatch script call per batch (each of one queue), all in one round trip.

        Records an error on the items of a batch that failed; never raises.
        """
        replies: list[Any]
        with anyio.move_on_after(self.settings.dispatch_timeout) as deadline:
            try:
                await self.register_queues(batch[0].queue for batch in batches)
                async with redis_errors("dispatch"):
                    calls = self._dispatch_calls(batches, await self._dispatch_deadline_ms())
                    if durable:
                        replies = await self._store_durably(calls, batches)
                    elif len(calls) == 1:
                        script, keys_, args_ = calls[0]
                        replies = [await script(keys=keys_, args=args_)]
                    else:
                        replies = await run_pipelined(self.redis, calls, raise_errors=False)
            except EngineError as exc:
                replies = [exc] * len(batches)
        if deadline.cancelled_caught:
            timeout = EngineUnavailable(
                f"dispatch: Redis did not answer within {self.settings.dispatch_timeout:g} s "
                "(the job may or may not have been stored)"
            )
            replies = [timeout] * len(batches)
        for batch, reply in zip(batches, replies, strict=True):
            if reply == -1:  # see dispatch.lua: it reached Redis after its caller gave up
                reply = EngineUnavailable("dispatch: the call reached Redis after its deadline")
            if isinstance(reply, Exception):
                error = _map_reply_error(reply, "dispatch")
                for pending in batch:
                    pending.error = error

    async def _store_durably(
        self, calls: list[ScriptCall], batches: list[list[PendingDispatch]]
    ) -> list[Any]:
        """The dispatch calls, each node's followed by WAIT; NotReplicated where too few acked."""
        replicas = self.settings.durable_replicas
        wait_ms = round(1000 * min(self.settings.durable_timeout, 0.8 * self.settings.socket_timeout))
        replies, acked = await durability.run(self.redis, calls, replicas, wait_ms)
        return [
            durability.check(reply, count, replicas, wait_ms, [p.job_id for p in batch])
            for reply, count, batch in zip(replies, acked, batches, strict=True)
        ]

    # -- the worker's transitions -----------------------------------------------------------

    async def claim(self, queue: str, limit: int, *, worker_id: str, request_id: str, lease_ms: int) -> Claim:
        return (await self.claim_many([(queue, limit, request_id)], worker_id=worker_id, lease_ms=lease_ms))[
            0
        ]

    async def claim_many(
        self, requests: Sequence[tuple[str, int, str]], *, worker_id: str, lease_ms: int
    ) -> list[Claim]:
        """Claim from several queues in one round trip: (queue, limit, request id) each.

        Under a prefix whose data format is too new (versioning.py), nothing is claimed.
        """
        if self._format.refused:
            return [Claim([], [], -1, False) for _ in requests]
        calls: list[ScriptCall] = []
        for queue, limit, request_id in requests:
            keys = self.keys(queue)
            calls.append(
                (
                    self.scripts.claim,
                    [
                        keys.ready,
                        keys.running,
                        keys.delayed,
                        keys.wake,
                        keys.failed,
                        keys.claim_receipt(worker_id),
                    ],
                    [
                        keys.base,
                        limit,
                        lease_ms,
                        worker_id,
                        request_id,
                        self._now_arg(),
                        self.settings.failed_ttl_ms,
                        keys.queue,
                    ],
                )
            )
        async with redis_errors("claim"):
            if len(calls) == 1:
                script, keys_, args = calls[0]
                replies = [await script(keys=keys_, args=args)]
            else:
                replies = await run_pipelined(self.redis, calls)
        for (queue, _, _), reply in zip(requests, replies, strict=True):
            if reply[4]:  # a record too new for this release: see claim.lua
                self._format.met(int(reply[4]), f"queue {queue}")
        return [
            _parse_claim(self.keys(queue), reply)
            for (queue, _, _), reply in zip(requests, replies, strict=True)
        ]

    async def ready_counts(self, queues: Sequence[str]) -> list[int]:
        """How many jobs wait in each queue's list (a hint: others may claim them first).

        A queue key of another type counts as 1, so that a claim comes and moves it aside.
        """
        async with redis_errors("count ready jobs"), self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(self.keys(queue).ready)
            counts = await pipe.execute(raise_on_error=False)
            for count in counts:
                if isinstance(count, Exception) and not _is_wrong_type(count):
                    raise count
            return [1 if isinstance(n, Exception) else int(n) for n in counts]

    async def renew(self, queue: str, held: Sequence[tuple[str, str]], lease_ms: int) -> list[str]:
        """Extend the leases in `held` ((id, token) pairs); return the ids no longer held."""
        keys = self.keys(queue)
        args: list[Any] = [keys.base, lease_ms, self._now_arg()]
        for job_id, token in held:
            args += (job_id, token)
        async with redis_errors(f"renew leases in {queue}"):
            lost = await self.scripts.renew(keys=[keys.running], args=args)
        return [x.decode() for x in lost]

    async def ack(self, job: ClaimedJob) -> bool:
        """End a job that succeeded; False when this worker no longer holds its lease.

        Concurrent acks share a round trip (see batching.py).
        """
        pending = PendingAck(queue=job.queue, job_id=job.id, token=job.token)
        await self._acks.submit(pending)
        return pending.acked

    async def _send_acks(self, batch: list[PendingAck]) -> None:
        by_queue: dict[str, list[PendingAck]] = {}
        for pending in batch:
            by_queue.setdefault(pending.queue, []).append(pending)
        calls: list[ScriptCall] = []
        for queue, items in by_queue.items():
            keys = self.keys(queue)
            args: list[Any] = [
                keys.base,
                self.settings.keep_done_ms,
                self.settings.replay_guard_ms,
                self._now_arg(),
            ]
            for pending in items:
                args += (pending.job_id, pending.token)
            calls.append((self.scripts.ack, [keys.running], args))
        try:
            async with redis_errors("ack"):
                replies = await run_pipelined(self.redis, calls, raise_errors=False)
        except EngineError as exc:
            replies = [exc] * len(calls)
        for items, reply in zip(by_queue.values(), replies, strict=True):
            for index, pending in enumerate(items):
                if isinstance(reply, Exception):
                    pending.error = _map_reply_error(reply, "dispatch")
                else:
                    pending.acked = bool(reply[index])

    async def retry(self, job: ClaimedJob, delay_ms: int, error: dict[str, Any]) -> bool:
        keys = self.keys(job.queue)
        async with redis_errors(f"retry {job.id}"):
            done = await self.scripts.retry(
                keys=[keys.running, keys.ready, keys.delayed, keys.wake, keys.job(job.id)],
                args=[job.id, job.token, delay_ms, orjson.dumps(error), self._now_arg()],
            )
        return bool(done)

    async def fail(self, job: ClaimedJob, error: dict[str, Any], *, count_attempt: bool = True) -> bool:
        keys = self.keys(job.queue)
        async with redis_errors(f"fail {job.id}"):
            done = await self.scripts.fail(
                keys=[keys.running, keys.failed, keys.job(job.id)],
                args=[
                    job.id,
                    job.token,
                    orjson.dumps(error),
                    self.settings.failed_ttl_ms,
                    1 if count_attempt else 0,
                    self._now_arg(),
                ],
            )
        return bool(done)

    async def release(self, job: ClaimedJob) -> bool:
        keys = self.keys(job.queue)
        async with redis_errors(f"release {job.id}"):
            done = await self.scripts.release(
                keys=[keys.running, keys.ready, keys.wake, keys.job(job.id)],
                args=[job.id, job.token],
            )
        return bool(done)

    async def promote(self, queues: Sequence[str], limit: int = _BATCH) -> tuple[int, int]:
        """Move due delayed jobs to ready. Returns (moved, ms until the next is due or -1)."""
        if self._format.refused:
            return 0, -1
        calls: list[ScriptCall] = []
        for queue in queues:
            keys = self.keys(queue)
            calls.append(
                (
                    self.scripts.promote,
                    [keys.delayed, keys.ready, keys.wake],
                    [keys.base, limit, self._now_arg()],
                )
            )
        async with redis_errors("promote delayed jobs"):
            replies = await run_pipelined(self.redis, calls)
        for queue, reply in zip(queues, replies, strict=True):
            self._format.met(int(reply[2]), f"delayed jobs of {queue}")
        moved = sum(int(r[0]) for r in replies)
        dues = [int(r[1]) for r in replies if int(r[1]) >= 0]
        return moved, min(dues) if dues else -1

    async def reap(self, queue: str, *, max_stalls: int, limit: int = _BATCH) -> Reaped:
        if self._format.refused:
            return Reaped([], [], 0)
        keys = self.keys(queue)
        async with redis_errors(f"reap {queue}"):
            requeued, failed, trimmed, newer = await self.scripts.reap(
                keys=[keys.running, keys.ready, keys.failed, keys.wake],
                args=[
                    keys.base,
                    limit,
                    max_stalls,
                    self.settings.failed_ttl_ms,
                    self.settings.failed_max,
                    self._now_arg(),
                ],
            )
        self._format.met(int(newer), f"running jobs of {queue}")
        return Reaped([x.decode() for x in requeued], [x.decode() for x in failed], int(trimmed))

    async def wait_for_work(self, queues: Sequence[str], block_seconds: float) -> bool:
        """Block until a wake token arrives on any of `queues` or `block_seconds` pass.

        Uses a connection of its own whose socket timeout outlasts the block (on a Cluster,
        one per slot: see topology.blpop_any). Under a prefix whose data format is too new,
        it only waits: the wake tokens are for the workers that can read it.
        """
        if self._format.refused:
            await anyio.sleep(block_seconds)
            return False
        socket_timeout = block_seconds + self.settings.socket_timeout
        if self._blocking is None or self._blocking_timeout < socket_timeout:
            if self._blocking is not None:
                await topology.close(self._blocking)
            options = dict(self._options, socket_timeout=socket_timeout)
            self._blocking = topology.open_client(self.settings, options, blocking=True)
            self._blocking_timeout = socket_timeout
        wake_keys = [self.keys(q).wake for q in queues]
        async with redis_errors("wait for work"):
            return await topology.blpop_any(self._blocking, wake_keys, block_seconds)

    # -- inspection and the failed set ------------------------------------------------------

    async def _queues(self, queue: str | None) -> list[str]:
        """The queue named (with its shards, if it is sharded), else every known queue."""
        if queue is None:
            return await self.known_queues()
        if sharding.shard_count(validate_queue(queue)) > 1:
            return sharding.members(queue)
        if sharding.SEPARATOR not in queue:  # shards this process does not know about
            prefix = queue + sharding.SEPARATOR
            return [queue, *(q for q in await self.known_queues() if q.startswith(prefix))]
        return [queue]

    async def format_version(self) -> int | None:
        """The data format version recorded under the prefix (versioning.stored_version)."""
        async with redis_errors("read the format version"):
            return await stored_version(self.redis, self.settings.prefix)

    async def stats(self, queue: str | None = None) -> list[QueueStats]:
        queues = await self._queues(queue)
        async with redis_errors("stats"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                keys = self.keys(q)
                pipe.llen(keys.ready)
                for key in (keys.delayed, keys.running, keys.failed):
                    pipe.zcard(key)
            counts = await pipe.execute()
        return [QueueStats(q, *counts[i * 4 : i * 4 + 4]) for i, q in enumerate(queues)]

    async def get_job(self, queue: str, job_id: str, *, with_payload: bool = False) -> JobInfo | None:
        """The job's record; for a sharded queue, looked up in each of its shards."""
        members = sharding.members(validate_queue(queue))
        for member in members[1:]:
            found = await self._get_job(member, job_id, with_payload)
            if found is not None:
                return found
        return await self._get_job(queue, job_id, with_payload)

    async def _get_job(self, queue: str, job_id: str, with_payload: bool) -> JobInfo | None:
        """The job's hash; else, for a job that waits inline in the queue list, its record.

        A job dispatched to run now has no key of its own until a worker claims it: the
        list is read in slices to find it (O(jobs waiting)). A claim may take it meanwhile,
        so the hash is read again when the list did not have it.
        """
        validate_job_id(job_id)
        found = await self._read_hash(queue, job_id, with_payload)
        if found is None:
            found = await self._find_inline(queue, job_id, with_payload)
        if found is None:
            found = await self._read_hash(queue, job_id, with_payload)
        return found

    async def _read_hash(self, queue: str, job_id: str, with_payload: bool) -> JobInfo | None:
        key = self.keys(queue).job(job_id)
        async with redis_errors(f"read job {job_id}"):
            if await self.redis.type(key) != b"hash":
                return None
            raw: dict[bytes, bytes] = await self.redis.hgetall(key)  # type: ignore[assignment]
        return JobInfo.from_hash(queue, job_id, raw, with_payload) if raw else None

    async def _find_inline(self, queue: str, job_id: str, with_payload: bool) -> JobInfo | None:
        key = self.keys(queue).ready
        head = inline_prefix(job_id)
        seen = 0
        async with redis_errors(f"find job {job_id}"):
            if await self.redis.type(key) != b"list":
                return None
            # From the tail, by negative index: claims pop at the head and pushes at the tail
            # only shift entries towards the part not read yet (a few are read twice), so no
            # entry that stays in the list is missed.
            while True:
                entries: list[bytes] = await self.redis.lrange(key, -seen - _BATCH, -seen - 1)  # type: ignore[assignment]
                for entry in reversed(entries):
                    if entry.startswith(head):
                        return JobInfo.from_inline(queue, entry, with_payload)
                if len(entries) < _BATCH:
                    return None
                seen += _BATCH

    async def failed_list(
        self, queue: str | None = None, *, limit: int = 100, with_payload: bool = False
    ) -> list[JobInfo]:
        """The most recently failed jobs, newest first."""
        found: list[JobInfo] = []
        for q in await self._queues(queue):
            keys = self.keys(q)
            async with redis_errors("list failed jobs"):
                # Raw ids build the keys: a malformed id need not be valid UTF-8.
                raw_ids: list[bytes] = await self.redis.zrevrange(keys.failed, 0, limit - 1)  # type: ignore[assignment]
                async with self.redis.pipeline(transaction=False) as pipe:
                    for raw_id in raw_ids:
                        pipe.hgetall(keys.job_prefix.encode() + raw_id)
                    hashes = await pipe.execute(raise_on_error=False)
            for raw_id, raw in zip(raw_ids, hashes, strict=True):
                if isinstance(raw, Exception):  # the key is not a hash: show it as malformed
                    raw = {b"e": orjson.dumps({"reason": "wrong_type", "message": str(raw)})}
                found.append(JobInfo.from_hash(q, _text(raw_id), raw, with_payload))
        found.sort(key=lambda j: j.finished_ms or 0, reverse=True)
        return found[:limit]

    async def _locate_failed(self, ids: Iterable[str], queue: str | None) -> dict[str, list[str]]:
        """Group failed job ids by the queue whose failed set holds them."""
        wanted = [validate_job_id(i) for i in ids]
        queues = await self._queues(queue)
        async with redis_errors("find failed jobs"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                for job_id in wanted:
                    pipe.zscore(self.keys(q).failed, job_id)
            scores = iter(await pipe.execute())
        located: dict[str, list[str]] = {}
        for q in queues:
            for job_id in wanted:
                if next(scores) is not None:
                    located.setdefault(q, []).append(job_id)
        return located

    async def failed_retry(self, ids: Iterable[str] | None = None, *, queue: str | None = None) -> int:
        """Requeue failed jobs with fresh attempts: the given ids, or every one (in `queue`)."""
        total = 0
        if ids is not None:
            for q, found in (await self._locate_failed(ids, queue)).items():
                for start in range(0, len(found), _BATCH):
                    total += await self._requeue_failed(q, found[start : start + _BATCH])
            return total
        for q in await self._queues(queue):
            while (done := await self._requeue_failed(q, [])) > 0:
                total += done
        return total

    async def _requeue_failed(self, queue: str, ids: list[str]) -> int:
        keys = self.keys(queue)
        async with redis_errors(f"requeue failed jobs of {queue}"):
            requeued, _skipped = await self.scripts.requeue_failed(
                keys=[keys.failed, keys.ready, keys.wake],
                args=[keys.base, self._now_arg(), _BATCH, *ids],
            )
        return int(requeued)

    async def failed_forget(self, ids: Iterable[str], *, queue: str | None = None) -> int:
        total = 0
        for q, found in (await self._locate_failed(ids, queue)).items():
            for start in range(0, len(found), _BATCH):
                total += await self._forget_failed(q, found[start : start + _BATCH])
        return total

    async def failed_flush(self, queue: str | None = None) -> int:
        total = 0
        for q in await self._queues(queue):
            while (done := await self._forget_failed(q, [])) > 0:
                total += done
        return total

    async def _forget_failed(self, queue: str, ids: list[str]) -> int:
        keys = self.keys(queue)
        async with redis_errors(f"forget failed jobs of {queue}"):
            return int(await self.scripts.forget_failed(keys=[keys.failed], args=[keys.base, _BATCH, *ids]))
