"""The data format's version: written in every record and under the prefix; a newer one is left alone.

A record or a format key newer than this release is never claimed, promoted, reaped, failed
or requeued: it stays exactly where it was for a worker that reads it, and the engine stops
claiming, promoting and reaping under the prefix, saying so in one log line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
import pytest
from redis.asyncio import Redis
from support.clock import FakeClock
from support.engine_calls import claim_from
from support.keyspace import delete_prefix
from support.keystate import key_state

from aiojobs_redis import Job, RedisEngine, Settings, Worker
from aiojobs_redis.doctor import check_format
from aiojobs_redis.events import RedisTelemetry
from aiojobs_redis.keys import FORMAT_VERSION, QueueKeys, format_key
from aiojobs_redis.lifecycle import WorkerCounters, WorkerView
from aiojobs_redis.versioning import FORMAT_RECHECK_MS, UNREADABLE

QUEUE = "format-it"
NEWER = FORMAT_VERSION + 1
runs: list[str] = []


class Note(Job):
    queue = QUEUE

    async def handle(self) -> None:
        runs.append(self.id or "")


class OtherNote(Note):
    queue = f"{QUEUE}-other"


def newer_inline(job_id: str, ms: int) -> bytes:
    return f"!{NEWER}:{job_id} {Note.name} 1 {ms} ".encode() + b'{"new": true}'


def newer_hash(state: str, ms: int) -> dict[Any, Any]:
    """A job hash as a newer release might write it: a field this one does not know, too."""
    return {"n": Note.name, "q": QUEUE, "p": "{}", "m": 1, "s": state, "c": ms, "d": ms, "v": NEWER, "z": "?"}


async def state(raw: Redis, prefix: str) -> dict[bytes, Any]:
    return await key_state(raw, prefix, skip=(b":wake",))


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "aiojobs_redis.versioning"]


@pytest.fixture
async def second_engine(settings: Settings, clock: FakeClock) -> AsyncIterator[RedisEngine]:
    """Another process's engine on the same prefix: it has read nothing yet."""
    async with RedisEngine(settings, clock=clock) as opened:
        yield opened
    await delete_prefix(settings.url, settings.prefix)


@pytest.mark.anyio
async def test_every_record_and_the_prefix_carry_the_version(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: FakeClock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    now_id = await Note({}).dispatch()
    later_id = await Note({}).dispatch(delay=60)
    assert await raw_redis.get(format_key(prefix)) == str(FORMAT_VERSION).encode()
    assert await clocked_engine.format_version() == FORMAT_VERSION
    entries: list[bytes] = await raw_redis.lrange(keys.ready, 0, -1)  # type: ignore[assignment]
    [entry] = entries
    assert entry.startswith(f"!{FORMAT_VERSION}:{now_id} ".encode())
    assert await raw_redis.hget(keys.job(later_id), "v") == str(FORMAT_VERSION).encode()
    now_info = await clocked_engine.get_job(QUEUE, now_id)
    assert now_info is not None and now_info.format_version == FORMAT_VERSION

    # A record of 0.1 (no version) reads as version 1, and its claim writes the version.
    await raw_redis.hset(
        keys.job("old-1"),
        mapping={"n": Note.name, "q": QUEUE, "p": "{}", "m": 1, "s": "ready", "c": 1, "d": 1},
    )
    old_info = await clocked_engine.get_job(QUEUE, "old-1")
    assert old_info is not None and old_info.format_version == 1
    await raw_redis.rpush(keys.ready, "old-1")
    claim = await claim_from(clocked_engine, QUEUE, 10, worker_id="w", request_id="r", lease_ms=30_000)
    assert [job.id for job in claim.jobs] == [now_id, "old-1"]
    for job_id in (now_id, "old-1"):
        assert await raw_redis.hget(keys.job(job_id), "v") == str(FORMAT_VERSION).encode()


@pytest.mark.anyio
@pytest.mark.parametrize(("stored", "after"), [("1", str(FORMAT_VERSION)), (str(NEWER), str(NEWER))])
async def test_the_format_key_is_raised_never_lowered(
    engine: RedisEngine, raw_redis: Redis, prefix: str, stored: str, after: str
) -> None:
    await raw_redis.set(format_key(prefix), stored)
    await engine.register_queues([QUEUE])
    assert await raw_redis.get(format_key(prefix)) == after.encode()


@pytest.mark.anyio
async def test_a_claim_stops_at_a_newer_record_and_puts_it_back_untouched(
    clocked_engine: RedisEngine,
    second_engine: RedisEngine,
    raw_redis: Redis,
    prefix: str,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = clocked_engine.keys(QUEUE)
    first = await Note({}).dispatch()
    await raw_redis.rpush(keys.ready, newer_inline("newer-1", clock.now_ms))
    await raw_redis.hset(keys.job("newer-2"), mapping=newer_hash("ready", clock.now_ms))
    await raw_redis.rpush(keys.ready, "newer-2")
    last = await Note({}).dispatch()
    queued_after_first = (await raw_redis.lrange(keys.ready, 0, -1))[1:]
    await raw_redis.delete(keys.wake)

    claim = await claim_from(clocked_engine, QUEUE, 10, worker_id="w", request_id="r1", lease_ms=30_000)
    assert [job.id for job in claim.jobs] == [first]
    assert (claim.quarantined, claim.more, claim.next_due_ms) == ([], False, -1)
    before = await state(raw_redis, prefix)
    assert before[keys.ready.encode()][1] == queued_after_first, "put back in place, in order"
    assert await raw_redis.llen(keys.wake) == 1, "a worker that reads it is woken"

    # From now on this engine leaves the prefix alone, and said so once.
    for _ in range(3):
        assert (
            await claim_from(clocked_engine, QUEUE, 10, worker_id="w", request_id="r2", lease_ms=1)
        ).jobs == []
        assert await clocked_engine.promote([QUEUE]) == (0, -1)
        assert (await clocked_engine.reap(QUEUE, max_stalls=0)).requeued == []
    assert await clocked_engine.wait_for_work([QUEUE], 0.01) is False
    assert await raw_redis.llen(keys.wake) == 1, "the wake token is left to the others"
    assert await state(raw_redis, prefix) == before
    [line] = said(caplog)
    assert f"format version {NEWER}" in line and QUEUE in line

    # An engine that has not met it yet meets the record at the head: nothing moves.
    assert (await claim_from(second_engine, QUEUE, 10, worker_id="w2", request_id="r", lease_ms=1)).jobs == []
    assert await state(raw_redis, prefix) == before
    assert last.encode() in before[keys.ready.encode()][1][-1]


@pytest.mark.anyio
async def test_a_newer_job_hash_at_the_head_is_left_in_place(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: FakeClock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    await clocked_engine.register_queues([QUEUE])
    await raw_redis.hset(keys.job("newer-1"), mapping=newer_hash("ready", clock.now_ms))
    await raw_redis.rpush(keys.ready, "newer-1")
    await Note({}).dispatch()
    before = await state(raw_redis, prefix)
    claim = await claim_from(clocked_engine, QUEUE, 10, worker_id="w", request_id="r", lease_ms=30_000)
    assert (claim.jobs, claim.quarantined, claim.more) == ([], [], False)
    assert await state(raw_redis, prefix) == before


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["delayed", "running"])
async def test_promote_and_reap_leave_a_newer_record_alone(
    where: str, clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: FakeClock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    await clocked_engine.register_queues([QUEUE])
    await raw_redis.hset(keys.job("newer-1"), mapping=newer_hash(where, clock.now_ms - 10))
    await raw_redis.zadd(keys.delayed if where == "delayed" else keys.running, {"newer-1": clock.now_ms - 10})
    ours = await Note({}).dispatch(delay=1)
    clock.advance(2)
    before = await state(raw_redis, prefix)
    if where == "delayed":
        assert await clocked_engine.promote([QUEUE]) == (0, -1)
    else:
        reaped = await clocked_engine.reap(QUEUE, max_stalls=0)
        assert (reaped.requeued, reaped.failed, reaped.trimmed) == ([], [], 0)
    assert await state(raw_redis, prefix) == before
    # Refused from then on: even this release's own due job waits for a newer worker.
    assert await clocked_engine.promote([QUEUE]) == (0, -1)
    assert await raw_redis.zscore(keys.delayed, ours) is not None


@pytest.mark.anyio
async def test_failed_retry_skips_a_newer_record(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: FakeClock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    await clocked_engine.register_queues([QUEUE])
    await raw_redis.hset(keys.job("newer-1"), mapping=newer_hash("failed", clock.now_ms))
    await raw_redis.zadd(keys.failed, {"newer-1": clock.now_ms})
    before = await state(raw_redis, prefix)
    assert await clocked_engine.failed_retry(["newer-1"], queue=QUEUE) == 0
    assert await clocked_engine.failed_retry(queue=QUEUE) == 0
    assert await state(raw_redis, prefix) == before


@pytest.mark.anyio
@pytest.mark.parametrize("stored", [str(NEWER), "junk"])
async def test_a_burst_worker_leaves_a_prefix_of_a_newer_format_alone(
    stored: str, engine: RedisEngine, raw_redis: Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The prefix moved on (or its format key cannot be read): no claim, no run, one line."""
    await raw_redis.set(format_key(prefix), stored)
    job_id = await Note({}).dispatch()  # an older producer's record: a newer worker reads it
    await Note({}).dispatch(delay=0.001)
    runs.clear()
    before = await state(raw_redis, prefix)
    worker = Worker(engine, [QUEUE], burst=True)
    with anyio.fail_after(10):
        await worker.run()
    assert runs == [] and worker.counters.claimed == 0
    after = await state(raw_redis, prefix)
    assert after == before, "nothing claimed, promoted or changed"
    assert job_id.encode() in after[QueueKeys.of(prefix, QUEUE).ready.encode()][1][0]
    assert len(said(caplog)) == 1
    assert await engine.format_version() == (NEWER if stored != "junk" else UNREADABLE)


@pytest.mark.anyio
async def test_an_older_format_key_lets_the_worker_run_and_is_raised(
    engine: RedisEngine, raw_redis: Redis, prefix: str
) -> None:
    await raw_redis.set(format_key(prefix), "1")
    job_id = await Note({}).dispatch()
    runs.clear()
    with anyio.fail_after(10):
        await Worker(engine, [QUEUE], burst=True).run()
    assert runs == [job_id]
    assert await engine.format_version() == FORMAT_VERSION


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stored", "severity", "words"),
    [
        (None, "info", "no data format version recorded"),
        (str(FORMAT_VERSION), "info", f"data format version {FORMAT_VERSION} under prefix"),
        (str(NEWER), "error", f"data format version {NEWER} under prefix"),
        ("junk", "error", "holds no data format version"),
    ],
)
async def test_doctor_reports_the_format_version(
    stored: str | None, severity: str, words: str, engine: RedisEngine, raw_redis: Redis, prefix: str
) -> None:
    if stored is not None:
        await raw_redis.set(format_key(prefix), stored)
    [finding] = await check_format(engine)
    assert (finding.severity, finding.code) == (severity, "format")
    assert words in finding.message


@pytest.mark.anyio
async def test_doctor_warns_of_live_workers_of_an_older_format(engine: RedisEngine) -> None:
    """A 0.1 worker would set this release's records aside: its heartbeat, with no format, says so."""
    telemetry = RedisTelemetry()
    telemetry._worker = WorkerView("w-new", [QUEUE], 1, WorkerCounters(), {}, engine)  # as serve() sets it
    await telemetry.heartbeat()
    now_ms = await engine.redis_time_ms(max_age_ms=0)
    [current] = await engine.alive_workers(now_ms)
    assert current.format_version == FORMAT_VERSION
    assert [f.code for f in await check_format(engine)] == ["format"]

    record = telemetry.heartbeat_record(now_ms)
    del record["format"]  # as 0.1 writes it
    record["id"] = "old-worker"
    await engine.write_heartbeat("old-worker", orjson.dumps(record), now_ms=now_ms, ttl_ms=60_000)
    findings = await check_format(engine)
    assert [(f.severity, f.code) for f in findings] == [("info", "format"), ("warning", "format-workers")]
    assert "old-worker (0.1)" in findings[1].message and current.id not in findings[1].message
    assert "before any process of this release dispatches" in findings[1].message


@pytest.mark.anyio
async def test_a_newer_record_stops_its_own_queue_only(
    clocked_engine: RedisEngine,
    raw_redis: Redis,
    prefix: str,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = f"{QUEUE}-other"
    keys = clocked_engine.keys(QUEUE)
    await clocked_engine.register_queues([QUEUE, other])
    await raw_redis.rpush(keys.ready, newer_inline("newer-1", clock.now_ms))
    first = await OtherNote({}).dispatch()
    claims = await clocked_engine.claim_many(
        [(QUEUE, 10, "r1"), (other, 10, "r1")], worker_id="w", lease_ms=30_000
    )
    assert [[job.id for job in claim.jobs] for claim in claims] == [[], [first]]

    # The refused queue is left alone from now on; the other goes on, claimed, promoted, reaped.
    second = await OtherNote({}).dispatch()
    later = await OtherNote({}).dispatch(delay=1)
    await Note({}).dispatch(delay=1)  # due in the refused queue too: it stays delayed
    clock.advance(2)
    assert await clocked_engine.promote([QUEUE, other]) == (1, -1)
    assert await raw_redis.zcard(keys.delayed) == 1
    claims = await clocked_engine.claim_many(
        [(QUEUE, 10, "r2"), (other, 10, "r2")], worker_id="w", lease_ms=1
    )
    assert [[job.id for job in claim.jobs] for claim in claims] == [[], [second, later]]
    clock.advance(1)
    assert (await clocked_engine.reap(other, max_stalls=5)).requeued == [second, later]
    assert (await clocked_engine.reap(QUEUE, max_stalls=5)).requeued == []
    assert await raw_redis.lindex(keys.ready, 0) == newer_inline("newer-1", clock.now_ms - 3000)
    [line] = said(caplog)
    assert f"in queue {QUEUE!r}" in line and other not in line


@pytest.mark.anyio
async def test_a_running_engine_reads_the_format_key_again(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: FakeClock
) -> None:
    """A newer release raised the key after this engine started: it stops within the recheck."""
    await clocked_engine.register_queues([QUEUE])
    await raw_redis.set(format_key(prefix), str(NEWER))
    await Note({}).dispatch(delay=1)
    clock.advance(2)
    assert await clocked_engine.promote([QUEUE]) == (1, -1), "read again only now and then"
    ready = await Note({}).dispatch(delay=1)
    clock.advance(FORMAT_RECHECK_MS / 1000)
    assert await clocked_engine.promote([QUEUE]) == (1, -1), "the round that reads it still promotes"
    await Note({}).dispatch(delay=1)
    clock.advance(2)
    assert await clocked_engine.promote([QUEUE]) == (0, -1)
    claim = await claim_from(clocked_engine, QUEUE, 10, worker_id="w", request_id="r", lease_ms=1)
    assert claim.jobs == [] and ready.encode() in await raw_redis.lrange(
        clocked_engine.keys(QUEUE).ready, 0, -1
    )
    assert await raw_redis.get(format_key(prefix)) == str(NEWER).encode(), "never lowered"


@pytest.mark.anyio
async def test_a_malformed_record_of_this_version_is_set_aside_under_its_id(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    keys = clocked_engine.keys(QUEUE)
    await clocked_engine.register_queues([QUEUE])
    entry = f"!{FORMAT_VERSION}:broken-1 {Note.name} x 1 {{}}".encode()
    await raw_redis.rpush(keys.ready, entry)
    claim = await claim_from(clocked_engine, QUEUE, 10, worker_id="w", request_id="r", lease_ms=1_000)
    assert [(q.job_id, q.reason) for q in claim.quarantined] == [("broken-1", "bad_record")]
    assert await raw_redis.hget(keys.job("broken-1"), "r") == entry


@pytest.mark.anyio
@pytest.mark.parametrize(
    "entry", [f"!{NEWER}:a record of a layout this release does not know", "!1234:x", f"!{NEWER}:"]
)
async def test_a_tagged_newer_entry_is_too_new_whatever_follows(
    entry: str, clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: FakeClock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    await clocked_engine.register_queues([QUEUE])
    await raw_redis.rpush(keys.ready, entry)
    await raw_redis.zadd(keys.running, {entry: clock.now_ms - 1})
    before = await state(raw_redis, prefix)
    claim = await claim_from(clocked_engine, QUEUE, 10, worker_id="w", request_id="r", lease_ms=1_000)
    assert (claim.jobs, claim.quarantined) == ([], [])
    assert clocked_engine._format.queues == {QUEUE: min(int(entry[1:].split(":")[0]), 999)}
    clocked_engine._format.queues.clear()  # the reap, as a fresh engine meets it
    reaped = await clocked_engine.reap(QUEUE, max_stalls=0)
    assert (reaped.requeued, reaped.failed) == ([], [])
    assert await state(raw_redis, prefix) == before
