"""The `schedules` command of the command line.

aiojobs-redis schedules list [--queue Q] [--json]
aiojobs-redis schedules remove ID [--queue Q]

Reads what the workers declared in Redis (no job code needed): each schedule's rule, the
tick last handled, when it last ran and as which job, the next tick, and the ticks skipped
(overlap: the last run still live) and missed (later than the grace after a downtime).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from .engine import RedisEngine
from .schedule_store import ScheduleRow


def add_commands(commands: Any, connection: argparse.ArgumentParser) -> None:
    schedules = commands.add_parser("schedules", help="inspect the periodic jobs' schedules")
    actions = schedules.add_subparsers(dest="schedules_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", parents=[connection], help="each schedule: rule, last and next run, skipped ticks"
    )
    listing.add_argument("--queue", help="only this queue's schedules (default: every queue)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    remove = actions.add_parser(
        "remove", parents=[connection], help="forget a schedule no longer in the code (definition and state)"
    )
    remove.add_argument("id", metavar="ID", help="the schedule's id, as `schedules list` shows it")
    remove.add_argument("--queue", help="the schedule's queue (default: look in every queue)")


async def run(engine: RedisEngine, args: argparse.Namespace) -> int:
    queues = await engine._queues(args.queue)
    if args.schedules_command == "remove":
        removed = [queue for queue in queues if await engine.remove_schedule(queue, args.id)]
        for queue in removed:
            print(f"removed schedule {args.id} of queue {queue}")
        if not removed:
            print(f"aiojobs-redis: error: no schedule {args.id!r}", file=sys.stderr)
            return 1
        return 0
    rows = await engine.schedule_rows(queues)
    now = await engine.redis_time_ms()
    if args.json:
        for row in rows:
            print(orjson.dumps(as_json(row)).decode())
        return 0
    if not rows:
        print("no schedules (a worker declares those of the Job classes it imports when it starts)")
        return 0
    header = ("QUEUE", "SCHEDULE", "RULE", "LAST RUN", "NEXT", "SKIPPED", "MISSED", "SCHEDULER SEEN")
    table = [header] + [
        (
            row.queue,
            row.id,
            row.rule,
            _when(row.last_run_ms),
            _when(row.next_tick_ms),
            str(row.skipped),
            str(row.missed),
            _ago(row.seen_ms, now),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def as_json(row: ScheduleRow) -> dict[str, Any]:
    return {
        "queue": row.queue,
        "id": row.id,
        "definition": row.definition,
        "last_tick_ms": row.last_tick_ms,
        "last_run_ms": row.last_run_ms,
        "last_job_id": row.last_job_id,
        "next_tick_ms": row.next_tick_ms,
        "skipped": row.skipped,
        "missed": row.missed,
        "scheduler_seen_ms": row.seen_ms,
    }


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _ago(ms: int | None, now: int) -> str:
    return "never" if ms is None else f"{max(0, now - ms) / 1000:.0f} s ago"
