"""Workflows, the Redis engine's side (mixed into RedisEngine): storing a flow with
dispatch_flow.lua, and reading a flow's state (its jobs' prerequisites and dependents, a
batch's counts) for the jobs themselves, the CLI and the dashboard. See workflows.py for
what users get, and the prelude's "Flows" for the keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from . import durable as durability
from . import sharding
from .boundary import map_reply, redis_errors, text
from .errors import EngineError, EngineUnavailable, InvalidFlow, JobNotFound
from .ids import new_job_id
from .keys import validate_job_id
from .scripts import ScriptCall, run_pipelined
from .workflows import BatchResult, Flow, FlowNode, check_flow, unknown_dependency

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .batching import PendingDispatch
    from .config import Settings
    from .job import Job
    from .keys import QueueKeys
    from .scripts import Scripts


@dataclass(frozen=True, slots=True)
class FlowJob:
    """One job of a flow as the CLI and dashboard show it: its state, what it waits for
    (prerequisites) and what waits for it (dependents), and its batch."""

    job_id: str
    state: str  # ready, delayed, running, waiting, done, failed, or "gone" (no record left)
    name: str = ""
    prerequisites: list[str] = field(default_factory=list)
    pending: int = 0  # prerequisites not done yet
    dependents: list[str] = field(default_factory=list)
    batch_id: str = ""
    failed_by: str = ""  # the prerequisite whose failure failed it
    reason: str = ""  # of a failed job


class WorkflowStore:
    """RedisEngine's workflow methods."""

    settings: Settings
    redis: Redis
    scripts: Scripts
    _clock: Callable[[], int] | None
    _dispatch_timeout_ms: int

    if TYPE_CHECKING:

        def keys(self, queue: str) -> QueueKeys: ...

        def _now_arg(self) -> int | str: ...

        def _prepare(self, job: Job) -> PendingDispatch: ...

        async def register_queues(self, queues: Any) -> None: ...

        async def redis_time_ms(self, *, action: str) -> int: ...

        async def _located(self, queue: str, job_id: str) -> str: ...

        async def _queues(self, queue: str | None) -> list[str]: ...

        async def _inline_entry_at(self, queue: str, job_id: str) -> tuple[bytes, int] | None: ...

        async def _inline_in_groups(self, queue: str, job_id: str) -> tuple[str, bytes | None]: ...

    async def dispatch_flow(self, flow: Flow, *, durable: bool | None = None) -> None:
        """Store a flow's jobs in one atomic call; each node's `job_id` (and its job's `id`)
        is set. UnknownDependency when a depends_on id names no job of the flow's queue.
        `durable` as for dispatch() (None: the `durable` setting)."""
        check_flow(flow)
        prepared = [self._prepare(node.job) for node in flow.nodes]
        queue = prepared[0].queue if flow.queue is None else self._route_flow(flow.queue, prepared[0])
        if flow.outside:  # the shard (of a sharded queue) its first prerequisite is in
            queue = await self._located(flow.queue or flow.nodes[0].job.queue, flow.outside[0])
        for node, pending in zip(flow.nodes, prepared, strict=True):
            pending.job_id = node.job_id
        if any(node.member for node in flow.nodes):
            flow.batch_id = new_job_id()
        await self.register_queues([queue])
        outside = await self._whereabouts(queue, flow.outside)
        with anyio.move_on_after(self.settings.dispatch_timeout) as deadline:
            async with redis_errors("dispatch a flow"):
                now_ms = (
                    self._clock() if self._clock is not None else await self.redis_time_ms(action="dispatch")
                )
                call = self._flow_call(queue, flow, prepared, outside, now_ms + self._dispatch_timeout_ms)
                if self.settings.durable if durable is None else durable:
                    [reply] = await durability.dispatch(
                        self.redis, [call], [[n.job_id for n in flow.nodes]], self.settings
                    )
                else:
                    [reply] = await run_pipelined(self.redis, [call], raise_errors=False)
        if deadline.cancelled_caught:
            raise EngineUnavailable(
                f"dispatch a flow: Redis did not answer within {self.settings.dispatch_timeout:g} s "
                "(the flow may or may not have been stored)"
            )
        if reply == -1:
            raise EngineUnavailable("dispatch a flow: the call reached Redis after its deadline")
        if isinstance(reply, Exception):
            raise _flow_error(reply)
        for node in flow.nodes:
            node.job.id = node.job_id

    def _route_flow(self, queue: str, first: PendingDispatch) -> str:
        """The shard of a sharded `queue` the flow goes to: the first job's, when its class
        is of that queue; else the first shard (a flow stays on one)."""
        members = sharding.members(queue)
        if len(members) == 1:
            return queue
        return first.queue if first.queue in members else members[0]

    async def _whereabouts(self, queue: str, ids: Sequence[str]) -> list[tuple[str, str, bytes]]:
        """Outside prerequisites as dispatch_flow.lua takes them: id, and the ready list and
        entry where one waits inline (a plain job not started), if it does; the script
        decides from its record otherwise. One round trip for those with a record."""
        keys = self.keys(queue)
        async with redis_errors("find prerequisites"), self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:  # its record, or its kept result (a job done whose record is gone)
                pipe.exists(keys.job(job_id), keys.result(job_id))
            present = await pipe.execute()
        found: list[tuple[str, str, bytes]] = []
        for job_id, exists in zip(ids, present, strict=True):
            found.append((job_id, "", b"") if exists else await self._waiting_inline(queue, job_id))
        return found

    async def _waiting_inline(self, queue: str, job_id: str) -> tuple[str, str, bytes]:
        keys = self.keys(queue)
        at_level = await self._inline_entry_at(queue, job_id)
        if at_level is not None:
            entry, level = at_level
            return job_id, keys.ready if level == 0 else keys.level(level), entry
        group_list, group_entry = await self._inline_in_groups(queue, job_id)
        return job_id, group_list, group_entry or b""

    def _flow_call(
        self,
        queue: str,
        flow: Flow,
        prepared: list[PendingDispatch],
        outside: list[tuple[str, str, bytes]],
        deadline_ms: int,
    ) -> ScriptCall:
        keys = self.keys(queue)
        args: list[Any] = [
            keys.base,
            queue,
            self.settings.max_payload_bytes,
            self._now_arg(),
            deadline_ms,
            self.settings.failed_ttl_ms,
            flow.batch_id,
            flow.batch_mode,
            len(outside),
        ]
        for found in outside:
            args += found
        for node, pending in zip(flow.nodes, prepared, strict=True):
            name, attempts, delay_ms, level, rate_group = pending.kind
            args += (
                node.job_id,
                name,
                attempts,
                delay_ms,
                level,
                rate_group,
                pending.payload,
                " ".join(node.prerequisites),
                _options(node),
            )
        return (self.scripts.dispatch_flow, [keys.wake], args)

    # -- reading -------------------------------------------------------------------------------

    async def batch_result(self, queue: str, batch_id: str) -> BatchResult:
        """Where batch `batch_id` of `queue` stands; JobNotFound when it is unknown or its
        record has expired (failed_ttl after its last member ended)."""
        key = self.keys(queue).batch(validate_job_id(batch_id))
        async with redis_errors(f"read batch {batch_id}"), self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(key, "n", "left", "ok", "ko")
            pipe.lrange(f"{key}:ok", 0, -1)
            pipe.lrange(f"{key}:ko", 0, -1)
            counts, done_ids, failed_ids = await pipe.execute()
        if counts[0] is None:
            raise JobNotFound(f"batch {batch_id} in queue {queue}: unknown, or its record has expired")
        total, left, ok, ko = (int(c or 0) for c in counts)
        return BatchResult(
            batch_id, total, max(left, 0), ok, ko, [text(i) for i in done_ids], [text(i) for i in failed_ids]
        )

    async def flow_fields(self, queue: str, job_id: str) -> tuple[list[str], str]:
        """A flow job's prerequisites (ids) and batch id ("" none), from its record."""
        async with redis_errors(f"read job {job_id}"):
            prerequisites, batch_id = await self.redis.hmget(self.keys(queue).job(job_id), "P", "B")
        return (text(prerequisites).split() if prerequisites else []), text(batch_id) if batch_id else ""

    async def flow_graph(self, queue: str, job_id: str, *, limit: int = 200) -> list[FlowJob]:
        """The jobs of the flow `job_id` belongs to, as far as `limit` jobs: its prerequisites
        and dependents, theirs, and so on, and for a batch its callback and the members that
        have ended (a member not ended yet is found only from itself); each with its state,
        in an order where prerequisites come first. A done job's dependents are no longer
        on record: the flow is followed from the jobs still waiting, not from it."""
        queue = await self._located(queue, validate_job_id(job_id))
        seen: dict[str, FlowJob] = {}
        batches: set[str] = set()
        todo = [job_id]
        while todo and len(seen) < limit:
            wave, todo = todo[: limit - len(seen)], []
            found = await self._flow_jobs(queue, wave)
            new_batches = {job.batch_id for job in found if job.batch_id and job.batch_id not in batches}
            batches |= new_batches
            more = await self._batch_jobs(queue, sorted(new_batches))
            for job in found:
                seen[job.job_id] = job
            for other in [i for job in found for i in (*job.prerequisites, *job.dependents)] + more:
                if other not in seen and other not in todo and other not in wave:
                    todo.append(other)
        return _prerequisites_first(list(seen.values()))

    async def flow_links(
        self, queue: str, job_id: str, *, limit: int = 100
    ) -> tuple[list[FlowJob], list[FlowJob]]:
        """A job's prerequisites and its dependents (up to `limit` of each), with their states;
        none for a job outside any flow."""
        [job] = await self._flow_jobs(queue, [validate_job_id(job_id)])
        linked = [*job.prerequisites[:limit], *job.dependents[:limit]]
        if not linked:
            return [], []
        jobs = await self._flow_jobs(queue, linked)
        split = len(job.prerequisites[:limit])
        return jobs[:split], jobs[split:]

    async def flow_queue(self, job_id: str) -> str | None:
        """The known queue whose keys hold a record (or a kept result) of job `job_id`."""
        validate_job_id(job_id)
        queues = await self._queues(None)
        async with redis_errors(f"find job {job_id}"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.exists(self.keys(q).job(job_id), self.keys(q).result(job_id))
            present = await pipe.execute()
        return next((q for q, n in zip(queues, present, strict=True) if n), None)

    async def _batch_jobs(self, queue: str, batch_ids: Sequence[str]) -> list[str]:
        """The callbacks of batches, and their members that have ended (the first 1,000 of each way)."""
        if not batch_ids:
            return []
        keys = self.keys(queue)
        async with redis_errors("read a flow"), self.redis.pipeline(transaction=False) as pipe:
            for batch_id in batch_ids:
                pipe.hget(keys.batch(batch_id), "cb")
                pipe.lrange(f"{keys.batch(batch_id)}:ok", 0, -1)
                pipe.lrange(f"{keys.batch(batch_id)}:ko", 0, -1)
            replies = await pipe.execute(raise_on_error=False)
        found: list[str] = []
        for reply in replies:
            if isinstance(reply, bytes) and reply:
                found.append(text(reply))
            elif isinstance(reply, list):
                found += [text(i) for i in reply]
        return found

    async def _flow_jobs(self, queue: str, ids: Sequence[str]) -> list[FlowJob]:
        keys = self.keys(queue)
        async with redis_errors("read a flow"), self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.type(keys.job(job_id))
                pipe.hmget(keys.job(job_id), "s", "n", "P", "D", "B", "W", "e")
                pipe.smembers(keys.dependents(job_id))
                pipe.exists(keys.result(job_id))
            replies = await pipe.execute(raise_on_error=False)
        jobs = []
        for index, job_id in enumerate(ids):
            kind, fields, dependents, kept = replies[4 * index : 4 * index + 4]
            deps = sorted(text(d) for d in dependents) if isinstance(dependents, set) else []
            if kind == b"string" or (kind == b"none" and kept == 1):
                # The marker ack leaves for a replay, or only a kept result: it succeeded.
                jobs.append(FlowJob(job_id, "done", dependents=deps))
                continue
            if kind != b"hash" or not isinstance(fields, list):
                jobs.append(FlowJob(job_id, "gone", dependents=deps))
                continue
            state, name, prerequisites, pending, batch_id, cause, error = (
                text(f) if f is not None else "" for f in fields
            )
            jobs.append(
                FlowJob(
                    job_id,
                    state or "?",
                    name,
                    prerequisites.split(),
                    max(int(pending), 0) if pending.lstrip("-").isdigit() else 0,
                    deps,
                    batch_id,
                    cause,
                    _reason(error),
                )
            )
        return jobs


def _prerequisites_first(jobs: list[FlowJob]) -> list[FlowJob]:
    """The jobs in an order where each comes after its prerequisites among them (a stable
    depth-first order: otherwise as found)."""
    by_id = {job.job_id: job for job in jobs}
    ordered: dict[str, FlowJob] = {}
    for job in jobs:
        stack = [(job, False)]
        while stack:
            current, expanded = stack.pop()
            if current.job_id in ordered:
                continue
            if expanded:
                ordered[current.job_id] = current
                continue
            stack.append((current, True))
            stack += [
                (by_id[p], False) for p in reversed(current.prerequisites) if p in by_id and p not in ordered
            ]
    return list(ordered.values())


def _options(node: FlowNode) -> str:
    return ("m" if node.member else "") + ("c" if node.callback else "") + ("r" if node.run_anyway else "")


def _reason(error: str) -> str:
    if not error:
        return ""
    try:
        record = orjson.loads(error)
    except orjson.JSONDecodeError:
        return ""
    return str(record.get("reason") or "") if isinstance(record, dict) else ""


def _flow_error(reply: Exception) -> Exception:
    said = str(reply)
    if "unknown dependency" in said:
        return unknown_dependency(said.rsplit(" ", 1)[-1])
    if "is not before its dependent" in said or "invalid batch" in said:
        return InvalidFlow(f"dispatch a flow: {said}")
    mapped = map_reply(reply, "dispatch a flow")
    return mapped if isinstance(mapped, Exception) else EngineError(said)
