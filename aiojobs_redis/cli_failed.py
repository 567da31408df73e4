"""The `failed` commands of the command line: list, show, retry, forget, flush.

aiojobs-redis failed list [--queue Q] [--limit N] [--offset N] [--name TEXT] [--grep TEXT] [--json]
aiojobs-redis failed show JOB_ID [--queue Q] [--payload] [--json]
aiojobs-redis failed retry JOB_ID... | --all [--queue Q]
aiojobs-redis failed forget JOB_ID... [--queue Q]
aiojobs-redis failed flush [--queue Q] [--yes]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from anyio import to_thread

from .cli_flow import flow_lines, links_json, links_of
from .engine import RedisEngine
from .errors import EngineError, MalformedJob
from .listing import MAX_PAGE, FailedPage
from .records import Event, JobInfo
from .workflow_store import FlowJob


def add_commands(
    commands: Any,
    connection: argparse.ArgumentParser,
    count: Callable[[str], int],
    offset: Callable[[str], int],
) -> None:
    """The `failed` command and its subcommands; `count` parses an int >= 1, `offset` one >= 0."""
    failed = commands.add_parser("failed", help="inspect and act on failed jobs")
    failed_cmds = failed.add_subparsers(dest="failed_command", required=True, metavar="ACTION")

    listing = failed_cmds.add_parser("list", parents=[connection], help="list failed jobs, newest first")
    listing.add_argument("--queue", help="only this queue's failed jobs (default: every queue)")
    listing.add_argument(
        "--limit", type=count, default=100, help=f"jobs to show (default: 100, at most {MAX_PAGE})"
    )
    listing.add_argument("--offset", type=offset, default=0, help="skip this many of the newest (default: 0)")
    listing.add_argument("--name", metavar="TEXT", help="only jobs whose name holds TEXT (any case)")
    listing.add_argument(
        "--grep", metavar="TEXT", help="only jobs whose error (reason, type, message) holds TEXT (any case)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    show = failed_cmds.add_parser(
        "show", parents=[connection], help="one job: its record, error and traceback"
    )
    add_one_job_arguments(show, "the failed job to show")

    retry = failed_cmds.add_parser(
        "retry", parents=[connection], help="run failed jobs again, with fresh attempts"
    )
    retry.add_argument("ids", nargs="*", metavar="JOB_ID", help="the failed jobs to run again")
    retry.add_argument("--all", action="store_true", help="retry every failed job (of --queue)")
    retry.add_argument("--queue", help="the queue the jobs failed in (default: look in every queue)")
    retry.set_defaults(check=_check_retry(retry))

    forget = failed_cmds.add_parser("forget", parents=[connection], help="delete failed jobs")
    forget.add_argument("ids", nargs="+", metavar="JOB_ID", help="the failed jobs to delete")
    forget.add_argument("--queue", help="the queue the jobs failed in (default: look in every queue)")

    flush = failed_cmds.add_parser("flush", parents=[connection], help="delete every failed job")
    flush.add_argument("--queue", help="only this queue's failed jobs (default: every queue)")
    flush.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation (needed when not on a terminal)"
    )


def add_one_job_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The arguments of a command about one job: its id, --queue, --payload, --json."""
    parser.add_argument("id", metavar="JOB_ID", help=what)
    parser.add_argument("--queue", help="the job's queue (needed for a job still waiting to run)")
    parser.add_argument("--payload", action="store_true", help="print the payload too (it may hold secrets)")
    parser.add_argument("--json", action="store_true", help="the record as one JSON object")


def _check_retry(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], None]:
    def check(args: argparse.Namespace) -> None:
        if not args.ids and not args.all:
            parser.error("give job ids, or --all to retry every failed job")
        if args.ids and args.all:
            parser.error("give job ids or --all, not both")

    return check


def check_args(args: argparse.Namespace) -> None:
    """Exit with the subcommand's usage when its arguments do not fit together."""
    check = getattr(args, "check", None)
    if check is not None:
        check(args)


async def run(engine: RedisEngine, args: argparse.Namespace) -> int:
    command = args.failed_command
    if command == "list":
        return await _list(engine, args)
    if command == "show":
        return await _show(engine, args)
    if command == "retry":
        missing = [] if args.all else await engine.missing_failed(args.ids, queue=args.queue)
        _say_missing(missing)
        report = await engine.failed_retry_report(None if args.all else args.ids, queue=args.queue)
        for job_id, holder in report.held.items():
            print(f"{job_id} skipped: a job with the same unique key is live ({holder})", file=sys.stderr)
        for job_id, prerequisite in report.blocked.items():
            print(
                f"{job_id} skipped: its prerequisite {prerequisite} is failed or gone; "
                "retry that one, or forget this",
                file=sys.stderr,
            )
        count = report.requeued
        also = f"; {report.revived} job(s) of their flows wait again" if report.revived else ""
        print(f"requeued {count} job(s){also}")
        return 0 if args.all or count == len(args.ids) else 1
    if command == "forget":
        _say_missing(await engine.missing_failed(args.ids, queue=args.queue))
        count = await engine.failed_forget(args.ids, queue=args.queue)
        print(f"forgot {count} job(s)")
        return 0 if count == len(args.ids) else 1
    return await _flush(engine, args)


def _say_missing(ids: Sequence[str]) -> None:
    for job_id in ids:
        print(f"no failed job with id {job_id}", file=sys.stderr)


async def _list(engine: RedisEngine, args: argparse.Namespace) -> int:
    if args.offset < 0:
        print("aiojobs-redis: error: --offset must be >= 0", file=sys.stderr)
        return 2
    page = await engine.failed_page(
        args.queue, offset=args.offset, limit=min(args.limit, MAX_PAGE), name=args.name, error=args.grep
    )
    if args.json:
        for job in page.jobs:
            print(orjson.dumps(job).decode())
    else:
        _print_table(page.jobs)
    notice = page_notice(page, filtered=bool(args.name or args.grep))
    if notice:
        # With --json, stdout stays JSON lines only.
        print(notice, file=sys.stderr if args.json else sys.stdout)
    return 0


def page_notice(page: FailedPage, *, filtered: bool) -> str:
    """ "showing 1-100 of 124 failed jobs", when the page does not show them all."""
    shown = len(page.jobs)
    of = page.matched if filtered else page.total
    if shown == of and page.offset == 0 and page.complete:
        return ""
    first = page.offset + 1 if shown else page.offset
    what = f"{of} matching ({page.total} failed in all)" if filtered else f"{of} failed jobs"
    notice = f"showing {first}-{page.offset + shown} of {what}" if shown else f"showing none of {what}"
    if page.offset + shown < of:
        notice += f"; --offset {page.offset + shown} for more"
    if not page.complete:
        notice += f"; searched only the newest {page.scanned}"
    return notice


def _print_table(jobs: Sequence[JobInfo]) -> None:
    if not jobs:
        print("no failed jobs")
        return
    print(f"{'id':<20} {'queue':<16} {'job':<36} {'attempts':>8}  {'failed at':<20} error")
    for job in jobs:
        attempts = f"{job.attempts}/{job.max_attempts or '?'}"
        print(
            f"{job.id:<20} {job.queue:<16} {(job.name or '?')[:36]:<36} {attempts:>8}  "
            f"{_when(job.finished_ms):<20} {_summary(job.error)[:200]}"
        )


def _stamp(ms: int | None, note: str = "", missing: str = "-") -> str:
    return f"{_when(ms)} UTC{note}" if ms else missing


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _summary(error: dict[str, Any] | None) -> str:
    error = error or {}
    message = str(error.get("message", "")).partition("\n")[0]  # one row per job: notes follow on `show`
    return f"[{error.get('reason', '?')}] {error.get('type', '')}: {message}".strip()


async def find_one_job(engine: RedisEngine, args: argparse.Namespace) -> JobInfo | None:
    """The job of a one-job command (id, --queue, --payload)."""
    try:
        return await engine.find_job(args.id, args.queue, with_payload=args.payload)
    except MalformedJob as exc:  # a payload that is not JSON: shown without it, and said
        print(f"aiojobs-redis: {exc}", file=sys.stderr)
        return await engine.find_job(args.id, args.queue)


async def events_of(engine: RedisEngine, job: JobInfo) -> list[Event]:
    """The job's runs still in the event stream; none (and said) when they cannot be read."""
    try:
        return await engine.job_events(job.queue, job.id)
    except EngineError as exc:  # the event stream is extra: an ACL without XREVRANGE, say
        print(f"aiojobs-redis: runs not shown: {exc}", file=sys.stderr)
        return []


async def _show(engine: RedisEngine, args: argparse.Namespace) -> int:
    job = await find_one_job(engine, args)
    if job is None:
        where = f" in queue {args.queue}" if args.queue else ""
        print(f"no job with id {args.id}{where}", file=sys.stderr)
        return 1
    events = await events_of(engine, job)
    links = await links_of(engine, job)
    if args.json:
        record = orjson.loads(orjson.dumps(job)) | links_json(*links)
        if not args.payload:
            del record["payload"]
        record["events"] = events
        print(orjson.dumps(record).decode())
        return 0
    print(format_job(job, events, with_payload=args.payload, links=links))
    return 0


def format_job(
    job: JobInfo,
    events: Sequence[Event],
    *,
    with_payload: bool,
    links: tuple[Sequence[FlowJob], Sequence[FlowJob]] = ((), ()),
) -> str:
    """A job's record for a terminal: fields, its place in a flow (`links`: its prerequisites
    and dependents), runs recorded in the event stream, last error."""
    lines = [
        f"job        {job.id}",
        f"name       {job.name or '?'}",
        f"queue      {job.queue}",
        f"state      {job.state or '?'}",
        f"priority   {job.priority} (higher runs sooner; 0 is the default)",
        f"attempts   {job.attempts} of {job.max_attempts or '?'} used, {job.runs} run(s), "
        f"{job.stalls} stall(s)",
        f"dispatched {_stamp(job.created_ms)}",
        f"scheduled  {_stamp(job.scheduled_ms, ' (when it last became due to run)')}",
        f"started    {_stamp(job.started_ms, ' (its last run)', '- (never run)')}",
        f"ended      {_stamp(job.finished_ms)}",
    ]
    if job.worker:
        lines.append(f"worker     {job.worker}")
    if job.progress is not None:
        lines.append(f"progress   {orjson.dumps(job.progress).decode()}")
    lines += flow_lines(job, *links)
    runs = [e for e in events if e.kind != "started"]
    if runs:
        lines.append("\nruns still in the event stream (oldest first):")
        lines += [
            f"  {_when(e.at_ms)} UTC  attempt {e.attempt}  {e.kind}"
            + (f" after {e.duration_ms:.0f} ms" if e.duration_ms is not None else "")
            + (f": {e.error}" if e.error else "")
            for e in runs
        ]
    if job.error:
        lines.append("\nlast error (only the last attempt's error and traceback are kept):")
        lines.append(f"  {_summary(job.error)}")
        traceback = str(job.error.get("traceback") or "").rstrip()
        if traceback:
            lines.append("")
            lines.append(traceback)
    if with_payload:
        lines.append("\npayload:")
        lines.append(orjson.dumps(job.payload, option=orjson.OPT_INDENT_2).decode())
    return "\n".join(lines)


async def _flush(engine: RedisEngine, args: argparse.Namespace) -> int:
    where = f"queue {args.queue}" if args.queue else "every queue"
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                f"aiojobs-redis: failed flush deletes every failed job of {where}; "
                "stdin is not a terminal, so it cannot ask: give --yes to confirm",
                file=sys.stderr,
            )
            return 2
        total = sum(s.failed for s in await engine.stats(args.queue))
        answer = await to_thread.run_sync(_ask, f"delete {total} failed job(s) of {where}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    count = await engine.failed_flush(args.queue)
    print(f"flushed {count} job(s)")
    return 0


def _ask(question: str) -> str:
    try:
        return input(question)
    except EOFError:
        return ""
