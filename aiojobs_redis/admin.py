"""Inspection and administration: what `stats`, `failed`, the dashboard and the doctor read.

`Admin` is mixed into RedisEngine, so these are engine methods (`engine.stats()`,
`engine.get_job()`, `engine.failed_retry()`, ...); the hot path stays in engine.py. Nothing
here is on a job's path. The paged views (`failed_page`, `find_job`, `ready_jobs`,
`delayed_jobs`, `oldest_ready_ms`, `lifetime_totals`) are in listing.py.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from redis import exceptions as rex
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from . import sharding
from .boundary import is_wrong_type, map_reply, redis_errors, text
from .ids import new_job_id
from .keys import JOB_FIELD, QueueKeys, is_valid_queue, queues_key, validate_job_id, validate_queue
from .listing import Listing, is_level
from .records import JobInfo, LeasedJob, QueueStats, inline_prefix
from .versioning import stored_version

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .config import Settings
    from .scripts import Scripts

log = logging.getLogger(__name__)

BATCH = 1000  # ids per call in bulk operations, so no single script blocks Redis for long
# Read for the running jobs list: name, worker, attempts used, max attempts, runs.
_LEASED_FIELDS = [JOB_FIELD[name] for name in ("name", "worker", "attempts", "max_attempts", "runs")]


class Admin(Listing):
    """The inspection and failed-set methods of RedisEngine (the paged views: listing.py)."""

    settings: Settings
    redis: Redis
    scripts: Scripts

    if TYPE_CHECKING:

        def keys(self, queue: str) -> QueueKeys: ...

        def _now_arg(self) -> int | str: ...

    def _bounded(self, action: str) -> redis_errors:
        """The error boundary, bounded: no call here waits for Redis past `dispatch_timeout`."""
        return redis_errors(action, timeout=self.settings.dispatch_timeout)

    async def known_queues(self) -> list[str]:
        async with self._bounded("list queues"):
            members = await self.redis.smembers(queues_key(self.settings.prefix))
        names = sorted(text(m) for m in members)
        valid = [name for name in names if is_valid_queue(name)]
        if len(valid) < len(names):
            log.warning(
                "ignored %d invalid queue name(s) in %s",
                len(names) - len(valid),
                queues_key(self.settings.prefix),
            )
        return valid

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
        async with self._bounded("read the format version"):
            return await stored_version(self.redis, self.settings.prefix)

    async def stats(self, queue: str | None = None) -> list[QueueStats]:
        """Each queue's jobs by state; `ready` counts the lists of every priority level and
        rate group too, `waiting` the jobs of flows waiting for their prerequisites."""
        queues = await self._queues(queue)
        async with self._bounded("stats"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                keys = self.keys(q)
                pipe.llen(keys.ready)
                for key in (keys.delayed, keys.running, keys.failed):
                    pipe.zcard(key)
                pipe.get(keys.dropped)
                pipe.hexists(keys.meta, "paused")
                pipe.zrange(keys.levels, 0, -1)
                pipe.zcard(keys.waiting)
            counts = await pipe.execute()
        rows = [counts[i * 8 : i * 8 + 8] for i in range(len(queues))]
        # Then the level lists the levels zsets name, in a second round trip (none: no call).
        lists = [
            (i, self.keys(q).level(int(n))) for i, q in enumerate(queues) for n in rows[i][6] if is_level(n)
        ]
        at_levels = [0] * len(queues)
        if lists:
            async with self._bounded("stats"), self.redis.pipeline(transaction=False) as pipe:
                for _, key in lists:
                    pipe.llen(key)
                lengths: list[Any] = await pipe.execute(raise_on_error=False)
            for (i, _), length in zip(lists, lengths, strict=True):
                if isinstance(length, Exception) and not is_wrong_type(length):
                    raise map_reply(length, "stats") from length
                at_levels[i] += 0 if isinstance(length, Exception) else int(length)
        grouped = await self._group_waiting(queues)
        return [
            QueueStats(
                q,
                ready + extra + in_groups,
                delayed,
                running,
                failed,
                int(dropped or 0),
                bool(paused),
                waiting,
            )
            for q, extra, in_groups, (ready, delayed, running, failed, dropped, paused, _, waiting) in zip(
                queues, at_levels, grouped, rows, strict=True
            )
        ]

    async def _group_lists(self, queues: Sequence[str]) -> list[list[str]]:
        """Per queue, the lists of its rate groups that may hold jobs: the groups in its ring
        and those a limit holds (gwait); a group with jobs waiting is in one of them."""
        async with self._bounded("list rate groups"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.lrange(self.keys(q).ring, 0, -1)
                pipe.zrange(self.keys(q).group_wait, 0, -1)
            replies = await pipe.execute(raise_on_error=False)
        lists = []
        for q, ring, held in zip(queues, replies[::2], replies[1::2], strict=True):
            names = [*(ring if isinstance(ring, list) else []), *(held if isinstance(held, list) else [])]
            lists.append([self.keys(q).group(text(name)) for name in dict.fromkeys(names)])
        return lists

    async def _group_waiting(self, queues: Sequence[str]) -> list[int]:
        """Per queue, the jobs waiting in its rate groups' lists (one LLEN per group)."""
        lists = await self._group_lists(queues)
        if not any(lists):
            return [0] * len(queues)
        async with self._bounded("count rate groups' jobs"), self.redis.pipeline(transaction=False) as pipe:
            for key in (key for keys in lists for key in keys):
                pipe.llen(key)
            lengths = iter(await pipe.execute(raise_on_error=False))
        return [sum(n for n in itertools.islice(lengths, len(keys)) if isinstance(n, int)) for keys in lists]

    # -- one job ----------------------------------------------------------------------------

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
        async with self._bounded(f"read job {job_id}"):
            if await self.redis.type(key) != b"hash":
                return None
            raw: dict[bytes, bytes] = await self.redis.hgetall(key)  # type: ignore[assignment]
        return JobInfo.from_hash(queue, job_id, raw, with_payload) if raw else None

    async def _find_inline(self, queue: str, job_id: str, with_payload: bool) -> JobInfo | None:
        found = await self._inline_entry_at(queue, job_id)
        if found is not None:
            return JobInfo.from_inline(queue, found[0], with_payload, priority=found[1])
        entry = (await self._inline_in_groups(queue, job_id))[1]
        return None if entry is None else JobInfo.from_inline(queue, entry, with_payload)

    async def _inline_in_groups(self, queue: str, job_id: str) -> tuple[str, bytes | None]:
        """The rate group list where a job waits inline, and its entry; ("", None) if none."""
        for key in (await self._group_lists([queue]))[0]:
            entry = await self._find_in_list(key, job_id)
            if entry is not None:
                return key, entry
        return "", None

    async def _inline_entry(self, queue: str, job_id: str) -> bytes | None:
        """The ready list entry of a job waiting inline, as stored; None if none is."""
        found = await self._inline_entry_at(queue, job_id)
        return None if found is None else found[0]

    async def _inline_entry_at(self, queue: str, job_id: str) -> tuple[bytes, int] | None:
        """The entry of a job waiting inline in one of the queue's ready lists (of each
        priority level the levels zset names, then the queue list), and its level."""
        keys = self.keys(queue)
        async with self._bounded(f"find job {job_id}"):
            named: list[bytes] = await self.redis.zrange(keys.levels, 0, -1)  # type: ignore[assignment]
        for level in [int(n) for n in named if is_level(n)] + [0]:
            entry = await self._find_in_list(keys.ready if level == 0 else keys.level(level), job_id)
            if entry is not None:
                return entry, level
        return None

    async def _find_in_list(self, key: str, job_id: str) -> bytes | None:
        """The entry of a job waiting inline in the list at `key`; None if none is."""
        head = inline_prefix(job_id)
        seen = 0
        async with self._bounded(f"find job {job_id}"):
            if await self.redis.type(key) != b"list":
                return None
            # From the tail, by negative index: claims pop at the head and pushes at the tail
            # only shift entries towards the part not read yet (a few are read twice), so no
            # entry that stays in the list is missed. The first slices are small: the job
            # looked for was often dispatched just now (depends_on, abort, a result).
            size = 16
            while True:
                entries: list[bytes] = await self.redis.lrange(key, -seen - size, -seen - 1)  # type: ignore[assignment]
                for entry in reversed(entries):
                    if entry.startswith(head):
                        return entry
                if len(entries) < size:
                    return None
                seen += size
                size = min(size * 4, BATCH)

    async def running_jobs(self, queues: Iterable[str], limit: int = 100) -> list[LeasedJob]:
        """Up to `limit` jobs of the running sets, queue by queue, earliest lease deadline first."""
        queues = list(queues)
        async with self._bounded("list running jobs"), self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zrange(self.keys(queue).running, 0, limit - 1, withscores=True)
            held: list[list[tuple[bytes, float]]] = await pipe.execute()
        listed = [
            (q, raw_id, int(deadline))
            for q, pairs in zip(queues, held, strict=True)
            for raw_id, deadline in pairs
        ][:limit]
        async with self._bounded("list running jobs"), self.redis.pipeline(transaction=False) as pipe:
            for queue, raw_id, _ in listed:
                pipe.hmget(self.keys(queue).job_prefix.encode() + raw_id, _LEASED_FIELDS)
            fields: list[Any] = await pipe.execute(raise_on_error=False)
        found: list[LeasedJob] = []
        for (queue, raw_id, deadline), values in zip(listed, fields, strict=True):
            if isinstance(values, Exception):
                if not is_wrong_type(values):
                    raise map_reply(values, "list running jobs") from values
                values = [None] * len(_LEASED_FIELDS)  # not a hash: listed with what the set says
            name, worker, attempts, max_attempts, runs = (None if v is None else text(v) for v in values)
            found.append(
                LeasedJob(
                    queue,
                    text(raw_id),
                    name,
                    worker,
                    _int(attempts),
                    _int(max_attempts),
                    _int(runs),
                    deadline,
                )
            )
        return found

    # -- the failed set ---------------------------------------------------------------------

    async def failed_list(
        self, queue: str | None = None, *, limit: int = 100, with_payload: bool = False
    ) -> list[JobInfo]:
        """The most recently failed jobs, newest first (failed_page also counts and filters)."""
        async with self._bounded("list failed jobs"):
            newest = await self._newest_failed(await self._queues(queue), limit)
            return await self._failed_records(newest, with_payload)

    async def _locate_failed(self, ids: Iterable[str], queue: str | None) -> dict[str, list[str]]:
        """Group failed job ids by the queue whose failed set holds them."""
        wanted = [validate_job_id(i) for i in ids]
        queues = await self._queues(queue)
        async with self._bounded("find failed jobs"), self.redis.pipeline(transaction=False) as pipe:
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
        """Requeue failed jobs with fresh attempts: the given ids, or every one (in `queue`).

        A unique job whose key a live job holds is skipped: see failed_retry_report."""
        return (await self.failed_retry_report(ids, queue=queue)).requeued

    async def _requeue_failed(self, queue: str, ids: list[str], report: RetryReport) -> int:
        keys = self.keys(queue)
        async with self._bounded(f"requeue failed jobs of {queue}"):
            requeued, _skipped, pairs, waits, revived = await self.scripts.requeue_failed(
                keys=[keys.failed, keys.ready, keys.wake],
                args=[keys.base, self._now_arg(), BATCH, new_job_id(), *ids],  # call id: replays
            )
        for job_id, holder in zip(pairs[::2], pairs[1::2], strict=True):
            report.held[job_id.decode()] = holder.decode()
        for job_id, prerequisite in zip(waits[::2], waits[1::2], strict=True):
            report.blocked[job_id.decode()] = prerequisite.decode()
        report.revived += int(revived)
        return int(requeued)

    async def failed_forget(self, ids: Iterable[str], *, queue: str | None = None) -> int:
        total = 0
        for q, found in (await self._locate_failed(ids, queue)).items():
            for start in range(0, len(found), BATCH):
                total += await self._forget_failed(q, found[start : start + BATCH])
        return total

    async def failed_flush(self, queue: str | None = None) -> int:
        total = 0
        for q in await self._queues(queue):
            while (done := await self._forget_failed(q, [])) > 0:
                total += done
        return total

    async def _forget_failed(self, queue: str, ids: list[str]) -> int:
        keys = self.keys(queue)
        async with self._bounded(f"forget failed jobs of {queue}"):
            return int(await self.scripts.forget_failed(keys=[keys.failed], args=[keys.base, BATCH, *ids]))

    # -- the servers, for the doctor ----------------------------------------------------------

    def server(self) -> ServerProbe:
        """The server the client speaks to: the one server, or the primary Sentinel names."""
        return _ClientProbe(self.redis, self.settings.dispatch_timeout)

    async def cluster_primaries(self) -> list[ServerProbe]:
        """Each primary of the Cluster, by host and port (the slot map read afresh)."""
        cluster = cast(RedisCluster, self.redis)
        async with self._bounded("doctor: Cluster discovery"):
            await cluster.initialize()
        nodes = sorted(cluster.get_primaries(), key=lambda n: (n.host, n.port))
        return [_NodeProbe(node, self.settings.dispatch_timeout) for node in nodes]

    async def sentinel_primary(self) -> tuple[str, int]:
        """Where Sentinel says the primary is now."""
        pool = self.redis.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        async with self._bounded("doctor: asking Sentinel for the primary"):
            host, port = await pool.sentinel_manager.discover_master(pool.service_name)
        return str(host), int(port)

    async def failed_retry_report(
        self, ids: Iterable[str] | None = None, *, queue: str | None = None
    ) -> RetryReport:
        """failed_retry, telling which unique jobs were skipped because a live job holds
        their key (and which job that is)."""
        report = RetryReport()
        if ids is not None:
            for q, found in (await self._locate_failed(ids, queue)).items():
                for start in range(0, len(found), BATCH):
                    batch = found[start : start + BATCH]
                    report.requeued += await self._requeue_failed(q, batch, report)
            return report
        for q in await self._queues(queue):
            while True:
                # The oldest failed jobs, past those skipped for a held key or a prerequisite
                # still failed (they stay failed).
                skipped = report.held.keys() | report.blocked.keys()
                async with self._bounded(f"list failed jobs of {q}"):
                    oldest = await self.redis.zrange(self.keys(q).failed, 0, len(skipped) + BATCH - 1)
                batch = [job_id for job_id in map(text, oldest) if job_id not in skipped][:BATCH]
                done = await self._requeue_failed(q, batch, report) if batch else 0
                if done == 0 and len(report.held) + len(report.blocked) == len(skipped):
                    break
                report.requeued += done
        return report


class Refused(Exception):
    """The server refused a command (an ACL without it, a renamed command); str() says how."""


class ServerProbe(Protocol):
    """What the doctor reads from one server. Refusals raise Refused, outages EngineError."""

    @property
    def name(self) -> str: ...

    @property
    def host(self) -> str: ...

    async def info(self) -> dict[str, Any]: ...

    async def config(self, names: Iterable[str]) -> dict[str, str]:
        """CONFIG GET of each name, merged."""
        ...

    async def time(self) -> tuple[int, int]:
        """TIME: seconds and microseconds."""
        ...

    async def replicas(self) -> list[str]:
        """The Cluster's replicas not marked failed, as this node sees them (CLUSTER NODES)."""
        ...


def _refused(exc: rex.ResponseError) -> Refused:
    return Refused(str(exc).split("\n")[0][:160])


def _config(replies: list[Any]) -> dict[str, str]:
    config: dict[str, str] = {}
    for reply in replies:
        if isinstance(reply, rex.ResponseError):
            raise _refused(reply)
        if isinstance(reply, Exception):  # a dropped connection is EngineUnavailable
            raise map_reply(reply, "doctor: CONFIG GET") from reply
        config.update({text(k): text(v) for k, v in reply.items()})
    return config


class _ClientProbe:
    def __init__(self, client: Redis, timeout: float) -> None:
        self.client = client
        self.timeout = timeout  # seconds each call may wait for Redis
        self.name = self.host = ""  # named by the caller (Sentinel's primary), or not at all

    async def info(self) -> dict[str, Any]:
        async with redis_errors("doctor: INFO", timeout=self.timeout):
            try:
                return await self.client.info()
            except rex.ResponseError as exc:  # NOPERM under an ACL, or a renamed command
                raise _refused(exc) from None

    async def config(self, names: Iterable[str]) -> dict[str, str]:
        # One call per name (Redis < 7 takes one pattern per call), in one round trip.
        async with (
            redis_errors("doctor: CONFIG GET", timeout=self.timeout),
            self.client.pipeline(transaction=False) as pipe,
        ):
            for name in names:
                pipe.config_get(name)
            replies = await pipe.execute(raise_on_error=False)
        return _config(replies)

    async def time(self) -> tuple[int, int]:
        async with redis_errors("doctor: TIME", timeout=self.timeout):
            try:
                return await self.client.time()
            except rex.ResponseError as exc:
                raise _refused(exc) from None

    async def replicas(self) -> list[str]:
        raise Refused("not a Cluster node")


class _NodeProbe:
    """A Cluster node, spoken to directly (no slot routing, no redirections)."""

    def __init__(self, node: ClusterNode, timeout: float) -> None:
        self.node = node
        self.timeout = timeout  # seconds each call may wait for Redis
        self.name, self.host = node.name, node.host

    async def _call(self, action: str, *command: Any) -> Any:
        async with redis_errors(action, timeout=self.timeout):
            try:
                return await self.node.execute_command(*command)
            except rex.ResponseError as exc:
                raise _refused(exc) from None

    async def info(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self._call("doctor: INFO", "INFO"))

    async def config(self, names: Iterable[str]) -> dict[str, str]:
        replies: list[Any] = []
        async with redis_errors("doctor: CONFIG GET", timeout=self.timeout):
            for name in names:
                try:
                    replies.append(await self.node.execute_command("CONFIG GET", name))
                except rex.ResponseError as exc:
                    replies.append(exc)
        return _config(replies)

    async def time(self) -> tuple[int, int]:
        seconds, micros = await self._call("doctor: TIME", "TIME")
        return int(seconds), int(micros)

    async def replicas(self) -> list[str]:
        table: dict[str, dict[str, Any]] = await self._call("doctor: CLUSTER NODES", "CLUSTER NODES")
        return [
            address
            for address, fields in table.items()
            if "slave" in str(fields.get("flags", "")).split(",")
            and not {"fail", "fail?", "noaddr"} & set(str(fields.get("flags", "")).split(","))
        ]


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


@dataclass(slots=True)
class RetryReport:
    """What `failed retry` did: jobs requeued; unique jobs skipped (id -> the live job that
    holds the key); jobs of a flow skipped (id -> its prerequisite that is still failed, or
    gone while still counted)."""

    requeued: int = 0
    held: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    revived: int = 0  # jobs of their flows brought back with them (waiting again), not asked for
