"""Paged views of the stored jobs, for `failed list/show` and the dashboard.

`Listing` is mixed into RedisEngine through Admin: a page of failed jobs (with filters), one
job's detail, the ready, delayed and waiting jobs of a queue, the age of each queue's oldest
ready job and the lifetime totals. Every call reads a bounded amount: a page is at most MAX_PAGE jobs,
and a filtered failed listing reads at most FILTER_SCAN_MAX ids per call (see failed_page).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .boundary import is_wrong_type, map_reply, redis_errors, text
from .keys import JOB_FIELD, MAX_PRIORITY, MIN_PRIORITY, QueueKeys, validate_job_id, validate_queue
from .records import Event, JobInfo, parse_inline

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .config import Settings

MAX_PAGE = 1000  # jobs per page, at most
FILTER_SCAN_MAX = 10_000  # failed ids a filtered listing reads per call, at most
EVENTS_SCAN = 2_000  # stream entries job_events reads, at most
_CHUNK = 500  # ids per round trip while filtering
_WHEN_READY_FIELDS = [JOB_FIELD["scheduled_ms"], JOB_FIELD["created_ms"]]
_QUEUED_FIELDS = [
    JOB_FIELD[n] for n in ("name", "max_attempts", "attempts", "created_ms", "scheduled_ms", "priority")
]


def claim_order(levels: Iterable[int]) -> list[int]:
    """Priority levels in the order claim.lua takes them: highest first, level 0 (the queue
    list) always among them, between the positive and the negative levels."""
    return sorted({0, *levels}, reverse=True)


@dataclass(frozen=True, slots=True)
class FailedPage:
    """A page of failed jobs, newest failure first.

    `total` is every failed job in the queues asked about. `matched` counts those that pass
    the filters among the newest `scanned` (all of them, unless the scan stopped at
    FILTER_SCAN_MAX: then `complete` is false and `matched` is a lower bound).
    """

    jobs: list[JobInfo]
    total: int
    matched: int
    scanned: int
    offset: int

    @property
    def complete(self) -> bool:
        return self.scanned >= self.total


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job waiting in a queue's ready list or delayed set. The payload only when asked."""

    queue: str
    id: str
    name: str | None
    state: str  # "ready", "delayed" or "waiting" (for its prerequisites)
    due_ms: int | None  # delayed: when it is due; ready: when it became ready, if known;
    # waiting: when it began to wait
    created_ms: int | None
    attempts: int  # attempts used up so far (a retried job waits with some used)
    max_attempts: int | None
    payload: Any = None
    priority: int = 0  # the level it waits at (a delayed one: the level it will wait at)


@dataclass(frozen=True, slots=True)
class QueuePage:
    queue: str
    state: str  # "ready", "delayed" or "waiting"
    total: int
    offset: int
    jobs: list[QueuedJob]


@dataclass(frozen=True, slots=True)
class Totals:
    """Runs counted by workers' telemetry since the totals began (no expiry)."""

    succeeded: int = 0
    failed: int = 0  # failed for good: each one entered the failed set
    retried: int = 0  # failed attempts that were retried


def _page_bounds(offset: int, limit: int) -> tuple[int, int]:
    if offset < 0 or limit < 1:
        raise ValueError("offset must be >= 0 and limit >= 1")
    return offset, min(limit, MAX_PAGE)


def _matches(
    name_filter: str | None, text_filter: str | None, name: bytes | None, error: bytes | None
) -> bool:
    """Case-insensitive substrings: of the job's name, and of its error's reason, type and message."""
    if name_filter and name_filter.lower() not in (name or b"").decode("utf-8", "replace").lower():
        return False
    if text_filter:
        try:
            record = orjson.loads(error) if error else {}
        except orjson.JSONDecodeError:
            record = {"message": (error or b"").decode("utf-8", "replace")}
        if not isinstance(record, dict):
            record = {}
        said = " ".join(str(record.get(k, "")) for k in ("reason", "type", "message")).lower()
        if text_filter.lower() not in said:
            return False
    return True


class Listing:
    """The paged inspection methods of RedisEngine."""

    settings: Settings
    redis: Redis

    if TYPE_CHECKING:

        def keys(self, queue: str) -> QueueKeys: ...

        async def _queues(self, queue: str | None) -> list[str]: ...

        async def _locate_failed(self, ids: Iterable[str], queue: str | None) -> dict[str, list[str]]: ...

        async def _get_job(self, queue: str, job_id: str, with_payload: bool) -> JobInfo | None: ...

        async def _read_hash(self, queue: str, job_id: str, with_payload: bool) -> JobInfo | None: ...

        async def recent_events(self, queues: Sequence[str], count: int = 50) -> list[Event]: ...

    # -- failed jobs ----------------------------------------------------------------------------

    async def failed_page(
        self,
        queue: str | None = None,
        *,
        offset: int = 0,
        limit: int = 100,
        name: str | None = None,
        error: str | None = None,
        with_payload: bool = False,
    ) -> FailedPage:
        """Failed jobs newest first: the total, and `limit` (at most MAX_PAGE) from `offset`.

        `name` and `error` filter by case-insensitive substring of the job's name and of its
        error (reason, type and message). Filtering reads the newest FILTER_SCAN_MAX failed
        ids of the queues asked about, in chunks of 500 (ids, then name and error fields),
        and no further: older failures are not searched, and the page says so (`complete`).
        Unfiltered, a page of one queue reads its page of ids; of several queues together,
        offset + limit ids of each (then merged by failure time); then the page's records.
        """
        offset, limit = _page_bounds(offset, limit)
        queues = await self._queues(queue)
        filtered = bool(name or error)
        async with redis_errors("list failed jobs"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.zcard(self.keys(q).failed)
            sizes: list[int] = await pipe.execute()
        total = sum(sizes)
        if not filtered:
            if len(queues) == 1:  # the page itself, by rank
                chosen = await self._newest_failed(queues, limit, start=offset)
            else:  # the newest offset + limit of each queue, merged
                chosen = (await self._newest_failed(queues, min(offset + limit, total)))[offset:]
            return FailedPage(await self._failed_records(chosen, with_payload), total, total, total, offset)
        newest = await self._newest_failed(queues, FILTER_SCAN_MAX)
        matched: list[tuple[str, bytes]] = []
        wanted_fields = [JOB_FIELD["name"], JOB_FIELD["error"]]
        for start in range(0, len(newest), _CHUNK):
            chunk = newest[start : start + _CHUNK]
            async with redis_errors("list failed jobs"), self.redis.pipeline(transaction=False) as pipe:
                for q, raw_id in chunk:
                    pipe.hmget(self.keys(q).job_prefix.encode() + raw_id, wanted_fields)
                replies = await pipe.execute(raise_on_error=False)
            for entry, reply in zip(chunk, replies, strict=True):
                if isinstance(reply, Exception):
                    if not is_wrong_type(reply):
                        raise map_reply(reply, "list failed jobs") from reply
                    reply = [None, None]
                if _matches(name, error, reply[0], reply[1]):
                    matched.append(entry)
        jobs = await self._failed_records(matched[offset : offset + limit], with_payload)
        return FailedPage(jobs, total, len(matched), len(newest), offset)

    async def _newest_failed(
        self, queues: Sequence[str], count: int, *, start: int = 0
    ) -> list[tuple[str, bytes]]:
        """(queue, raw id) of the `count` newest failures over `queues` (each set from rank
        `start`), newest first."""
        if count <= 0:
            return []
        async with redis_errors("list failed jobs"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                # Raw ids build the keys: a malformed id need not be valid UTF-8.
                pipe.zrevrange(self.keys(q).failed, start, start + count - 1, withscores=True)
            replies: list[list[tuple[bytes, float]]] = await pipe.execute()
        # Newest first; a tie (one millisecond) goes to the later id, as ZREVRANGE orders one
        # set: ids sort by creation time, so the order holds across queues too.
        merged = sorted(
            ((score, raw_id, q) for q, pairs in zip(queues, replies, strict=True) for raw_id, score in pairs),
            reverse=True,
        )
        return [(q, raw_id) for _, raw_id, q in merged[:count]]

    async def _failed_records(self, chosen: Sequence[tuple[str, bytes]], with_payload: bool) -> list[JobInfo]:
        async with redis_errors("list failed jobs"), self.redis.pipeline(transaction=False) as pipe:
            for q, raw_id in chosen:
                pipe.hgetall(self.keys(q).job_prefix.encode() + raw_id)
            hashes = await pipe.execute(raise_on_error=False)
        found: list[JobInfo] = []
        for (q, raw_id), raw in zip(chosen, hashes, strict=True):
            if isinstance(raw, Exception):
                if not is_wrong_type(raw):
                    raise map_reply(raw, "list failed jobs") from raw
                # The key is not a hash: show it as malformed.
                error = orjson.dumps({"reason": "wrong_type", "message": str(raw)})
                raw = {JOB_FIELD["error"].encode(): error}
            found.append(JobInfo.from_hash(q, text(raw_id), raw, with_payload))
        return found

    async def missing_failed(self, ids: Sequence[str], queue: str | None = None) -> list[str]:
        """Those of `ids` that no failed set (of `queue`, or of any queue) holds."""
        located = await self._locate_failed(ids, queue)
        found = {job_id for held in located.values() for job_id in held}
        return [job_id for job_id in ids if job_id not in found]

    # -- one job --------------------------------------------------------------------------------

    async def find_job(
        self, job_id: str, queue: str | None = None, *, with_payload: bool = False
    ) -> JobInfo | None:
        """One job by id, in `queue` or wherever it is: its record with state and last error.

        Without a queue, the failed sets are searched first, then each known queue's job
        keys (one EXISTS each); a job still waiting inline in a ready list (dispatched to run
        now and not yet claimed) has no key and is found only when its queue is given.
        """
        validate_job_id(job_id)
        if queue is not None:
            validate_queue(queue)
        for q in await self._locate_failed([job_id], queue):
            found = await self._read_hash(q, job_id, with_payload)
            if found is not None:
                return found
        if queue is not None:
            for q in await self._queues(queue):
                found = await self._get_job(q, job_id, with_payload)
                if found is not None:
                    return found
            return None
        queues = await self._queues(None)
        async with redis_errors(f"find job {job_id}"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.exists(self.keys(q).job(job_id))
            present: list[int] = await pipe.execute()
        for q, exists in zip(queues, present, strict=True):
            if exists and (found := await self._read_hash(q, job_id, with_payload)) is not None:
                return found
        return None

    async def job_events(self, queue: str, job_id: str, *, scan: int = EVENTS_SCAN) -> list[Event]:
        """The events of one job still in its queue's event stream, oldest first.

        Reads the newest `scan` entries of the stream (one XREVRANGE) and keeps this job's: each
        run's end, with a one-line error for a failed run. Older entries (the stream is capped)
        and runs of workers without telemetry are not there.
        """
        validate_job_id(job_id)
        found = [e for e in await self.recent_events([validate_queue(queue)], scan) if e.job_id == job_id]
        return found[::-1]

    # -- waiting jobs ---------------------------------------------------------------------------

    async def ready_lists(self, queue: str) -> list[tuple[int, str, int]]:
        """The ready lists of one queue (or shard), in the order claims take them: (priority
        level, list key, jobs in it). The queue list (level 0) is always there; a key of
        another type than a list counts 0 (a claim moves it aside)."""
        keys = self.keys(validate_queue(queue))
        async with redis_errors(f"list the priority levels of {queue}"):
            raw: list[bytes] = await self.redis.zrange(keys.levels, 0, -1)  # type: ignore[assignment]
            named = [int(level) for level in raw if is_level(level)]
            lists = [(n, keys.ready if n == 0 else keys.level(n)) for n in claim_order(named)]
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, key in lists:
                    pipe.llen(key)
                counts: list[Any] = await pipe.execute(raise_on_error=False)
        for count in counts:
            if isinstance(count, Exception) and not is_wrong_type(count):
                raise map_reply(count, f"count the ready jobs of {queue}") from count
        return [
            (n, key, 0 if isinstance(count, Exception) else int(count))
            for (n, key), count in zip(lists, counts, strict=True)
        ]

    async def ready_jobs(
        self, queue: str, *, offset: int = 0, limit: int = 50, with_payload: bool = False
    ) -> QueuePage:
        """The ready jobs of one queue (or one shard), next to run first: the lists of its
        priority levels, highest first (see claim.lua), read as one; LRANGE of one page.

        Inline records are decoded in place; an id entry's fields come from its hash.
        """
        offset, limit = _page_bounds(offset, limit)
        keys = self.keys(validate_queue(queue))
        lists = await self.ready_lists(queue)
        slices: list[tuple[int, str, int, int]] = []  # level, key, first, last index
        start = 0
        for level, key, count in lists:
            first, last = max(offset - start, 0), min(offset + limit - start, count) - 1
            if count and first <= last:
                slices.append((level, key, first, last))
            start += count
        async with (
            redis_errors(f"list ready jobs of {queue}"),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for _, key, first, last in slices:
                pipe.lrange(key, first, last)
            pages: list[Any] = await pipe.execute(raise_on_error=False)
        listed: list[QueuedJob | bytes] = []  # an id entry: its hash is read below
        for (level, _, _, _), entries in zip(slices, pages, strict=True):
            if isinstance(entries, Exception):
                if not is_wrong_type(entries):
                    raise map_reply(entries, f"list ready jobs of {queue}") from entries
                continue  # retyped since it was counted: a claim moves it aside
            for entry in entries:
                parsed = parse_inline(entry)
                if parsed is None:
                    listed.append(entry)
                    continue
                job_id, name, max_attempts, created, raw_payload = parsed
                payload = _payload(raw_payload) if with_payload else None
                listed.append(
                    QueuedJob(queue, job_id, name, "ready", created, created, 0, max_attempts, payload, level)
                )
        ids = [(raw_id, None) for raw_id in listed if isinstance(raw_id, bytes)]
        by_id = iter(await self._queued_records(keys, ids, "ready", with_payload))
        jobs = [item if isinstance(item, QueuedJob) else next(by_id) for item in listed]
        return QueuePage(queue, "ready", sum(count for _, _, count in lists), offset, jobs)

    async def delayed_jobs(
        self, queue: str, *, offset: int = 0, limit: int = 50, with_payload: bool = False
    ) -> QueuePage:
        """The delayed set of one queue (or one shard), soonest due first, with when each is due."""
        return await self._zset_page(queue, "delayed", offset, limit, with_payload)

    async def waiting_jobs(
        self, queue: str, *, offset: int = 0, limit: int = 50, with_payload: bool = False
    ) -> QueuePage:
        """The jobs of flows waiting for their prerequisites in one queue (or one shard),
        oldest first, `due_ms` when each began to wait (a chain's later steps, a batch's
        callback, a job with depends_on; see workflows.py)."""
        return await self._zset_page(queue, "waiting", offset, limit, with_payload)

    async def _zset_page(
        self, queue: str, state: str, offset: int, limit: int, with_payload: bool
    ) -> QueuePage:
        """A page of the zset of jobs in `state` (delayed or waiting), by score."""
        offset, limit = _page_bounds(offset, limit)
        keys = self.keys(validate_queue(queue))
        key = keys.delayed if state == "delayed" else keys.waiting
        async with (
            redis_errors(f"list {state} jobs of {queue}"),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            pipe.zcard(key)
            pipe.zrange(key, offset, offset + limit - 1, withscores=True)
            total, pairs = await pipe.execute()
        listed = [(raw_id, int(score)) for raw_id, score in pairs]
        jobs = await self._queued_records(keys, listed, state, with_payload)
        return QueuePage(queue, state, int(total), offset, jobs)

    async def _queued_records(
        self, keys: QueueKeys, listed: Sequence[tuple[bytes, int | None]], state: str, with_payload: bool
    ) -> list[QueuedJob]:
        fields = _QUEUED_FIELDS + ([JOB_FIELD["payload"]] if with_payload else [])
        action = f"list {state} jobs of {keys.queue}"
        async with redis_errors(action), self.redis.pipeline(transaction=False) as pipe:
            for raw_id, _ in listed:
                pipe.hmget(keys.job_prefix.encode() + raw_id, fields)
            replies = await pipe.execute(raise_on_error=False)
        found: list[QueuedJob] = []
        for (raw_id, due), reply in zip(listed, replies, strict=True):
            if isinstance(reply, Exception):
                if not is_wrong_type(reply):
                    raise map_reply(reply, action) from reply
                reply = [None] * len(fields)
            name, max_attempts, attempts, created, scheduled, level = reply[:6]
            payload = _payload(reply[6]) if with_payload and reply[6] is not None else None
            found.append(
                QueuedJob(
                    keys.queue,
                    text(raw_id),
                    None if name is None else text(name),
                    state,
                    due if due is not None else _number(scheduled) or _number(created),
                    _number(created),
                    _number(attempts) or 0,
                    _number(max_attempts),
                    payload,
                    _number(level) or 0,
                )
            )
        return found

    async def oldest_ready_ms(self, queues: Sequence[str]) -> dict[str, int | None]:
        """When each queue's oldest ready job became ready (Redis's clock, ms); None if empty.

        Two round trips for all queues: LINDEX 0 of each ready list (an inline record carries
        its dispatch time), then the hashes of heads that are ids (when they were last made
        ready: dispatch, retry, promotion or requeue); one more for queues with jobs at
        priority levels other than 0 (the head of each level's list: the oldest of them
        counts). The age is the queue's latency.
        """
        async with redis_errors("read queue latency"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.lindex(self.keys(q).ready, 0)
                pipe.zrange(self.keys(q).levels, 0, -1)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        heads = [(q, head) for q, head in zip(queues, replies[::2], strict=True)]
        lists = [
            (q, self.keys(q).level(int(n)))
            for q, named in zip(queues, replies[1::2], strict=True)
            if not isinstance(named, Exception)
            for n in named
            if is_level(n)
        ]
        if lists:
            async with redis_errors("read queue latency"), self.redis.pipeline(transaction=False) as pipe:
                for _, key in lists:
                    pipe.lindex(key, 0)
                more: list[Any] = await pipe.execute(raise_on_error=False)
            heads += [(q, head) for (q, _), head in zip(lists, more, strict=True)]
        found: dict[str, list[int]] = {q: [] for q in queues}
        by_id: list[tuple[str, bytes]] = []
        for q, head in heads:
            if isinstance(head, Exception) or head is None:
                continue  # empty, or not a list (a claim moves that aside)
            if (parsed := parse_inline(head)) is not None:
                found[q].append(parsed[3])
            else:
                by_id.append((q, head))
        async with redis_errors("read queue latency"), self.redis.pipeline(transaction=False) as pipe:
            for q, raw_id in by_id:
                pipe.hmget(self.keys(q).job_prefix.encode() + raw_id, _WHEN_READY_FIELDS)
            records: list[Any] = await pipe.execute(raise_on_error=False)
        for (q, _), record in zip(by_id, records, strict=True):
            when = None if isinstance(record, Exception) else _number(record[0]) or _number(record[1])
            if when is not None:
                found[q].append(when)
        return {q: min(times, default=None) for q, times in found.items()}

    # -- lifetime totals ------------------------------------------------------------------------

    async def lifetime_totals(self, queues: Sequence[str]) -> dict[str, Totals]:
        """Each queue's runs since its totals began (see Totals; recorded by worker telemetry)."""
        async with redis_errors("read lifetime totals"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.hmget(self.keys(q).totals, ["s", "f", "r"])
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        found: dict[str, Totals] = {}
        for q, reply in zip(queues, replies, strict=True):
            if isinstance(reply, Exception):
                found[q] = Totals()
            else:
                found[q] = Totals(*(_number(v) or 0 for v in reply))
        return found


def _number(value: bytes | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _payload(raw: bytes) -> Any:
    """The decoded payload; a payload that is not JSON is shown as its text."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def is_level(raw: bytes) -> bool:
    """A member of the levels zset that names a level's list, as claim.lua reads them."""
    try:
        level = int(raw)
    except ValueError:
        return False
    return level != 0 and MIN_PRIORITY <= level <= MAX_PRIORITY and raw == str(level).encode()
