"""The `pause` and `resume` commands of the command line.

aiojobs-redis pause QUEUE [QUEUE ...] [--new]
aiojobs-redis resume QUEUE [QUEUE ...]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .engine import RedisEngine
from .flow import unknown_queues
from .keys import validate_queue

PAUSE_DESCRIPTION = (
    "Pause queues: no worker starts another of their jobs until they are resumed. Jobs "
    "running now run to their end (a retry waits in the paused queue); dispatch still stores "
    "jobs and delayed jobs still become ready, to wait there. A sharded queue is paused with "
    "its shards. The pause is kept in Redis: it outlasts worker and Redis restarts."
)
RESUME_DESCRIPTION = "Resume paused queues (with their shards): idle workers start their jobs at once."
EPILOG = "exit status: 0 when every queue is paused (resumed) now, also if it was already; 1 on an error."


COMMANDS = {
    "pause": ("pause queues: workers start none of their jobs until resumed", PAUSE_DESCRIPTION),
    "resume": ("resume paused queues", RESUME_DESCRIPTION),
}


def add_commands(commands: Any, connection: argparse.ArgumentParser) -> None:
    for name, (summary, description) in COMMANDS.items():
        command = commands.add_parser(
            name, parents=[connection], help=summary, description=description, epilog=EPILOG
        )
        command.add_argument("queues", nargs="+", metavar="QUEUE", help=f"a queue to {name}")
        if name == "pause":
            command.add_argument(
                "--new",
                action="store_true",
                help="pause a queue no job or worker has used yet (default: refused, as a typo)",
            )


async def run(engine: RedisEngine, args: argparse.Namespace) -> int:
    queues = [validate_queue(q) for q in dict.fromkeys(args.queues)]  # all checked before any change
    if not getattr(args, "new", False):
        unknown = unknown_queues(queues, await engine.known_queues())
        if unknown:
            hint = " (pass --new to pause it before first use)" if args.command == "pause" else ""
            print(
                f"aiojobs-redis: error: unknown queue {', '.join(map(repr, unknown))}: no job was "
                f"dispatched to it and no worker served it{hint}; see `aiojobs-redis stats`",
                file=sys.stderr,
            )
            return 1
    for queue in queues:
        if args.command == "pause":
            print(f"paused {queue}" if await engine.pause(queue) else f"{queue} was paused already")
        else:
            print(f"resumed {queue}" if await engine.resume(queue) else f"{queue} was not paused")
    return 0
