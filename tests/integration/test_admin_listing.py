"""The paged views of listing.py (failed page, one job, ready and delayed jobs, latency,
lifetime totals), against a real Redis."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from support.engine_calls import fail_new_jobs

from aiojobs_redis import Job, RedisEngine, listing
from aiojobs_redis.keys import INLINE_TAG

pytestmark = pytest.mark.anyio

QUEUE = "listing"
OTHER = "listing-other"
LEASE_MS = 30_000


class Mail(Job):
    queue = QUEUE
    name = "listing.Mail"
    attempts = 3

    async def handle(self) -> None:
        return None


class Invoice(Job):
    queue = OTHER
    name = "listing.Invoice"

    async def handle(self) -> None:
        return None


def error(message: str, kind: str = "builtins.RuntimeError") -> dict[str, Any]:
    return {"reason": "error", "type": kind, "message": message, "traceback": f"Traceback...\n{message}"}


async def fail_jobs(engine: RedisEngine, clock: Any, job: Job, count: int, message: str) -> list[str]:
    """`count` failed jobs, one ms apart (the last is the newest)."""
    payloads = [{"n": i} for i in range(count)]
    return await fail_new_jobs(
        engine,
        type(job),
        payloads,
        lambda job_id: error(f"{message} {job_id}"),
        between=lambda: clock.advance(1),
    )


async def test_a_failed_page_gives_the_total_and_pages_through_every_queue(
    clocked_engine: RedisEngine, clock: Any
) -> None:
    mails = await fail_jobs(clocked_engine, clock, Mail(), 100, "smtp down")
    invoices = await fail_jobs(clocked_engine, clock, Invoice(), 24, "pdf broken")
    newest_first = [*reversed(invoices), *reversed(mails)]

    first = await clocked_engine.failed_page(limit=100)
    second = await clocked_engine.failed_page(offset=100, limit=100)
    only_mail = await clocked_engine.failed_page(QUEUE, offset=10, limit=5)

    assert (first.total, first.matched, first.complete) == (124, 124, True)
    assert [j.id for j in first.jobs] == newest_first[:100]
    assert (second.total, [j.id for j in second.jobs]) == (124, newest_first[100:])
    assert only_mail.total == 100 and [j.id for j in only_mail.jobs] == list(reversed(mails))[10:15]
    assert first.jobs[0].error is not None and first.jobs[0].payload is None


async def test_failures_in_one_millisecond_list_the_later_job_first_across_queues(
    clocked_engine: RedisEngine, clock: Any
) -> None:
    """A tie in failure time goes to the later id, in one queue (ZREVRANGE) and across queues."""
    payloads = [{"n": 0}]
    [mail] = await fail_new_jobs(clocked_engine, Mail, payloads, lambda _: error("smtp down"))
    [invoice] = await fail_new_jobs(clocked_engine, Invoice, payloads, lambda _: error("pdf broken"))
    page = await clocked_engine.failed_page(limit=10)
    assert [j.id for j in page.jobs] == [invoice, mail]
    assert [j.id for j in await clocked_engine.failed_list(limit=10)] == [invoice, mail]


async def test_a_failed_page_filters_by_name_and_error_text(clocked_engine: RedisEngine, clock: Any) -> None:
    mails = await fail_jobs(clocked_engine, clock, Mail(), 6, "SMTP down")
    invoices = await fail_jobs(clocked_engine, clock, Invoice(), 4, "pdf broken")

    by_name = await clocked_engine.failed_page(name="invoice", limit=3)
    by_text = await clocked_engine.failed_page(error="smtp", offset=1, limit=2, with_payload=True)
    both = await clocked_engine.failed_page(name="mail", error="pdf")

    assert (by_name.total, by_name.matched, by_name.complete) == (10, 4, True)
    assert [j.id for j in by_name.jobs] == list(reversed(invoices))[:3]
    assert by_text.matched == 6 and [j.id for j in by_text.jobs] == list(reversed(mails))[1:3]
    assert by_text.jobs[0].payload == {"n": 4}
    assert (both.matched, both.jobs) == (0, [])


async def test_a_filtered_page_reads_no_more_than_its_bound_and_says_so(
    clocked_engine: RedisEngine, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fail_jobs(clocked_engine, clock, Mail(), 8, "timeout")
    monkeypatch.setattr(listing, "FILTER_SCAN_MAX", 5)

    page = await clocked_engine.failed_page(error="timeout")

    assert (page.total, page.scanned, page.matched, page.complete) == (8, 5, 5, False)


async def test_find_job_finds_a_failed_job_without_its_queue(clocked_engine: RedisEngine, clock: Any) -> None:
    [job_id] = await fail_jobs(clocked_engine, clock, Invoice(), 1, "pdf broken")

    found = await clocked_engine.find_job(job_id, with_payload=True)

    assert found is not None
    assert (found.queue, found.name, found.state, found.payload) == (
        OTHER,
        "listing.Invoice",
        "failed",
        {"n": 0},
    )
    assert found.error is not None and found.error["message"] == f"pdf broken {job_id}"
    assert found.created_ms is not None and found.started_ms is not None and found.finished_ms is not None
    assert found.created_ms <= found.started_ms < found.finished_ms
    assert await clocked_engine.find_job("nosuchjob") is None


async def test_find_job_finds_a_job_waiting_inline_when_given_its_queue(clocked_engine: RedisEngine) -> None:
    job_id = await Mail().dispatch({"to": "a@example.com"})

    found = await clocked_engine.find_job(job_id, QUEUE, with_payload=True)

    assert found is not None and (found.state, found.payload) == ("ready", {"to": "a@example.com"})


async def test_ready_jobs_decode_inline_records_and_read_hashes_of_ids(
    clocked_engine: RedisEngine, clock: Any
) -> None:
    [retried] = await fail_jobs(clocked_engine, clock, Mail(), 1, "x")
    first = await Mail().dispatch({"n": "first"})
    clock.advance(50)
    await clocked_engine.failed_retry([retried])  # back at the tail, as a job id
    inline = await Mail().dispatch_many([{"n": i} for i in range(3)])

    page = await clocked_engine.ready_jobs(QUEUE, limit=3, with_payload=True)
    rest = await clocked_engine.ready_jobs(QUEUE, offset=3, limit=10)

    assert (page.total, [j.id for j in page.jobs]) == (5, [first, retried, inline[0]])
    assert [j.payload for j in page.jobs] == [{"n": "first"}, {"n": 0}, {"n": 0}]
    assert [(j.name, j.state, j.max_attempts) for j in page.jobs] == [("listing.Mail", "ready", 3)] * 3
    assert page.jobs[1].due_ms == clock.now_ms  # made ready by the requeue
    assert [j.id for j in rest.jobs] == inline[1:] and rest.jobs[0].payload is None


async def test_delayed_jobs_say_when_each_is_due(clocked_engine: RedisEngine, clock: Any) -> None:
    later = await Mail().dispatch({"n": 1}, delay="+2 minutes")
    sooner = await Mail().dispatch({"n": 2}, delay="+1 minute")

    page = await clocked_engine.delayed_jobs(QUEUE)

    assert (page.total, [j.id for j in page.jobs]) == (2, [sooner, later])
    assert [j.due_ms for j in page.jobs] == [clock.now_ms + 60_000, clock.now_ms + 120_000]
    assert page.jobs[0].name == "listing.Mail" and page.jobs[0].state == "delayed"


async def test_oldest_ready_ms_is_when_the_head_became_ready(
    clocked_engine: RedisEngine, clock: Any, raw_redis: Redis
) -> None:
    dispatched_at = clock.now_ms
    await Mail().dispatch({})
    clock.advance(5_000)
    [failed] = await fail_jobs(clocked_engine, clock, Invoice(), 1, "x")
    clock.advance(7_000)
    await clocked_engine.failed_retry([failed])

    oldest = await clocked_engine.oldest_ready_ms([QUEUE, OTHER, "listing-empty"])

    assert oldest == {QUEUE: dispatched_at, OTHER: clock.now_ms, "listing-empty": None}
    head: Any = await raw_redis.lindex(clocked_engine.keys(QUEUE).ready, 0)
    assert head is not None and head.startswith(INLINE_TAG)  # read from the record, not a hash


async def test_lifetime_totals_add_up_every_flush_and_do_not_expire(
    engine: RedisEngine, raw_redis: Redis
) -> None:
    minute = (await engine.redis_time_ms(max_age_ms=0)) // 60_000
    await engine.record_events(
        {QUEUE: ([f"{minute}:s", 3, f"{minute}:f", 1, f"{minute}:r", 2], [])}, events_max=10
    )
    await engine.record_events({QUEUE: ([f"{minute + 1}:s", 4], [])}, events_max=10)

    totals = await engine.lifetime_totals([QUEUE, OTHER])

    assert totals == {QUEUE: listing.Totals(7, 1, 2), OTHER: listing.Totals()}
    assert await raw_redis.pttl(engine.keys(QUEUE).totals) == -1
    series = (await engine.throughput([QUEUE], minute * 60_000, minutes=1))[QUEUE]
    assert (series.succeeded, series.failed, series.retried) == ([3], [1], [2])


async def test_pages_refuse_a_negative_offset(engine: RedisEngine) -> None:
    with pytest.raises(ValueError, match="offset"):
        await engine.failed_page(offset=-1)
    assert orjson.dumps((await engine.ready_jobs(QUEUE)).jobs) == b"[]"
