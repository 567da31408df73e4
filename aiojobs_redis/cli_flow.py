"""The `flow` and `batch` commands: where a chain, batch or depends_on flow stands.

aiojobs-redis flow JOB_ID [--queue Q] [--json]
aiojobs-redis batch BATCH_ID --queue Q [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from .engine import RedisEngine
from .errors import EngineError, JobNotFound
from .keys import validate_job_id
from .records import JobInfo
from .workflow_store import FlowJob
from .workflows import BatchResult

FLOW_LIMIT = 200  # jobs a `flow` command shows, at most

FLOW_DESCRIPTION = (
    "Show the flow (chain, batch, depends_on) a job belongs to: one line per job with its "
    "state (waiting, ready, delayed, running, done, failed, or gone: no record left), what "
    "it waits for, and why it failed. A done job's record may be gone, and with it the "
    "links to what waited for it: ask about a later job of the flow to see the rest."
)
BATCH_DESCRIPTION = "Show where a batch stands: its members in all, not ended yet, done and failed."
EPILOG = "exit status: 0 when shown; 1 when the job (batch) is unknown, or on an error."


def add_commands(commands: Any, connection: argparse.ArgumentParser) -> None:
    flow = commands.add_parser(
        "flow",
        parents=[connection],
        help="the flow a job belongs to: each job's state and what it waits for",
        description=FLOW_DESCRIPTION,
        epilog=EPILOG,
    )
    flow.add_argument("id", metavar="JOB_ID", help="a job of the flow")
    flow.add_argument("--queue", help="the flow's queue (default: looked up among the known queues)")
    flow.add_argument("--json", action="store_true", help="the flow as one JSON object")
    batch = commands.add_parser(
        "batch",
        parents=[connection],
        help="where a batch stands",
        description=BATCH_DESCRIPTION,
        epilog=EPILOG,
    )
    batch.add_argument("id", metavar="BATCH_ID", help="the batch id (batch().dispatch() returns it)")
    batch.add_argument("--queue", required=True, help="the batch's queue")
    batch.add_argument("--json", action="store_true", help="the batch as one JSON object")


async def run(engine: RedisEngine, args: argparse.Namespace) -> int:
    if args.command == "batch":
        return await _batch(engine, args)
    return await _flow(engine, args)


async def _flow(engine: RedisEngine, args: argparse.Namespace) -> int:
    job_id = validate_job_id(args.id)
    queue = args.queue or await engine.flow_queue(job_id)
    jobs = await engine.flow_graph(queue, job_id, limit=FLOW_LIMIT) if queue else []
    root = next((job for job in jobs if job.job_id == job_id), None)
    if root is None or root.state == "gone":
        # A plain job waiting inline in a ready list has no record of its own: not in a flow.
        info = await engine.find_job(job_id, queue)
        if info is None:
            where = f" in queue {queue}" if args.queue else ""
            hint = "" if args.queue else "; a job still waiting in a ready list needs --queue Q"
            print(f"no job with id {job_id}{where}{hint}", file=sys.stderr)
            return 1
        queue = info.queue
        jobs = [_plain(info)]
    assert queue is not None
    batches = await _batches(engine, queue, jobs)
    if args.json:
        record = {
            "job": job_id,
            "queue": queue,
            "jobs": [dataclasses.asdict(job) for job in jobs],
            "batches": [dataclasses.asdict(b) for b in batches],
            "complete": len(jobs) < FLOW_LIMIT,
        }
        print(orjson.dumps(record).decode())
        return 0
    print(format_flow(job_id, queue, jobs, batches))
    return 0


def _plain(info: JobInfo) -> FlowJob:
    return FlowJob(
        info.id, info.state or "?", info.name or "", reason=str((info.error or {}).get("reason", ""))
    )


async def _batches(engine: RedisEngine, queue: str, jobs: Sequence[FlowJob]) -> list[BatchResult]:
    """The batches of the flow's jobs still on record."""
    found = []
    for batch_id in sorted({job.batch_id for job in jobs if job.batch_id}):
        try:
            found.append(await engine.batch_result(queue, batch_id))
        except JobNotFound:
            continue  # expired (failed_ttl after its last member ended)
    return found


def waits_for(job: FlowJob, states: dict[str, str]) -> str:
    """What a job waits for: its prerequisites not done yet, or its batch (a callback)."""
    if job.state != "waiting":
        return "-"
    pending = [p for p in job.prerequisites if states.get(p) != "done"]
    if pending:
        return ", ".join(pending)
    return f"batch {job.batch_id}" if job.batch_id else "-"


def failure(job: FlowJob) -> str:
    """Why a job failed: its reason, and the prerequisite that failed it."""
    if job.state != "failed":
        return ""
    return job.reason + (f" (by {job.failed_by})" if job.failed_by else "")


def format_flow(job_id: str, queue: str, jobs: Sequence[FlowJob], batches: Sequence[BatchResult]) -> str:
    states = {job.job_id: job.state for job in jobs}
    lines = [f"flow of job {job_id} in queue {queue}: {len(jobs)} job(s), prerequisites first"]
    if len(jobs) >= FLOW_LIMIT:
        lines[0] += f" (the first {FLOW_LIMIT} found)"
    lines.append(f"  {'id':<20} {'job':<32} {'state':<8} {'waits for':<28} failure")
    for job in jobs:
        mark = "*" if job.job_id == job_id else " "
        lines.append(
            f"{mark} {job.job_id:<20} {(job.name or '?')[:32]:<32} {job.state:<8} "
            f"{waits_for(job, states)[:200]:<28} {failure(job)}".rstrip()
        )
    lines += [f"\n{batch_line(b)}" for b in batches]
    return "\n".join(lines)


def batch_line(result: BatchResult) -> str:
    return (
        f"batch {result.batch_id}: {result.total} member(s), {result.pending} pending, "
        f"{result.done} done, {result.failed} failed"
    )


async def _batch(engine: RedisEngine, args: argparse.Namespace) -> int:
    try:
        result = await engine.batch_result(args.queue, args.id)
    except JobNotFound as exc:
        print(f"aiojobs-redis: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps({"queue": args.queue, **dataclasses.asdict(result)}).decode())
        return 0
    print(f"batch      {result.batch_id}\nqueue      {args.queue}")
    print(f"members    {result.total}: {result.pending} pending, {result.done} done, {result.failed} failed")
    if result.failed_ids:
        print(f"failed     {' '.join(result.failed_ids)}")
    if result.failed > len(result.failed_ids):
        print(f"           (the first {len(result.failed_ids)} failed ids are kept)")
    return 0


# -- one job's links, for the `job` and `failed show` commands --------------------------------


async def links_of(engine: RedisEngine, job: JobInfo) -> tuple[list[FlowJob], list[FlowJob]]:
    """A job's prerequisites and dependents with their states; none when they cannot be read."""
    try:
        return await engine.flow_links(job.queue, job.id)
    except EngineError as exc:  # extra, as the events are: an ACL without SMEMBERS, say
        print(f"aiojobs-redis: flow not shown: {exc}", file=sys.stderr)
        return [], []


def flow_lines(job: JobInfo, prerequisites: Sequence[FlowJob], dependents: Sequence[FlowJob]) -> list[str]:
    """A job's place in its flow, as lines of `format_job`; none for a plain job."""
    lines = []
    if job.batch:
        lines.append(f"batch      {job.batch}")
    if job.prerequisites:
        said = ", ".join(f"{p.job_id} ({p.state})" for p in prerequisites) or " ".join(job.prerequisites)
        more = len(job.prerequisites) - len(prerequisites)
        said += f" and {more} more" if prerequisites and more > 0 else ""
        lines.append(
            f"needs      {said}; {job.prerequisites_pending} of {len(job.prerequisites)} not done yet"
        )
        if job.run_on_dependency_failure:
            lines.append("           (it runs even if one of them fails)")
    if dependents:
        lines.append(f"needed by  {', '.join(f'{d.job_id} ({d.state})' for d in dependents)}")
    if job.failed_by:
        lines.append(
            f"failed by  {job.failed_by} (its prerequisite, failed or aborted; retrying it revives this job)"
        )
    return lines


def links_json(prerequisites: Sequence[FlowJob], dependents: Sequence[FlowJob]) -> dict[str, Any]:
    return {
        "prerequisite_states": {p.job_id: p.state for p in prerequisites},
        "dependents": {d.job_id: d.state for d in dependents},
    }
