"""The `abort` command of the command line.

aiojobs-redis abort JOB_ID [--queue Q] [--reason TEXT]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .engine import RedisEngine

_WHY_NOT = {
    "already_final": "it has ended already (done, failed or aborted)",
    "not_found": "no such job",
    "too_new": "its record is of a newer data format; abort it with a newer release",
}


def add_command(commands: Any, connection: argparse.ArgumentParser) -> None:
    abort = commands.add_parser(
        "abort",
        parents=[connection],
        help="abort a job: it never runs, or its run is cancelled; it ends in the failed set",
        description="Abort a job that has not ended: a waiting job (ready, delayed, waiting for a "
        "retry) never runs; a running one is cancelled by its worker within about a second. It "
        "uses no attempt and ends in the failed set with reason 'aborted' ('failed retry' runs it "
        "again). Exit status 1 when the job was not aborted.",
    )
    abort.add_argument("id", metavar="JOB_ID", help="the job to abort")
    abort.add_argument("--queue", help="the job's queue (default: look in every queue)")
    abort.add_argument("--reason", metavar="TEXT", help="why, kept as the error's message")


async def run(engine: RedisEngine, args: argparse.Namespace) -> int:
    outcome = await engine.abort_job(args.id, args.queue, reason=args.reason)
    if outcome.aborted:
        was = "" if outcome.state == "replayed" else f" (it was {outcome.state})"
        print(f"aborted {args.id} in {outcome.queue}{was}")
        return 0
    print(f"not aborted: {args.id}: {_WHY_NOT.get(outcome.state, outcome.state)}", file=sys.stderr)
    return 1
