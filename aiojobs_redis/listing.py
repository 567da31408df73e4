"""Paged views of the stored jobs, for `failed list/show` and the dashboard.

`Listing` is mixed into RedisEngine through Admin: a page of failed jobs (with filters), one
job's detail, the ready and delayed jobs of a queue, the age of each queue's oldest ready job
and the lifetime totals. Every call reads a bounded amount: a page is at most MAX_PAGE jobs,
and a filtered failed listing reads at most FILTER_SCAN_MAX ids per call (see failed_page).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .boundary import is_wrong_type, map_reply, redis_errors, text
from .keys import JOB_FIELD, QueueKeys, validate_job_id, validate_queue
from .records import Event, JobInfo, parse_inline

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .config import Settings

MAX_PAGE = 1000  # jobs per page, at most
FILTER_SCAN_MAX = 10_000  # failed ids a filtered listing reads per call, at most
EVENTS_SCAN = 2_000  # stream entries job_events reads, at most
_CHUNK = 500  # ids per round trip while filtering
_WHEN_READY_FIELDS = [JOB_FIELD["scheduled_ms"], JOB_FIELD["created_ms"]]
_QUEUED_FIELDS = [JOB_FIELD[n] for n in ("name", "max_attempts", "attempts", "created_ms", "scheduled_ms")]


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
    state: str  # "ready" or "delayed"
    due_ms: int | None  # delayed: when it is due; ready: when it became ready, if known
    created_ms: int | None
    attempts: int  # attempts used up so far (a retried job waits with some used)
    max_attempts: int | None
    payload: Any = None


@dataclass(frozen=True, slots=True)
class QueuePage:
    queue: str
    state: str  # "ready" or "delayed"
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

    async def ready_jobs(
        self, queue: str, *, offset: int = 0, limit: int = 50, with_payload: bool = False
    ) -> QueuePage:
        """The ready list of one queue (or one shard), next to run first: LRANGE of one page.

        Inline records are decoded in place; an id entry's fields come from its hash.
        """
        offset, limit = _page_bounds(offset, limit)
        keys = self.keys(validate_queue(queue))
        async with redis_errors(f"list ready jobs of {queue}"):
            if await self.redis.type(keys.ready) not in (b"list", b"none"):
                return QueuePage(queue, "ready", 0, offset, [])
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.llen(keys.ready)
                pipe.lrange(keys.ready, offset, offset + limit - 1)
                total, entries = await pipe.execute()
        inline: dict[int, QueuedJob] = {}
        ids: list[tuple[int, bytes]] = []
        for index, entry in enumerate(entries):
            parsed = parse_inline(entry)
            if parsed is not None:
                job_id, name, max_attempts, created, raw_payload = parsed
                payload = _payload(raw_payload) if with_payload else None
                inline[index] = QueuedJob(
                    queue, job_id, name, "ready", created, created, 0, max_attempts, payload
                )
            else:
                ids.append((index, entry))
        by_id = await self._queued_records(keys, [(raw_id, None) for _, raw_id in ids], "ready", with_payload)
        for (index, _), job in zip(ids, by_id, strict=True):
            inline[index] = job
        return QueuePage(queue, "ready", int(total), offset, [inline[i] for i in sorted(inline)])

    async def delayed_jobs(
        self, queue: str, *, offset: int = 0, limit: int = 50, with_payload: bool = False
    ) -> QueuePage:
        """The delayed set of one queue (or one shard), soonest due first, with when each is due."""
        offset, limit = _page_bounds(offset, limit)
        keys = self.keys(validate_queue(queue))
        async with (
            redis_errors(f"list delayed jobs of {queue}"),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            pipe.zcard(keys.delayed)
            pipe.zrange(keys.delayed, offset, offset + limit - 1, withscores=True)
            total, pairs = await pipe.execute()
        listed = [(raw_id, int(score)) for raw_id, score in pairs]
        jobs = await self._queued_records(keys, listed, "delayed", with_payload)
        return QueuePage(queue, "delayed", int(total), offset, jobs)

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
            name, max_attempts, attempts, created, scheduled = reply[:5]
            payload = _payload(reply[5]) if with_payload and reply[5] is not None else None
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
                )
            )
        return found

    async def oldest_ready_ms(self, queues: Sequence[str]) -> dict[str, int | None]:
        """When each queue's oldest ready job became ready (Redis's clock, ms); None if empty.

        Two round trips for all queues: LINDEX 0 of each ready list (an inline record carries
        its dispatch time), then the hashes of heads that are ids (when they were last made
        ready: dispatch, retry, promotion or requeue). The age is the queue's latency.
        """
        async with redis_errors("read queue latency"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.lindex(self.keys(q).ready, 0)
            heads: list[Any] = await pipe.execute(raise_on_error=False)
        oldest: dict[str, int | None] = {}
        by_id: list[tuple[str, bytes]] = []
        for q, head in zip(queues, heads, strict=True):
            if isinstance(head, Exception) or head is None:
                oldest[q] = None  # empty, or not a list (a claim moves that aside)
            elif (parsed := parse_inline(head)) is not None:
                oldest[q] = parsed[3]
            else:
                by_id.append((q, head))
        async with redis_errors("read queue latency"), self.redis.pipeline(transaction=False) as pipe:
            for q, raw_id in by_id:
                pipe.hmget(
                    self.keys(q).job_prefix.encode() + raw_id,
                    [JOB_FIELD["scheduled_ms"], JOB_FIELD["created_ms"]],
                )
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for (q, _), reply in zip(by_id, replies, strict=True):
            oldest[q] = None if isinstance(reply, Exception) else _number(reply[0]) or _number(reply[1])
        return oldest

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
