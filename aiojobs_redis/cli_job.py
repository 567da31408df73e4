"""The `job` command: one job by id, whatever its state, with its progress and kept result.

aiojobs-redis job JOB_ID [--queue Q] [--payload] [--json]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from .cli_failed import add_one_job_arguments, events_of, find_one_job, format_job
from .cli_flow import links_json, links_of
from .engine import RedisEngine


def add_command(commands: Any, connection: argparse.ArgumentParser) -> None:
    job = commands.add_parser(
        "job", parents=[connection], help="one job: its state, progress, kept result and last error"
    )
    add_one_job_arguments(job, "the job to show")


async def run(engine: RedisEngine, args: argparse.Namespace) -> int:
    job = await find_one_job(engine, args)
    queues = [job.queue] if job is not None else [args.queue] if args.queue else await engine.known_queues()
    kept = await _kept_result(engine, args.id, queues)
    if job is None and kept is None:
        where = f" in queue {args.queue}" if args.queue else ""
        waiting = "" if args.queue else "; a job still waiting in a ready list needs --queue Q"
        print(
            f"no job with id {args.id}{where} (a finished job is kept only with keep_result{waiting})",
            file=sys.stderr,
        )
        return 1
    links = await links_of(engine, job) if job is not None else ([], [])
    if args.json:
        record: dict[str, Any] = {"id": args.id}
        if job is not None:
            record = orjson.loads(orjson.dumps(job)) | links_json(*links)
            if not args.payload:
                del record["payload"]
        if kept is not None:
            record.update(queue=kept[0], state="done", result=kept[1])
        print(orjson.dumps(record).decode())
        return 0
    if job is not None:
        events = await events_of(engine, job)
        print(format_job(job, events, with_payload=args.payload, links=links))
    else:
        assert kept is not None
        print(f"job        {args.id}\nqueue      {kept[0]}")
        print("state      done (its record is gone; its result is kept)")
    if kept is not None:
        print(f"result     {orjson.dumps(kept[1]).decode()}")
    return 0


async def _kept_result(engine: RedisEngine, job_id: str, queues: list[str]) -> tuple[str, Any] | None:
    """(queue, value) of the job's kept result, looked for in `queues`; None when none is kept."""
    for queue in queues:
        found, value = await engine.kept_result(queue, job_id)
        if found:
            return queue, value
    return None
