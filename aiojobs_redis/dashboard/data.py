"""What the dashboard shows, read from Redis as one JSON-ready snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from ..engine import RedisEngine
from ..errors import MalformedJob
from ..records import JobInfo, WorkerInfo


async def snapshot(
    engine: RedisEngine,
    *,
    minutes: int = 60,
    failed_limit: int = 50,
    running_limit: int = 100,
    events_limit: int = 50,
    show_payloads: bool = False,
) -> dict[str, Any]:
    """Queues with counts and throughput, failed and running jobs, alive workers, recent events.

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
        tg.start_soon(read, "failed", failed_jobs(engine, failed_limit, show_payloads))
        tg.start_soon(read, "workers", engine.alive_workers(now_ms))
        tg.start_soon(read, "events", engine.recent_events(queues, events_limit))
    workers: list[WorkerInfo] = parts["workers"]
    return {
        "now_ms": now_ms,
        "minutes": minutes,
        "show_payloads": show_payloads,
        "queues": [
            {
                "queue": s.queue,
                "ready": s.ready,
                "delayed": s.delayed,
                "running": s.running,
                "failed": s.failed,
                "throughput": parts["throughput"][s.queue],
            }
            for s in stats
        ],
        "failed": parts["failed"],
        "running": await running_jobs(engine, queues, workers, now_ms, running_limit),
        "workers": workers,
        "events": parts["events"],
    }


async def failed_jobs(engine: RedisEngine, limit: int, show_payloads: bool) -> list[dict[str, Any]]:
    """The newest failed jobs, with error and traceback; payloads only when asked."""
    try:
        jobs = await engine.failed_list(limit=limit, with_payload=show_payloads)
    except MalformedJob:  # a payload that is not JSON: list them without payloads
        jobs = await engine.failed_list(limit=limit)
    return [_failed_entry(job, show_payloads) for job in jobs]


def _failed_entry(job: JobInfo, show_payloads: bool) -> dict[str, Any]:
    error = job.error or {}
    entry: dict[str, Any] = {
        "queue": job.queue,
        "id": job.id,
        "name": job.name,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "runs": job.runs,
        "stalls": job.stalls,
        "created_ms": job.created_ms,
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
