"""What the dashboard shows, read from Redis as one JSON-ready snapshot."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from ..cli_flow import failure, waits_for
from ..cli_schedules import as_json
from ..doctor import schedule_findings
from ..engine import RedisEngine
from ..errors import JobNotFound, MalformedJob
from ..listing import FailedPage, QueuePage
from ..records import JobInfo, WorkerInfo

FAILED_PAGE = 50  # failed jobs per page
QUEUE_PAGE = 50  # ready, delayed or waiting jobs per page
FLOW_PANEL = 100  # jobs of a flow a job's page lists, at most


@dataclass(frozen=True, slots=True)
class FailedQuery:
    """Which failed jobs the page shows: from `offset`, filtered by name and error text."""

    offset: int = 0
    name: str = ""
    error: str = ""
    limit: int = FAILED_PAGE


async def snapshot(
    engine: RedisEngine,
    *,
    minutes: int = 60,
    failed: FailedQuery = FailedQuery(),
    running_limit: int = 100,
    events_limit: int = 50,
    show_payloads: bool = False,
) -> dict[str, Any]:
    """Queues with counts, latency, throughput and lifetime totals; a page of failed jobs with
    their total; running jobs, alive workers, recent events.

    Payloads appear (on failed jobs) only with `show_payloads`.
    """
    now_ms = await engine.redis_time_ms(max_age_ms=0)
    stats = await engine.stats()
    queues = [s.queue for s in stats]
    parts: dict[str, Any] = {}

    async def read(name: str, coro: Any) -> None:
        parts[name] = await coro

    async with anyio.create_task_group() as tg:
        tg.start_soon(read, "throughput", engine.throughput(queues, now_ms, minutes))
        tg.start_soon(read, "failed", failed_page(engine, failed, show_payloads))
        tg.start_soon(read, "workers", engine.alive_workers(now_ms))
        tg.start_soon(read, "events", engine.recent_events(queues, events_limit))
        tg.start_soon(read, "oldest", engine.oldest_ready_ms(queues))
        tg.start_soon(read, "totals", engine.lifetime_totals(queues))
        tg.start_soon(read, "schedules", engine.schedule_rows(queues))
    workers: list[WorkerInfo] = parts["workers"]
    page: FailedPage = parts["failed"]
    return {
        "now_ms": now_ms,
        "minutes": minutes,
        "show_payloads": show_payloads,
        "queues": [
            {
                "queue": s.queue,
                "waiting": s.waiting,
                "ready": s.ready,
                "delayed": s.delayed,
                "running": s.running,
                "failed": s.failed,
                "paused": s.paused,
                "oldest_ready_ms": parts["oldest"][s.queue],
                "latency_ms": _age(now_ms, parts["oldest"][s.queue]),
                "throughput": parts["throughput"][s.queue],
                "totals": parts["totals"][s.queue],
            }
            for s in stats
        ],
        "failed": [failed_entry(job, show_payloads) for job in page.jobs],
        "failed_page": {
            "total": page.total,
            "matched": page.matched,
            "scanned": page.scanned,
            "complete": page.complete,
            "offset": page.offset,
            "limit": failed.limit,
            "name": failed.name,
            "error": failed.error,
        },
        "running": await running_jobs(engine, queues, workers, now_ms, running_limit),
        "workers": workers,
        "events": parts["events"],
        "schedules": [as_json(row) | {"rule": row.rule} for row in parts["schedules"]],
        # Said when schedules exist that no worker fires (the doctor's check).
        "schedule_problems": [
            f.message for f in schedule_findings(parts["schedules"], now_ms) if f.is_problem
        ],
    }


def _age(now_ms: int, since_ms: int | None) -> int | None:
    return None if since_ms is None else max(0, now_ms - since_ms)


async def failed_page(engine: RedisEngine, query: FailedQuery, show_payloads: bool) -> FailedPage:
    """A page of failed jobs, newest first; payloads only when asked."""

    async def read(with_payload: bool) -> FailedPage:
        return await engine.failed_page(
            offset=query.offset,
            limit=query.limit,
            name=query.name,
            error=query.error,
            with_payload=with_payload,
        )

    try:
        return await read(show_payloads)
    except MalformedJob:  # a payload that is not JSON: list them without payloads
        return await read(False)


def failed_entry(job: JobInfo, show_payloads: bool) -> dict[str, Any]:
    error = job.error or {}
    entry: dict[str, Any] = {
        "queue": job.queue,
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "runs": job.runs,
        "stalls": job.stalls,
        "created_ms": job.created_ms,
        "scheduled_ms": job.scheduled_ms,
        "started_ms": job.started_ms,
        "finished_ms": job.finished_ms,
        "worker": job.worker,
        "error": {
            "reason": str(error.get("reason", "")),
            "type": str(error.get("type", "")),
            "message": str(error.get("message", "")),
            "traceback": str(error.get("traceback", "")),
        },
    }
    if show_payloads:
        entry["payload"] = job.payload
    return entry


async def job_view(
    engine: RedisEngine, queue: str, job_id: str, show_payloads: bool
) -> dict[str, Any] | None:
    """One job: its record and last error, and its runs still in the event stream."""
    try:
        job = await engine.find_job(job_id, queue, with_payload=show_payloads)
    except MalformedJob:
        job = await engine.find_job(job_id, queue)
    kept, result = await engine.kept_result(queue, job_id)
    if job is None and not kept:
        return None
    if job is None:  # done, its record gone, its result kept (keep_result)
        job = JobInfo(job_id, queue, None, "done", 0, None, 0, 0, None, None, None, None, None)
    entry = failed_entry(job, show_payloads)
    # A result, like a payload, may hold what not every viewer should see.
    entry["progress"] = job.progress
    entry["result_kept"] = kept
    if kept and show_payloads:
        entry["result"] = result
    entry |= {
        "prerequisites": list(job.prerequisites),
        "prerequisites_pending": job.prerequisites_pending,
        "batch": job.batch,
        "failed_by": job.failed_by,
        "run_on_dependency_failure": job.run_on_dependency_failure,
    }
    now_ms = await engine.redis_time_ms(max_age_ms=0)
    return {
        "now_ms": now_ms,
        "job": entry,
        "events": await engine.job_events(job.queue, job.id),
        **await flow_view(engine, job),
    }


async def flow_view(engine: RedisEngine, job: JobInfo) -> dict[str, Any]:
    """The flow a job belongs to (none for a plain job): its jobs, prerequisites first, with
    their states, what each waits for and why it failed; and its batch's counts."""
    graph = await engine.flow_graph(job.queue, job.id, limit=FLOW_PANEL)
    if len(graph) < 2 and not job.batch and not job.prerequisites:
        return {"flow": [], "flow_complete": True, "batch": None}
    states = {node.job_id: node.state for node in graph}
    flow = [
        {
            "id": node.job_id,
            "name": node.name,
            "state": node.state,
            "waits_for": waits_for(node, states),
            "failure": failure(node),
            "prerequisites": node.prerequisites,
            "dependents": node.dependents,
            "batch": node.batch_id,
        }
        for node in graph
    ]
    batch = None
    if job.batch:
        with contextlib.suppress(JobNotFound):  # expired after its last member ended
            batch = await engine.batch_result(job.queue, job.batch)
    return {"flow": flow, "flow_complete": len(graph) < FLOW_PANEL, "batch": batch}


async def queue_view(
    engine: RedisEngine,
    queue: str,
    *,
    ready_offset: int,
    delayed_offset: int,
    show_payloads: bool,
    waiting_offset: int = 0,
) -> dict[str, Any]:
    """One queue: whether it is paused, a page each of its ready, delayed and waiting jobs."""
    now_ms = await engine.redis_time_ms(max_age_ms=0)
    ready = await engine.ready_jobs(queue, offset=ready_offset, limit=QUEUE_PAGE, with_payload=show_payloads)
    delayed = await engine.delayed_jobs(
        queue, offset=delayed_offset, limit=QUEUE_PAGE, with_payload=show_payloads
    )
    waiting = await engine.waiting_jobs(
        queue, offset=waiting_offset, limit=QUEUE_PAGE, with_payload=show_payloads
    )
    oldest = (await engine.oldest_ready_ms([queue]))[queue]
    [paused] = await engine.paused([queue])
    return {
        "now_ms": now_ms,
        "queue": queue,
        "paused": paused,
        "show_payloads": show_payloads,
        "latency_ms": _age(now_ms, oldest),
        "ready": _queue_page(ready, show_payloads),
        "delayed": _queue_page(delayed, show_payloads),
        "waiting": _queue_page(waiting, show_payloads),
    }


def _queue_page(page: QueuePage, show_payloads: bool) -> dict[str, Any]:
    jobs = []
    for job in page.jobs:
        entry = {
            "id": job.id,
            "name": job.name,
            "due_ms": job.due_ms,
            "created_ms": job.created_ms,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "priority": job.priority,
        }
        if show_payloads:
            entry["payload"] = job.payload
        jobs.append(entry)
    return {"total": page.total, "offset": page.offset, "limit": QUEUE_PAGE, "jobs": jobs}


async def running_jobs(
    engine: RedisEngine,
    queues: Sequence[str],
    workers: Sequence[WorkerInfo],
    now_ms: int,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Jobs in the running sets (the truth), with worker, attempt and how long they have run.

    The start time comes from the worker's heartbeat; a job that started since its last
    heartbeat has none yet.
    """
    started = {(job.queue, job.id): job.started_ms for w in workers for job in w.running}
    found: list[dict[str, Any]] = []
    for job in await engine.running_jobs(queues, limit):
        since = started.get((job.queue, job.id))
        found.append(
            {
                "queue": job.queue,
                "id": job.id,
                "name": job.name,
                "worker": job.worker,
                "attempt": job.attempts + 1,
                "max_attempts": job.max_attempts,
                "runs": job.runs,
                "lease_deadline_ms": job.lease_deadline_ms,
                "started_ms": since,
                "run_ms": None if since is None else max(0, now_ms - since),
            }
        )
    found.sort(key=lambda j: (j["started_ms"] is None, j["started_ms"] or 0))
    return found
