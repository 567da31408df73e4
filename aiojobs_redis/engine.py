"""The Redis engine's hot path: dispatch, claim, renew, ack/retry/fail/release, promote, reap
and waiting for work. It never starts tasks, and sleeps only to idle under a prefix whose
data format is too new for it (versioning.py): the worker does the rest.

Inspection and the failed set are in admin.py, telemetry's reads and writes in
telemetry_store.py, Redis's clock in redis_clock.py, the building of dispatch calls in
dispatch_args.py, results and progress in results.py (all mixed into RedisEngine); the
mapping of redis-py's errors to ours in boundary.py. Together they are all the Redis I/O of
the Redis engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from redis.asyncio import Redis

from . import durable as durability
from . import sharding, topology
from .abort import Abort
from .admin import BATCH, Admin
from .batching import GroupCommit, PendingAck, PendingDispatch
from .boundary import is_wrong_type, map_reply, redis_errors
from .config import Settings, redact_url
from .dispatch_args import DispatchArgs, group, settle_dispatch_ex
from .errors import EngineError, EngineUnavailable
from .flow import FlowControl
from .keys import QueueKeys, format_key, queues_key, validate_queue
from .records import Claim, ClaimedJob, Reaped, parse_claim
from .redis_clock import RedisClock
from .results import Results
from .schedule_store import ScheduleStore
from .scripts import ScriptCall, Scripts, run_pipelined
from .telemetry_store import TelemetryStore
from .versioning import FormatGuard
from .wire import Wire
from .workflow_store import WorkflowStore

if TYPE_CHECKING:
    from .job import Job
    from .lifecycle import Observer

log = logging.getLogger(__name__)

LEVEL_HINT = 1000  # what ready_counts counts for a queue with jobs at priority levels other than 0

Clock = Callable[[], int]  # milliseconds; tests inject one, production uses Redis TIME


class RedisEngine(
    DispatchArgs,
    RedisClock,
    Admin,
    TelemetryStore,
    Abort,
    ScheduleStore,
    Results,
    FlowControl,
    WorkflowStore,
):
    """The Redis engine; open it with `aiojobs_redis.connect()` or `async with RedisEngine()`."""

    def __init__(self, settings: Settings | None = None, *, clock: Clock | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._clock = clock
        options = topology.client_options(self.settings)
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
        # When, after it is sent, a dispatch is given up by its caller; + a margin for the offset.
        self._dispatch_timeout_ms = round(self.settings.dispatch_timeout * 1000) + 1000
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

    def _monotonic_ms(self) -> float:
        """When to read the format key again: the test clock if given, else the monotonic one."""
        return self._clock() if self._clock is not None else time.monotonic() * 1000

    async def __aenter__(self) -> RedisEngine:
        """Open the engine: Redis answers, or this raises within `dispatch_timeout`."""
        try:
            await self.ping()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def ping(self) -> None:
        """Connect (TLS, AUTH, database) if need be and PING, within `dispatch_timeout`.

        RedisAuthError or RedisTLSError (ConfigurationError) when the URL's credentials or
        CA are wrong; EngineUnavailable when Redis cannot be reached or does not answer.
        """
        async with redis_errors("connect", timeout=self.settings.dispatch_timeout):
            await self.redis.ping()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.wire is not None:
            await self.wire.aclose()
        if self._blocking is not None:
            await topology.close(self._blocking)
        await self._close_waiting()
        await topology.close(self.redis)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<RedisEngine {redact_url(self.settings.url)} prefix={self.settings.prefix!r} {state}>"

    async def register_queues(self, queues: Iterable[str]) -> None:
        new = [validate_queue(q) for q in queues if q not in self._registered]
        if new:
            async with redis_errors("register queues", timeout=self.settings.dispatch_timeout):
                await self.redis.sadd(queues_key(self.settings.prefix), *new)
                if self._format.read_ms is None:
                    stored = await self.scripts.format(keys=[format_key(self.settings.prefix)])
                    self._format.met_key(int(stored))
                    self._format.read_ms = self._monotonic_ms()
            self._registered.update(new)

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
        if pending.unique is not None:
            job.duplicate = pending.outcome != "stored"
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
            items[i : i + chunk] for items in group(prepared).values() for i in range(0, len(items), chunk)
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
            if pending.unique is not None:
                job.duplicate = pending.outcome != "stored"
        return [p.job_id for p in prepared]

    async def _send_dispatches(self, batch: list[PendingDispatch]) -> None:
        await self._store(list(group(batch).values()))

    async def _send_durable_dispatches(self, batch: list[PendingDispatch]) -> None:
        await self._store(list(group(batch).values()), durable=True)

    async def _store(self, batches: list[list[PendingDispatch]], *, durable: bool = False) -> None:
        """One dispatch script call per batch (each of one queue), all in one round trip.

        Records an error on the items of a batch that failed; never raises.
        """
        replies: list[Any]
        with anyio.move_on_after(self.settings.dispatch_timeout) as deadline:
            try:
                await self.register_queues(batch[0].queue for batch in batches)
                async with redis_errors("dispatch"):
                    # The deadline, in Redis's time: dispatch.lua refuses a call that arrives
                    # later, so a copy delivered late cannot store a job that may have run and
                    # ended meanwhile.
                    now_ms = (
                        self._clock()
                        if self._clock is not None
                        else await self.redis_time_ms(action="dispatch")
                    )
                    calls = self._dispatch_calls(batches, now_ms + self._dispatch_timeout_ms)
                    if durable:
                        ids = [[p.job_id for p in batch] for batch in batches]
                        replies = await durability.dispatch(self.redis, calls, ids, self.settings)
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
                error = map_reply(reply, "dispatch")
                for pending in batch:
                    pending.error = error
            elif batch[0].unique is not None:
                settle_dispatch_ex(batch, reply)

    # -- the worker's transitions -----------------------------------------------------------

    async def claim_many(
        self, requests: Sequence[tuple[str, int, str]], *, worker_id: str, lease_ms: int
    ) -> list[Claim]:
        """Claim from several queues in one round trip: (queue, limit, request id) each.

        Under a prefix whose data format is too new (versioning.py), nothing is claimed; in a
        queue where a too-new record was met, neither.
        """
        if self._format.refused or self._format.queues:
            return await self._claim_open_queues(requests, worker_id=worker_id, lease_ms=lease_ms)
        return await self._claim(requests, worker_id=worker_id, lease_ms=lease_ms)

    async def _claim(
        self, requests: Sequence[tuple[str, int, str]], *, worker_id: str, lease_ms: int
    ) -> list[Claim]:
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
            replies = await run_pipelined(self.redis, calls)
        for (queue, _, _), reply in zip(requests, replies, strict=True):
            if reply[4]:  # a record too new for this release: see claim.lua
                self._format.met(int(reply[4]), queue, f"queue {queue}")
        return [
            parse_claim(self.keys(queue), reply)
            for (queue, _, _), reply in zip(requests, replies, strict=True)
        ]

    async def _claim_open_queues(
        self, requests: Sequence[tuple[str, int, str]], *, worker_id: str, lease_ms: int
    ) -> list[Claim]:
        """claim_many, with nothing claimed in the queues a too-new record refused (or any)."""
        shut = {queue for queue, _, _ in requests if self._format.refused or queue in self._format.queues}
        open_requests = [request for request in requests if request[0] not in shut]
        claimed = (
            await self._claim(open_requests, worker_id=worker_id, lease_ms=lease_ms) if open_requests else []
        )
        claims = iter(claimed)
        return [Claim([], [], -1, False) if queue in shut else next(claims) for queue, _, _ in requests]

    async def ready_counts(self, queues: Sequence[str]) -> list[int]:
        """How many jobs wait in each queue's list (a hint: others may claim them first).

        A queue key of another type counts as 1, so that a claim comes and moves it aside. A
        queue this process may not claim from (a too-new data format) counts as 0.
        """
        if self._format.refused:
            return [0] * len(queues)
        async with redis_errors("count ready jobs"), self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(self.keys(queue).ready)
                pipe.zcard(self.keys(queue).levels)
                pipe.exists(self.keys(queue).ring, self.keys(queue).group_wait)
            replies = await pipe.execute(raise_on_error=False)
            for reply in replies:
                if isinstance(reply, Exception) and not is_wrong_type(reply):
                    raise reply
            # Jobs at other priority levels, or in rate groups (held ones too: only a claim
            # brings them back when due), count as many: the claim takes what is there.
            counts = [
                (1 if isinstance(n, Exception) else int(n)) + (LEVEL_HINT if levels or groups else 0)
                for n, levels, groups in zip(replies[::3], replies[1::3], replies[2::3], strict=True)
            ]
            return [0 if queue in self._format.queues else n for queue, n in zip(queues, counts, strict=True)]

    async def renew(self, queue: str, held: Sequence[tuple[str, str]], lease_ms: int) -> list[str]:
        """Extend the leases in `held` ((id, token) pairs); return the ids no longer held."""
        keys = self.keys(queue)
        args: list[Any] = [keys.base, lease_ms, self._now_arg()]
        for job_id, token in held:
            args += (job_id, token)
        async with redis_errors(f"renew leases in {queue}"):
            lost = await self.scripts.renew(keys=[keys.running], args=args)
        return [x.decode() for x in lost]

    async def ack(self, job: ClaimedJob, *, result: bytes | None = None, keep_ms: int = 0) -> bool:
        """End a job that succeeded; False when this worker no longer holds its lease.

        `result` (JSON) is kept for `keep_ms` when both are given (keep_result; results.py).
        Concurrent acks share a round trip (see batching.py).
        """
        pending = PendingAck(queue=job.queue, job_id=job.id, token=job.token)
        if result is not None and keep_ms > 0:
            pending.result, pending.keep_ms = result, keep_ms
        await self._acks.submit(pending)
        return pending.acked

    async def _send_acks(self, batch: list[PendingAck]) -> None:
        by_queue: dict[str, list[PendingAck]] = {}
        for pending in batch:
            by_queue.setdefault(pending.queue, []).append(pending)
        if any(pending.result is not None for pending in batch):
            # Jobs that keep a result go after the others, behind an empty string (ack.lua).
            by_queue = {q: sorted(items, key=lambda p: p.result is not None) for q, items in by_queue.items()}
        calls: list[ScriptCall] = []
        for queue, items in by_queue.items():
            keys = self.keys(queue)
            args: list[Any] = [
                keys.base,
                self.settings.keep_done_ms,
                self.settings.replay_guard_ms,
                self._now_arg(),
            ]
            kept = False
            for pending in items:
                if pending.result is None:
                    args += (pending.job_id, pending.token)
                else:
                    if not kept:
                        args.append("")
                        kept = True
                    args += (pending.job_id, pending.token, pending.keep_ms, pending.result)
            calls.append((self.scripts.ack, [keys.running], args))
        try:
            async with redis_errors("ack"):
                replies = await run_pipelined(self.redis, calls, raise_errors=False)
        except EngineError as exc:
            replies = [exc] * len(calls)
        for items, reply in zip(by_queue.values(), replies, strict=True):
            for index, pending in enumerate(items):
                if isinstance(reply, Exception):
                    pending.error = map_reply(reply, "ack")
                else:
                    pending.acked = bool(reply[index])

    async def retry(self, job: ClaimedJob, delay_ms: int, error: dict[str, Any]) -> bool:
        keys = self.keys(job.queue)
        async with redis_errors(f"retry {job.id}"):
            done = await self.scripts.retry(
                keys=[keys.running, keys.ready, keys.delayed, keys.wake, keys.job(job.id)],
                args=[job.id, job.token, delay_ms, orjson.dumps(error), self._now_arg(), keys.base],
            )
        return bool(done)

    async def fail(
        self, job: ClaimedJob, error: dict[str, Any], *, count_attempt: bool = True, notify: bool = False
    ) -> bool:
        """Fail the job for good. `notify`: its class keeps results, so tell its waiters."""
        keys = self.keys(job.queue)
        args: list[Any] = [
            job.id,
            job.token,
            orjson.dumps(error),
            self.settings.failed_ttl_ms,
            1 if count_attempt else 0,
            self._now_arg(),
            keys.base,
            "1" if notify else "",
        ]
        async with redis_errors(f"fail {job.id}"):
            done = await self.scripts.fail(keys=[keys.running, keys.failed, keys.job(job.id)], args=args)
        return bool(done)

    async def release(self, job: ClaimedJob) -> bool:
        keys = self.keys(job.queue)
        async with redis_errors(f"release {job.id}"):
            done = await self.scripts.release(
                keys=[keys.running, keys.ready, keys.wake, keys.job(job.id)],
                args=[job.id, job.token, keys.base],
            )
        return bool(done)

    async def defer(
        self, job: ClaimedJob, delay_ms: int, error: dict[str, Any], *, give_up_after_ms: int
    ) -> int:
        keys = self.keys(job.queue)
        async with redis_errors(f"defer {job.id}"):
            answer = await self.scripts.defer(
                keys=[keys.running, keys.delayed, keys.wake, keys.job(job.id)],
                args=[
                    job.id,
                    job.token,
                    delay_ms,
                    orjson.dumps(error),
                    give_up_after_ms,
                    self._now_arg(),
                    keys.base,
                ],
            )
        return int(answer)

    async def throttle(self, job: ClaimedJob, retry_after_ms: int, max_throttles: int) -> int:
        """handle() raised RateLimited: put the job back, using no attempt, and hold its group
        (or queue) for `retry_after_ms` (throttle.lua). 1 when done, 0 when not held, -1
        (nothing changes) when it was throttled `max_throttles` times already."""
        keys = self.keys(job.queue)
        async with redis_errors(f"throttle {job.id}"):
            answer = await self.scripts.throttle(
                keys=[keys.running, keys.wake, keys.job(job.id)],
                args=[job.id, job.token, keys.base, retry_after_ms, max_throttles, self._now_arg()],
            )
        return int(answer)

    async def promote(self, queues: Sequence[str], limit: int = BATCH) -> tuple[int, int]:
        """Move due delayed jobs to ready. Returns (moved, ms until the next is due or -1)."""
        if self._format.refused:
            return 0, -1
        if self._format.queues:
            queues = [queue for queue in queues if queue not in self._format.queues]
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
        # The format key, read again now and then in the same round trip: a newer worker may
        # have raised it since (versioning.py).
        recheck = self._format.recheck_due(self._monotonic_ms())
        if recheck:
            calls.append((self.scripts.format, [format_key(self.settings.prefix)], []))
        if not calls:
            return 0, -1
        async with redis_errors("promote delayed jobs"):
            replies = await run_pipelined(self.redis, calls)
        if recheck:
            self._format.met_key(int(replies.pop()))
        for queue, reply in zip(queues, replies, strict=True):
            self._format.met(int(reply[2]), queue, f"delayed jobs of {queue}")
        moved = sum(int(r[0]) for r in replies)
        dues = [int(r[1]) for r in replies if int(r[1]) >= 0]
        return moved, min(dues) if dues else -1

    async def reap(self, queue: str, *, max_stalls: int, limit: int = BATCH) -> Reaped:
        if self._format.refused or queue in self._format.queues:
            return Reaped([], [], 0)
        keys = self.keys(queue)
        async with redis_errors(f"reap {queue}"):
            requeued, failed, trimmed, newer = await self.scripts.reap(
                keys=[keys.running, keys.ready, keys.failed, keys.wake, keys.dropped],
                args=[
                    keys.base,
                    limit,
                    max_stalls,
                    self.settings.failed_ttl_ms,
                    self.settings.failed_max,
                    self._now_arg(),
                ],
            )
        self._format.met(int(newer), queue, f"running jobs of {queue}")
        return Reaped([x.decode() for x in requeued], [x.decode() for x in failed], int(trimmed))

    async def wait_for_work(self, queues: Sequence[str], block_seconds: float) -> bool:
        """Block until a wake token arrives on any of `queues` or `block_seconds` pass.

        Uses a connection of its own whose socket timeout outlasts the block (on a Cluster,
        one per slot: see topology.blpop_any). Under a prefix whose data format is too new,
        it only waits: the wake tokens are for the workers that can read it.
        """
        if self._format.queues:
            queues = [queue for queue in queues if queue not in self._format.queues]
        if self._format.refused or not queues:
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

    async def delayed_summary(self, queues: Sequence[str]) -> list[tuple[int, int]]:
        """For each queue: (delayed jobs, ms until the earliest is due, or -1 when none).

        A read for what a burst worker leaves behind: ZCARD and the first member's score.
        """
        async with redis_errors("read the delayed jobs"):
            now = self._clock() if self._clock is not None else await self.redis_time_ms()
            async with self.redis.pipeline(transaction=False) as pipe:
                for queue in queues:
                    delayed = self.keys(queue).delayed
                    pipe.zcard(delayed)
                    pipe.zrange(delayed, 0, 0, withscores=True)
                replies = await pipe.execute()
        summary = []
        for count, first in zip(replies[::2], replies[1::2], strict=True):
            due = max(0, int(first[0][1]) - now) if first else -1
            summary.append((int(count), due))
        return summary

    def default_observers(self) -> list[Observer]:
        """The observers a Worker on this engine has unless told otherwise (`telemetry=True`):
        the event stream and heartbeats the dashboard reads."""
        from .events import RedisTelemetry  # events.py imports this module

        return [RedisTelemetry()]
