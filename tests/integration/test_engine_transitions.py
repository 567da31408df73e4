"""RedisEngine against the real Redis: every Lua state transition, driven by direct calls.

Time moves only through the FakeClock (`clocked_engine` + `clock`), except where a test is
about Redis's own clock. Every key lives under the test's own prefix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

import anyio
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from support.engine_calls import claim_from, dispatch_marker, engine_with
from support.keyspace import delete_prefix

from aiojobs_redis import (
    EngineError,
    EngineUnavailable,
    InvalidJobId,
    Job,
    PayloadNotSerializable,
    PayloadTooLarge,
    QueueStats,
    RedisEngine,
    Settings,
    use_engine,
)
from aiojobs_redis.keys import FORMAT_VERSION, QueueKeys
from aiojobs_redis.records import Claim, ClaimedJob, parse_inline

pytestmark = pytest.mark.deployments  # also on a Cluster and behind Sentinel: see conftest.py

QUEUE = "engine-it"
OTHER_QUEUE = "engine-it-other"
LEASE = 30_000
ERROR: dict[str, Any] = {"reason": "error", "type": "ValueError", "message": "boom"}
GUARD = 15_000  # replay guard ms passed to dispatch.lua directly


class Mail(Job):
    queue = QUEUE

    async def handle(self) -> None:
        return None


class TripleMail(Job):
    queue = QUEUE
    attempts = 3

    async def handle(self) -> None:
        return None


class LaterMail(Job):
    queue = QUEUE
    delay = "+5 minutes"

    async def handle(self) -> None:
        return None


class OtherMail(Job):
    queue = OTHER_QUEUE

    async def handle(self) -> None:
        return None


class Clock(Protocol):
    """What the tests use of conftest's FakeClock."""

    now_ms: int

    def __call__(self) -> int: ...

    def advance(self, seconds: float) -> None: ...


# -- helpers ----------------------------------------------------------------------------------


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def keys_under(raw: Redis, prefix: str) -> list[str]:
    return sorted([text(k) async for k in raw.scan_iter(match=f"{prefix}*", count=1000)])


async def job_hash(raw: Redis, key: str) -> dict[str, str]:
    return {text(k): text(v) for k, v in (await raw.hgetall(key)).items()}


async def zscores(raw: Redis, key: str) -> dict[str, int]:
    pairs: list[tuple[bytes, float]] = await raw.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
    return {text(member): int(score) for member, score in pairs}


async def zmembers(raw: Redis, key: str) -> list[str]:
    members: list[bytes] = await raw.zrange(key, 0, -1)  # type: ignore[assignment]
    return [text(m) for m in members]


async def queue_entries(raw: Redis, keys: QueueKeys) -> list[bytes]:
    entries: list[bytes] = await raw.lrange(keys.ready, 0, -1)  # type: ignore[assignment]
    return entries


async def queued(raw: Redis, keys: QueueKeys) -> list[str]:
    """The ids in the queue list, head first (an inline record stands for its job's id)."""
    return [parsed[0] if (parsed := parse_inline(e)) else text(e) for e in await queue_entries(raw, keys)]


def inline(job_id: str, name: str, max_attempts: int, created_ms: int, payload: bytes) -> bytes:
    return f"!{FORMAT_VERSION}:{job_id} {name} {max_attempts} {created_ms} ".encode() + payload


async def key_type(raw: Redis, key: str) -> str:
    return text(await raw.type(key))


async def snapshot(raw: Redis, prefix: str) -> dict[str, tuple[str, Any]]:
    """Every key under the prefix with its type and value (not its TTL)."""
    found: dict[str, tuple[str, Any]] = {}
    for key in await keys_under(raw, prefix):
        kind = await key_type(raw, key)
        value: Any
        if kind == "hash":
            value = sorted((await raw.hgetall(key)).items())
        elif kind == "zset":
            value = await raw.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await raw.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(await raw.smembers(key))
        else:
            value = await raw.get(key)
        found[key] = (kind, value)
    return found


async def claim(
    engine: RedisEngine,
    *,
    limit: int = 10,
    worker: str = "worker-a",
    request: str | None = None,
    lease_ms: int = LEASE,
    queue: str = QUEUE,
) -> Claim:
    return await claim_from(
        engine,
        queue,
        limit,
        worker_id=worker,
        request_id=request or uuid.uuid4().hex,
        lease_ms=lease_ms,
    )


async def claim_one(engine: RedisEngine, **options: Any) -> ClaimedJob:
    got = await claim(engine, limit=1, **options)
    assert len(got.jobs) == 1, got
    return got.jobs[0]


async def dispatch_script(
    engine: RedisEngine,
    job_id: str,
    payload: bytes,
    *,
    now: int | str = "",
    delay_ms: int = 0,
    max_payload: int = 1024,
) -> int:
    keys = engine.keys(QUEUE)
    result = await engine.scripts.dispatch(
        keys=[keys.ready, keys.delayed, keys.wake],
        args=[keys.base, QUEUE, max_payload, now, Mail.name, 1, delay_ms, "", GUARD, 0, "", job_id, payload],
    )
    return int(result)


# -- dispatch ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dispatch_stores_a_ready_job(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    job = Mail({"to": "a@example.com", "n": 1})
    job_id = await job.dispatch()
    assert isinstance(job_id, str) and job_id
    assert job.id == job_id
    keys = clocked_engine.keys(QUEUE)

    # Waiting to run now, the job is one inline record in the queue list and has no key.
    payload = orjson.dumps({"to": "a@example.com", "n": 1})
    assert await queue_entries(raw_redis, keys) == [inline(job_id, Mail.name, 1, clock.now_ms, payload)]
    assert await key_type(raw_redis, keys.job(job_id)) == "none"
    assert await zscores(raw_redis, keys.delayed) == {}
    assert await zscores(raw_redis, keys.running) == {}
    assert await clocked_engine.known_queues() == [QUEUE]

    info = await clocked_engine.get_job(QUEUE, job_id)
    assert info is not None
    assert (info.name, info.state, info.attempts, info.max_attempts, info.runs) == (
        Mail.name,
        "ready",
        0,
        1,
        0,
    )
    assert info.created_ms == clock.now_ms
    assert info.payload is None
    with_payload = await clocked_engine.get_job(QUEUE, job_id, with_payload=True)
    assert with_payload is not None and with_payload.payload == {"to": "a@example.com", "n": 1}
    assert await clocked_engine.get_job(QUEUE, "no-such-job") is None

    # A claim turns the record into the job's hash.
    dispatched_at = clock.now_ms
    clock.advance(1)
    claimed = await claim_one(clocked_engine)
    stored = await job_hash(raw_redis, keys.job(job_id))
    assert orjson.loads(stored.pop("p")) == {"to": "a@example.com", "n": 1}
    now = str(dispatched_at)
    assert stored == {
        "n": Mail.name,
        "q": QUEUE,
        "m": "1",
        "s": "running",
        "c": now,
        "d": now,
        "k": "1",
        "b": str(clock.now_ms),
        "t": claimed.token,
        "w": "worker-a",
        "v": str(FORMAT_VERSION),
    }
    assert await queue_entries(raw_redis, keys) == []


@pytest.mark.anyio
async def test_delayed_dispatch_goes_to_the_delayed_set(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    now = clock.now_ms
    by_class = await LaterMail({"x": 1}).dispatch()
    by_argument = await Mail({"x": 2}).dispatch(delay="+5 minutes")
    by_setter = await Mail({"x": 3}).set_delay(2.5).dispatch()
    ready = await Mail({"x": 4}).dispatch()

    assert await zscores(raw_redis, keys.delayed) == {
        by_class: now + 300_000,
        by_argument: now + 300_000,
        by_setter: now + 2_500,
    }
    assert await queued(raw_redis, keys) == [ready]
    waiting = await clocked_engine.get_job(QUEUE, ready)
    assert waiting is not None and (waiting.state, waiting.scheduled_ms) == ("ready", now)
    stored = await job_hash(raw_redis, keys.job(by_class))
    assert (stored["s"], stored["c"], stored["d"]) == ("delayed", str(now), str(now + 300_000))
    assert await clocked_engine.stats(QUEUE) == [QueueStats(QUEUE, ready=1, delayed=3, running=0, failed=0)]
    assert await clocked_engine.stats() == [QueueStats(QUEUE, ready=1, delayed=3, running=0, failed=0)]


@pytest.mark.anyio
async def test_fluent_dispatch_and_attempts(clocked_engine: RedisEngine, raw_redis: Redis) -> None:
    keys = clocked_engine.keys(QUEUE)
    fluent = await Mail().set_payload({"k": [1, 2]}).dispatch()
    empty = await Mail().dispatch()
    triple = await TripleMail({"t": 3}).dispatch()

    records = [parse_inline(e) for e in await queue_entries(raw_redis, keys)]
    assert [(r[0], r[1], r[2], orjson.loads(r[4])) for r in records if r is not None] == [
        (fluent, Mail.name, 1, {"k": [1, 2]}),
        (empty, Mail.name, 1, {}),
        (triple, TripleMail.name, 3, {"t": 3}),
    ]

    got = await claim(clocked_engine)
    by_id = {j.id: j for j in got.jobs}
    assert by_id[triple].max_attempts == 3
    assert by_id[fluent].max_attempts == 1


@pytest.mark.anyio
async def test_all_keys_of_a_queue_share_its_hash_tag(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str
) -> None:
    keys = clocked_engine.keys(QUEUE)
    # Make every kind of key exist: queue, delayed, running, failed, wake, job, bad, claim,
    # and the dispatch markers.
    first, second, _third, _fourth = [await Mail({"i": i}).dispatch() for i in range(4)]
    await LaterMail({}).dispatch()
    await raw_redis.set(keys.job("junk-1"), "not a hash")
    await raw_redis.lpush(keys.ready, "junk-1")
    got = await claim(clocked_engine, limit=4)  # the third stays running, the fourth ready
    assert [(q.job_id, q.reason) for q in got.quarantined] == [("junk-1", "wrong_type")]
    held = {j.id: j for j in got.jobs}
    assert await clocked_engine.fail(held[first], ERROR)
    assert await clocked_engine.ack(held[second])

    found = await keys_under(raw_redis, prefix)
    assert f"{prefix}queues" in found and f"{prefix}format" in found
    queue_keys = [k for k in found if k not in (f"{prefix}queues", f"{prefix}format")]
    tag = f"{{{QUEUE}}}"
    for key in queue_keys:
        # Cluster hashes the first {...} of a key: it must be the queue's tag.
        start = key.index("{")
        assert key[start : key.index("}", start) + 1] == tag, key
        assert key.startswith(prefix + tag + ":"), key
    kinds = {k[len(prefix + tag) + 1 :].split(":")[0] for k in queue_keys}
    assert kinds == {"queue", "delayed", "running", "failed", "wake", "j", "bad", "claim", "dd"}


@pytest.mark.anyio
@pytest.mark.single_server("a Cluster has only database 0; the test opens plain clients")
async def test_db_setting_selects_the_database(redis_url: str, prefix: str) -> None:
    db5: Redis = Redis.from_url(redis_url, db=5)
    db0: Redis = Redis.from_url(redis_url, db=0)
    try:
        settings = Settings.from_env(
            {"REDIS_URL": redis_url, "REDIS_JOB_PREFIX": prefix, "REDIS_JOB_DB": "5"}
        )
        assert settings == Settings(url=redis_url, prefix=prefix, db=5)
        async with RedisEngine(settings) as engine:
            job_id = await engine.dispatch(Mail({"db": 5}))
            # The blocking connection must use the same database: the wake token is there.
            assert await engine.wait_for_work([QUEUE], 2) is True
            got = await claim(engine)
            assert [j.id for j in got.jobs] == [job_id]
        in_db5 = await keys_under(db5, prefix)
        assert f"{prefix}{{{QUEUE}}}:j:{job_id}" in in_db5
        assert f"{prefix}{{{QUEUE}}}:running" in in_db5
        assert f"{prefix}queues" in in_db5
        assert await keys_under(db0, prefix) == []
    finally:
        await delete_prefix(redis_url, prefix, db=5)
        await db5.aclose()
        await db0.aclose()


# -- payload limits ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_payload_too_large_or_unserialisable_stores_nothing(
    settings: Settings, raw_redis: Redis, prefix: str
) -> None:
    allowed = {f"{prefix}queues"}
    async with engine_with(settings, max_payload_bytes=100) as engine:
        with pytest.raises(PayloadTooLarge):
            await Mail({"blob": "x" * 200}).dispatch()
        assert set(await keys_under(raw_redis, prefix)) <= allowed
        with pytest.raises(PayloadTooLarge):
            await Mail("a" * 99).dispatch()  # 101 bytes encoded
        assert set(await keys_under(raw_redis, prefix)) <= allowed

        with pytest.raises(PayloadNotSerializable) as caught:
            await Mail({"obj": object()}).dispatch()
        assert isinstance(caught.value, TypeError)
        with pytest.raises(PayloadNotSerializable):
            await Mail({"raw": {1, 2}}).dispatch()
        assert set(await keys_under(raw_redis, prefix)) <= allowed

        exactly = await Mail("a" * 98).dispatch()  # 100 bytes encoded: allowed
        info = await engine.get_job(QUEUE, exactly, with_payload=True)
        assert info is not None and info.payload == "a" * 98


@pytest.mark.anyio
async def test_lua_guard_refuses_an_oversized_payload(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: Clock
) -> None:
    with pytest.raises(ResponseError, match="payload too large"):
        await dispatch_script(clocked_engine, "guard-1", b"x" * 101, now=clock(), max_payload=100)
    assert await keys_under(raw_redis, prefix) == []
    assert await dispatch_script(clocked_engine, "guard-2", b"x" * 100, now=clock(), max_payload=100)
    assert await queued(raw_redis, clocked_engine.keys(QUEUE)) == ["guard-2"]


# -- claim ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fifo_within_the_same_millisecond(clocked_engine: RedisEngine) -> None:
    ids = [await Mail({"i": i}).dispatch() for i in range(50)]
    claimed: list[ClaimedJob] = []
    while len(claimed) < 50:
        got = await claim(clocked_engine, limit=7)
        assert got.jobs
        claimed += got.jobs
    assert [j.id for j in claimed] == ids
    assert [orjson.loads(j.payload)["i"] for j in claimed] == list(range(50))


@pytest.mark.anyio
async def test_claim_gives_a_lease(clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock) -> None:
    keys = clocked_engine.keys(QUEUE)
    job_id = await Mail({"a": 1}).dispatch()
    got = await claim(clocked_engine, worker="worker-a", lease_ms=LEASE)

    assert got.quarantined == []
    assert (got.more, got.next_due_ms) == (False, -1)
    assert len(got.jobs) == 1
    job = got.jobs[0]
    assert (job.queue, job.id, job.name) == (QUEUE, job_id, Mail.name.encode())
    assert orjson.loads(job.payload) == {"a": 1}
    assert job.token
    assert (job.attempt, job.attempts_used, job.max_attempts, job.runs) == (1, 0, 1, 1)

    assert await zscores(raw_redis, keys.running) == {job_id: clock.now_ms + LEASE}
    assert await queued(raw_redis, keys) == []
    stored = await job_hash(raw_redis, keys.job(job_id))
    assert (stored["s"], stored["t"], stored["w"], stored["k"]) == (
        "running",
        job.token,
        "worker-a",
        "1",
    )
    info = await clocked_engine.get_job(QUEUE, job_id)
    assert info is not None and (info.state, info.worker, info.runs) == ("running", "worker-a", 1)

    other = await claim(clocked_engine, worker="worker-b")
    assert other.jobs == [] and other.quarantined == []
    assert await clocked_engine.stats(QUEUE) == [QueueStats(QUEUE, 0, 0, 1, 0)]


@pytest.mark.anyio
async def test_claim_respects_its_limit(clocked_engine: RedisEngine, raw_redis: Redis) -> None:
    ids = [await Mail({"i": i}).dispatch() for i in range(5)]
    got = await claim(clocked_engine, limit=2)
    assert [j.id for j in got.jobs] == ids[:2]
    assert got.more is True
    assert await queued(raw_redis, clocked_engine.keys(QUEUE)) == ids[2:]
    last = await claim(clocked_engine, limit=10)
    assert [j.id for j in last.jobs] == ids[2:]
    assert last.more is False


@pytest.mark.anyio
async def test_a_replayed_claim_returns_the_same_jobs(clocked_engine: RedisEngine, raw_redis: Redis) -> None:
    keys = clocked_engine.keys(QUEUE)
    ids = [await Mail({"i": i}).dispatch() for i in range(5)]
    first = await claim(clocked_engine, limit=2, worker="worker-a", request="req-1")
    replay = await claim(clocked_engine, limit=2, worker="worker-a", request="req-1")

    def held(c: Claim) -> list[tuple[str, str, int]]:
        return [(j.id, j.token, j.runs) for j in c.jobs]

    assert held(replay) == held(first)
    assert [j.id for j in first.jobs] == ids[:2]
    assert [j.payload for j in replay.jobs] == [j.payload for j in first.jobs]
    assert await queued(raw_redis, keys) == ids[2:]
    assert sorted(await zmembers(raw_redis, keys.running)) == sorted(ids[:2])
    for job_id in ids[:2]:
        assert (await job_hash(raw_redis, keys.job(job_id)))["k"] == "1"

    # Another worker replaying a request id of its own is not worker-a's replay.
    other = await claim(clocked_engine, limit=1, worker="worker-b", request="req-1")
    assert [j.id for j in other.jobs] == ids[2:3]

    nxt = await claim(clocked_engine, limit=2, worker="worker-a", request="req-2")
    assert [j.id for j in nxt.jobs] == ids[3:5]
    assert await queued(raw_redis, keys) == []


@pytest.mark.anyio
async def test_claim_reports_when_the_next_delayed_job_is_due(
    clocked_engine: RedisEngine, clock: Clock
) -> None:
    await LaterMail({}).dispatch()
    got = await claim(clocked_engine)
    assert (got.jobs, got.next_due_ms) == ([], 300_000)
    clock.advance(100)
    assert (await claim(clocked_engine)).next_due_ms == 200_000


# -- renew ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_renew_extends_the_lease(clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock) -> None:
    keys = clocked_engine.keys(QUEUE)
    job_id = await Mail({}).dispatch()
    job = await claim_one(clocked_engine, lease_ms=10_000)
    start = clock.now_ms

    clock.advance(5)
    assert await clocked_engine.renew(QUEUE, [(job.id, job.token)], 10_000) == []
    assert await zscores(raw_redis, keys.running) == {job_id: start + 15_000}

    wrong = [(job.id, job.token + "x"), ("no-such-job", "worker-a:1")]
    assert await clocked_engine.renew(QUEUE, wrong, 10_000) == [job.id, "no-such-job"]
    assert await zscores(raw_redis, keys.running) == {job_id: start + 15_000}

    clock.advance(7)  # past the first deadline, inside the renewed one
    reaped = await clocked_engine.reap(QUEUE, max_stalls=3)
    assert (reaped.requeued, reaped.failed) == ([], [])
    assert await clocked_engine.ack(job) is True
    assert await clocked_engine.renew(QUEUE, [(job.id, job.token)], 10_000) == [job.id]


# -- ack --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ack_ends_the_job_and_guards_against_a_replayed_dispatch(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    job_id = await Mail({}).dispatch()
    job = await claim_one(clocked_engine)

    before = await snapshot(raw_redis, prefix)
    stale = dataclasses.replace(job, token="worker-a:999")
    assert await clocked_engine.ack(stale) is False
    assert await snapshot(raw_redis, prefix) == before

    assert await clocked_engine.ack(job) is True
    assert await zscores(raw_redis, keys.running) == {}
    assert await clocked_engine.get_job(QUEUE, job_id) is None
    # The record is gone; a small marker lasts until created + replay_guard_ms.
    assert await key_type(raw_redis, keys.job(job_id)) == "string"
    assert await raw_redis.get(keys.job(job_id)) == f"done {job.token}".encode()
    guard = clocked_engine.settings.replay_guard_ms
    assert guard - 10_000 < await raw_redis.pttl(keys.job(job_id)) <= guard
    assert await dispatch_script(clocked_engine, job_id, b"{}", now=clock()) == 0
    assert await raw_redis.get(keys.job(job_id)) == f"done {job.token}".encode()
    assert await queued(raw_redis, keys) == []

    assert await clocked_engine.ack(job) is True  # a replay: reported done again, nothing changes
    assert await clocked_engine.stats(QUEUE) == [QueueStats(QUEUE, 0, 0, 0, 0)]


@pytest.mark.anyio
async def test_ack_after_the_guard_window_leaves_no_marker(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    job_id = await Mail({}).dispatch()
    job = await claim_one(clocked_engine)
    clock.advance(61)
    assert await clocked_engine.ack(job) is True
    assert await raw_redis.exists(clocked_engine.keys(QUEUE).job(job_id)) == 0


@pytest.mark.anyio
async def test_keep_done_keeps_the_record(settings: Settings, clock: Clock, raw_redis: Redis) -> None:
    async with engine_with(settings, clock, keep_done_ms=60_000) as engine:
        key = engine.keys(QUEUE).job(await Mail({"keep": True}).dispatch())
        job = await claim_one(engine)
        clock.advance(2)
        assert await engine.ack(job) is True
        stored = await job_hash(raw_redis, key)
        assert (stored["s"], stored["f"]) == ("done", str(clock.now_ms))
        assert "t" not in stored and "w" not in stored
        assert 55_000 < await raw_redis.pttl(key) <= 60_000
        info = await engine.get_job(QUEUE, job.id, with_payload=True)
        assert info is not None
        assert (info.state, info.finished_ms, info.payload) == ("done", clock.now_ms, {"keep": True})
        assert await zscores(raw_redis, engine.keys(QUEUE).running) == {}


# -- retry and promote ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_retry_without_delay_requeues_at_once(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    job_id = await TripleMail({}).dispatch()
    job = await claim_one(clocked_engine)
    clock.advance(1)

    assert await clocked_engine.retry(job, 0, ERROR) is True
    stored = await job_hash(raw_redis, keys.job(job_id))
    assert (stored["a"], stored["s"], stored["d"]) == ("1", "ready", str(clock.now_ms))
    assert orjson.loads(stored["e"]) == ERROR
    assert "t" not in stored and "w" not in stored
    assert await queued(raw_redis, keys) == [job_id]
    assert await zscores(raw_redis, keys.running) == {}

    again = await claim_one(clocked_engine)
    assert (again.id, again.attempt, again.attempts_used, again.runs) == (job_id, 2, 1, 2)
    assert again.token != job.token
    info = await clocked_engine.get_job(QUEUE, job_id)
    assert info is not None and info.error == ERROR and info.attempts == 1


@pytest.mark.anyio
async def test_retry_with_delay_waits_for_promote(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    job_id = await TripleMail({}).dispatch()
    job = await claim_one(clocked_engine)
    due = clock.now_ms + 5_000

    assert await clocked_engine.retry(job, 5_000, ERROR) is True
    assert await zscores(raw_redis, keys.delayed) == {job_id: due}
    assert await queued(raw_redis, keys) == []
    stored = await job_hash(raw_redis, keys.job(job_id))
    assert (stored["s"], stored["d"], stored["a"]) == ("delayed", str(due), "1")

    got = await claim(clocked_engine)
    assert (got.jobs, got.next_due_ms) == ([], 5_000)
    assert await clocked_engine.promote([QUEUE]) == (0, 5_000)
    clock.advance(4.999)
    assert await clocked_engine.promote([QUEUE]) == (0, 1)
    assert await queued(raw_redis, keys) == []
    clock.advance(0.001)
    assert await clocked_engine.promote([QUEUE]) == (1, -1)
    assert await queued(raw_redis, keys) == [job_id]
    assert await zscores(raw_redis, keys.delayed) == {}
    assert (await job_hash(raw_redis, keys.job(job_id)))["s"] == "ready"

    again = await claim_one(clocked_engine)
    assert (again.id, again.attempt) == (job_id, 2)


@pytest.mark.anyio
async def test_promote_returns_the_time_until_the_next_due_job(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    assert await clocked_engine.promote([QUEUE, OTHER_QUEUE]) == (0, -1)
    soon = await Mail({}).dispatch(delay=5)
    later = await Mail({}).dispatch(delay=8)
    await OtherMail({}).dispatch(delay=7)
    assert await clocked_engine.promote([QUEUE, OTHER_QUEUE]) == (0, 5_000)
    clock.advance(6)
    assert await clocked_engine.promote([QUEUE, OTHER_QUEUE]) == (1, 1_000)
    assert await queued(raw_redis, keys) == [soon]
    assert await zmembers(raw_redis, keys.delayed) == [later]
    assert await clocked_engine.promote([QUEUE]) == (0, 2_000)


# -- fail -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fail_moves_the_job_to_the_failed_set(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    ttl = clocked_engine.settings.failed_ttl_ms
    job_id = await TripleMail({}).dispatch()
    job = await claim_one(clocked_engine)
    clock.advance(1)

    assert await clocked_engine.fail(job, ERROR) is True
    assert await zscores(raw_redis, keys.failed) == {job_id: clock.now_ms}
    assert await zscores(raw_redis, keys.running) == {}
    stored = await job_hash(raw_redis, keys.job(job_id))
    assert (stored["s"], stored["f"], stored["a"]) == ("failed", str(clock.now_ms), "1")
    assert orjson.loads(stored["e"]) == ERROR
    assert "t" not in stored and "w" not in stored
    assert ttl - 10_000 < await raw_redis.pttl(keys.job(job_id)) <= ttl
    assert await clocked_engine.stats(QUEUE) == [QueueStats(QUEUE, 0, 0, 0, 1)]


@pytest.mark.anyio
async def test_fail_without_counting_an_attempt(clocked_engine: RedisEngine, raw_redis: Redis) -> None:
    keys = clocked_engine.keys(QUEUE)
    job_id = await TripleMail({}).dispatch()
    job = await claim_one(clocked_engine)
    assert await clocked_engine.fail(job, ERROR, count_attempt=False) is True
    stored = await job_hash(raw_redis, keys.job(job_id))
    assert stored["s"] == "failed"
    assert stored.get("a", "0") == "0"
    info = await clocked_engine.get_job(QUEUE, job_id)
    assert info is not None and info.attempts == 0


# -- release ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_release_returns_the_job_to_its_place(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    first = await Mail({"n": 1}).dispatch()
    dispatched_at = clock.now_ms
    job = await claim_one(clocked_engine)
    clock.advance(1)
    second = await Mail({"n": 2}).dispatch()
    clock.advance(1)

    assert await clocked_engine.release(job) is True
    stored = await job_hash(raw_redis, keys.job(first))
    assert stored["s"] == "ready"
    assert "t" not in stored and "w" not in stored
    assert stored.get("a", "0") == "0"
    assert stored["d"] == str(dispatched_at)
    # Back at the head of the line, ahead of the job dispatched after it.
    assert await queued(raw_redis, keys) == [first, second]
    assert await zscores(raw_redis, keys.running) == {}

    again = await claim_one(clocked_engine)
    assert (again.id, again.attempt, again.runs) == (first, 1, 2)
    assert again.token != job.token
    assert await clocked_engine.ack(job) is False


# -- reap -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reap_requeues_a_lapsed_lease_and_fences_the_old_token(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    job_id = await Mail({}).dispatch()
    dispatched_at = clock.now_ms
    job = await claim_one(clocked_engine, worker="worker-a", lease_ms=1_000)

    reaped = await clocked_engine.reap(QUEUE, max_stalls=3)
    assert (reaped.requeued, reaped.failed, reaped.trimmed) == ([], [], 0)
    clock.advance(0.999)
    assert (await clocked_engine.reap(QUEUE, max_stalls=3)).requeued == []
    assert await zmembers(raw_redis, keys.running) == [job_id]

    clock.advance(0.002)
    reaped = await clocked_engine.reap(QUEUE, max_stalls=3)
    assert (reaped.requeued, reaped.failed) == ([job_id], [])
    stored = await job_hash(raw_redis, keys.job(job_id))
    assert (stored["l"], stored["s"]) == ("1", "ready")
    assert "t" not in stored and "w" not in stored
    assert stored["d"] == str(dispatched_at)
    assert await queued(raw_redis, keys) == [job_id]
    assert await zscores(raw_redis, keys.running) == {}

    # Even the same worker id gets a new token: the old holder is fenced off.
    again = await claim_one(clocked_engine, worker="worker-a", lease_ms=1_000)
    assert again.id == job_id
    assert again.token != job.token
    assert (again.attempt, again.runs) == (1, 2)
    assert await clocked_engine.ack(job) is False
    assert await clocked_engine.renew(QUEUE, [(job.id, job.token)], 1_000) == [job_id]
    assert await clocked_engine.ack(again) is True


@pytest.mark.anyio
async def test_reap_fails_a_job_that_stalls_too_often(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    job_id = await TripleMail({}).dispatch()
    max_stalls = 2
    for lapse in range(1, max_stalls + 2):
        await claim_one(clocked_engine, lease_ms=1_000)
        clock.advance(1.001)
        reaped = await clocked_engine.reap(QUEUE, max_stalls=max_stalls)
        if lapse <= max_stalls:
            assert (reaped.requeued, reaped.failed) == ([job_id], [])
        else:
            assert (reaped.requeued, reaped.failed) == ([], [job_id])

    stored = await job_hash(raw_redis, keys.job(job_id))
    assert (stored["s"], stored["l"], stored["f"]) == ("failed", "3", str(clock.now_ms))
    assert orjson.loads(stored["e"])["reason"] == "stalled"
    assert await zscores(raw_redis, keys.failed) == {job_id: clock.now_ms}
    assert await queued(raw_redis, keys) == []
    assert await zscores(raw_redis, keys.running) == {}
    assert await raw_redis.pttl(keys.job(job_id)) > 0
    listed = await clocked_engine.failed_list(QUEUE)
    assert [(j.id, j.stalls) for j in listed] == [(job_id, 3)]
    assert listed[0].error is not None and listed[0].error["reason"] == "stalled"


@pytest.mark.anyio
async def test_a_live_lease_is_never_reaped(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    job_id = await Mail({}).dispatch()
    job = await claim_one(clocked_engine, lease_ms=60_000)
    for _ in range(3):
        reaped = await clocked_engine.reap(QUEUE, max_stalls=0)
        assert (reaped.requeued, reaped.failed) == ([], [])
        clock.advance(19)
    assert await zmembers(raw_redis, clocked_engine.keys(QUEUE).running) == [job_id]
    assert await clocked_engine.ack(job) is True


# -- clocks -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_delay_uses_the_redis_clock(engine: RedisEngine, raw_redis: Redis) -> None:
    job_id = await Mail({}).dispatch(delay=2)
    got = await claim(engine)
    assert got.jobs == []
    assert 0 < got.next_due_ms <= 2_000
    moved, next_due = await engine.promote([QUEUE])
    assert moved == 0
    assert 0 < next_due <= 2_000
    seconds, micros = await raw_redis.time()
    redis_now = seconds * 1000 + micros // 1000
    due = (await zscores(raw_redis, engine.keys(QUEUE).delayed))[job_id]
    assert 0 < due - redis_now <= 2_000  # due by Redis's clock, not the client's


# -- malformed records ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_claim_quarantines_malformed_records(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    await raw_redis.rpush(keys.ready, "dangling-1")
    await raw_redis.set(keys.job("wrongtype-1"), "hello")
    await raw_redis.rpush(keys.ready, "wrongtype-1")
    await raw_redis.hset(keys.job("missing-1"), mapping={"n": Mail.name, "q": QUEUE, "m": 1, "s": "ready"})
    await raw_redis.rpush(keys.ready, "missing-1")
    await raw_redis.hset(
        keys.job("badjson-1"), mapping={"n": Mail.name, "q": QUEUE, "p": "{not json", "m": 1}
    )
    await raw_redis.rpush(keys.ready, "badjson-1")
    await raw_redis.hset(keys.job("badname-1"), mapping={"n": b"\xff\xfe", "q": QUEUE, "p": "{}", "m": 1})
    await raw_redis.rpush(keys.ready, "badname-1")
    good = await Mail({"ok": True}).dispatch()

    got = await claim(clocked_engine, limit=10)
    quarantined = {"dangling-1": "dangling", "wrongtype-1": "wrong_type", "missing-1": "missing_field"}
    assert {q.job_id: q.reason for q in got.quarantined} == quarantined
    assert len(got.quarantined) == 3
    # Records the claim cannot judge go to the worker; good jobs are claimed as usual.
    assert [j.id for j in got.jobs] == ["badjson-1", "badname-1", good]
    by_id = {j.id: j for j in got.jobs}
    assert by_id["badjson-1"].payload == b"{not json"
    assert by_id["badname-1"].name == b"\xff\xfe"

    assert await zscores(raw_redis, keys.failed) == dict.fromkeys(quarantined, clock.now_ms)
    assert await queued(raw_redis, keys) == []
    for job_id, reason in quarantined.items():
        stored = await job_hash(raw_redis, keys.job(job_id))
        assert stored["s"] == "failed", job_id
        assert stored["f"] == str(clock.now_ms)
        assert orjson.loads(stored["e"])["reason"] == reason
        assert "t" not in stored
        assert await raw_redis.pttl(keys.job(job_id)) > 0
    # The string that squatted the job key is kept aside, not destroyed.
    assert await raw_redis.get(f"{keys.base}:bad:wrongtype-1") == b"hello"
    assert await raw_redis.pttl(f"{keys.base}:bad:wrongtype-1") > 0

    listed = {j.id: j for j in await clocked_engine.failed_list(QUEUE)}
    assert set(listed) == set(quarantined)
    for job_id, reason in quarantined.items():
        error = listed[job_id].error
        assert error is not None and error["reason"] == reason
        assert listed[job_id].state == "failed"
    assert await clocked_engine.stats(QUEUE) == [QueueStats(QUEUE, 0, 0, 3, 3)]


@pytest.mark.anyio
async def test_claim_survives_non_integer_attempt_counts(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    """Lua's tonumber() accepts "2.5" and "0x10"; the claimed job must not crash the claim."""
    keys = clocked_engine.keys(QUEUE)
    good = await Mail({}).dispatch()
    await raw_redis.hset(keys.job("float-max"), mapping={"n": Mail.name, "p": "{}", "m": "2.5"})
    await raw_redis.rpush(keys.ready, "float-max")
    await raw_redis.hset(keys.job("hex-attempts"), mapping={"n": Mail.name, "p": "{}", "m": "3", "a": "0x1"})
    await raw_redis.rpush(keys.ready, "hex-attempts")

    got = await claim(clocked_engine, limit=10)  # must not raise

    seen = {j.id for j in got.jobs} | {q.job_id for q in got.quarantined}
    assert seen == {"float-max", "hex-attempts", good}
    assert good in {j.id for j in got.jobs}


@pytest.mark.anyio
async def test_claim_survives_a_queued_id_that_is_not_utf8(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    keys = clocked_engine.keys(QUEUE)
    good = await Mail({}).dispatch()
    await raw_redis.rpush(keys.ready, b"\xff\xfe-id")

    got = await claim(clocked_engine, limit=10)  # must not raise

    assert [j.id for j in got.jobs] == [good]
    assert len(got.quarantined) == 1
    assert got.quarantined[0].reason in ("bad_id", "dangling")
    assert await raw_redis.zscore(keys.failed, b"\xff\xfe-id") is not None
    listed = await clocked_engine.failed_list(QUEUE)
    assert len(listed) == 1 and listed[0].state == "failed"


@pytest.mark.anyio
async def test_a_replayed_claim_survives_an_id_with_a_space(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    """The claim receipt is parsed line by line as "<id> <token>"."""
    keys = clocked_engine.keys(QUEUE)
    await raw_redis.hset(keys.job("odd id"), mapping={"n": Mail.name, "p": "{}", "m": 1})
    await raw_redis.rpush(keys.ready, "odd id")
    good = await Mail({}).dispatch()
    first = await claim(clocked_engine, request="req-1")  # must not raise
    handled = {j.id for j in first.jobs} | {q.job_id for q in first.quarantined}
    assert handled == {"odd id", good}
    replay = await claim(clocked_engine, request="req-1")  # must not raise either
    assert [(j.id, j.token) for j in replay.jobs] == [(j.id, j.token) for j in first.jobs]


# -- the queue list ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_claim_quarantines_an_unreadable_inline_record(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    no_payload = f"!no-payload {Mail.name} 1 5 ".encode()
    bad_name = b"!bad-name no/such!name 1 5 {}"
    no_fields = b"!\xff\xfe"
    await raw_redis.rpush(keys.ready, no_payload, bad_name, no_fields)
    good = await Mail({}).dispatch()

    got = await claim(clocked_engine, limit=10)

    aside = "bad-" + hashlib.sha1(no_fields).hexdigest()
    expected = [("no-payload", "bad_record"), ("bad-name", "bad_record"), (aside, "bad_record")]
    assert [(q.job_id, q.reason) for q in got.quarantined] == expected
    assert [j.id for j in got.jobs] == [good]
    assert await queued(raw_redis, keys) == []
    assert await zscores(raw_redis, keys.failed) == dict.fromkeys([i for i, _ in expected], clock.now_ms)
    # Each entry is kept whole in its quarantine record.
    for (job_id, _), entry in zip(expected, (no_payload, bad_name, no_fields), strict=True):
        stored = await raw_redis.hgetall(keys.job(job_id))
        assert (stored[b"s"], stored[b"r"]) == (b"failed", entry)
        assert orjson.loads(stored[b"e"])["reason"] == "bad_record"
        assert await raw_redis.pttl(keys.job(job_id)) > 0
    listed = await clocked_engine.failed_list(QUEUE, with_payload=True)
    assert sorted(j.id for j in listed) == sorted(i for i, _ in expected)


@pytest.mark.anyio
async def test_a_copy_of_an_inline_record_leaves_the_existing_job_alone(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: Clock
) -> None:
    """A record whose job already has a key (say, a dispatch replayed after its guard)."""
    keys = clocked_engine.keys(QUEUE)
    job_id = await Mail({"n": 1}).dispatch()
    [entry] = await queue_entries(raw_redis, keys)
    job = await claim_one(clocked_engine)
    assert job.id == job_id
    await raw_redis.rpush(keys.ready, entry)
    before = await snapshot(raw_redis, prefix)

    got = await claim(clocked_engine, worker="worker-b")

    assert (got.jobs, got.quarantined) == ([], [])
    after = await snapshot(raw_redis, prefix)
    del before[keys.ready]
    assert after == before  # the entry is gone; the running job is untouched
    assert await clocked_engine.ack(job) is True


@pytest.mark.anyio
async def test_a_queue_key_of_the_wrong_type_is_moved_aside(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    keys = clocked_engine.keys(QUEUE)
    await raw_redis.set(keys.ready, "not a list")
    with pytest.raises(EngineError, match="WRONGTYPE"):
        await Mail({}).dispatch()
    assert await raw_redis.exists(dispatch_marker(keys, "any")) == 0
    with pytest.raises(EngineError, match="WRONGTYPE"):
        await clocked_engine.stats(QUEUE)

    # A worker serving several queues counts their jobs first: this one must get its claim.
    assert await clocked_engine.ready_counts([OTHER_QUEUE, QUEUE]) == [0, 1]

    got = await claim(clocked_engine)

    assert (got.jobs, got.quarantined) == ([], [("", "wrong_type", keys.bad_queue)])
    assert await clocked_engine.ready_counts([OTHER_QUEUE, QUEUE]) == [0, 0]
    assert await raw_redis.get(keys.bad_queue) == b"not a list"
    assert await raw_redis.pttl(keys.bad_queue) > 0
    job_id = await Mail({}).dispatch()
    assert [j.id for j in (await claim(clocked_engine)).jobs] == [job_id]


@pytest.mark.anyio
async def test_get_job_finds_a_job_anywhere_in_the_queue_list(clocked_engine: RedisEngine) -> None:
    ids = await Mail.dispatch_many({"i": i} for i in range(2_345))  # more than one slice of 1,000
    for index in (0, 1_000, 1_344, 2_344):
        info = await clocked_engine.get_job(QUEUE, ids[index], with_payload=True)
        assert info is not None
        assert (info.id, info.state, info.runs, info.payload) == (ids[index], "ready", 0, {"i": index})
    assert await clocked_engine.get_job(QUEUE, "not-queued") is None


@pytest.mark.anyio
async def test_a_replayed_dispatch_call_pushes_nothing(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    args: list[str | int | bytes] = [keys.base, QUEUE, 1024, clock(), Mail.name, 2, 0, "", GUARD, 0, ""]
    args += ["call-1", b"{}", "call-2", b"[1]"]
    call_keys = [keys.ready, keys.delayed, keys.wake]
    assert await clocked_engine.scripts.dispatch(keys=call_keys, args=args) == 2
    assert await queue_entries(raw_redis, keys) == [
        inline("call-1", Mail.name, 2, clock.now_ms, b"{}"),
        inline("call-2", Mail.name, 2, clock.now_ms, b"[1]"),
    ]
    # One marker per call, named after its first job, for the replay guard.
    assert await raw_redis.exists(dispatch_marker(keys, "call-1"), dispatch_marker(keys, "call-2")) == 1
    assert GUARD - 5_000 < await raw_redis.pttl(dispatch_marker(keys, "call-1")) <= GUARD
    before = await snapshot(raw_redis, prefix)
    await claim(clocked_engine, limit=1)  # even once a job of it has run
    before_replay = await snapshot(raw_redis, prefix)
    assert before_replay != before
    assert await clocked_engine.scripts.dispatch(keys=call_keys, args=args) == 0
    assert await snapshot(raw_redis, prefix) == before_replay


# -- the failed set ---------------------------------------------------------------------------


async def fail_jobs(engine: RedisEngine, clock: Clock, count: int, job: type[Job] = Mail) -> list[str]:
    """Dispatch, claim and fail `count` jobs, one second apart (oldest first)."""
    ids = [await job({"i": i}).dispatch() for i in range(count)]
    got = await claim(engine, limit=count, queue=job.queue)
    assert [j.id for j in got.jobs] == ids
    for i, claimed in enumerate(got.jobs):
        clock.advance(1)
        assert await engine.fail(claimed, {"reason": "error", "type": "E", "message": f"no {i}"})
    return ids


@pytest.mark.anyio
async def test_failed_list_is_newest_first(clocked_engine: RedisEngine, clock: Clock) -> None:
    ids = await fail_jobs(clocked_engine, clock, 3)
    listed = await clocked_engine.failed_list(QUEUE)
    assert [j.id for j in listed] == ids[::-1]
    assert [j.error for j in listed] == [
        {"reason": "error", "type": "E", "message": f"no {i}"} for i in (2, 1, 0)
    ]
    assert [j.finished_ms for j in listed] == [clock.now_ms - i * 1000 for i in range(3)]
    assert all(j.state == "failed" and j.attempts == 1 and j.payload is None for j in listed)
    assert all(j.name == Mail.name and j.queue == QUEUE for j in listed)

    with_payload = await clocked_engine.failed_list(QUEUE, with_payload=True)
    assert [j.payload for j in with_payload] == [{"i": 2}, {"i": 1}, {"i": 0}]
    assert [j.id for j in await clocked_engine.failed_list(QUEUE, limit=2)] == ids[:0:-1]
    assert [j.id for j in await clocked_engine.failed_list()] == ids[::-1]


@pytest.mark.anyio
async def test_failed_retry_gives_fresh_attempts(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    ids = await fail_jobs(clocked_engine, clock, 3, job=TripleMail)
    clock.advance(1)

    assert await clocked_engine.failed_retry([ids[0]]) == 1
    assert await queued(raw_redis, keys) == [ids[0]]
    assert await zmembers(raw_redis, keys.failed) == ids[1:]
    stored = await job_hash(raw_redis, keys.job(ids[0]))
    assert (stored["s"], stored["a"], stored["l"], stored["d"]) == ("ready", "0", "0", str(clock.now_ms))
    assert await raw_redis.pttl(keys.job(ids[0])) == -1  # no longer expires

    again = await claim_one(clocked_engine)
    assert (again.id, again.attempt, again.attempts_used) == (ids[0], 1, 0)

    assert await clocked_engine.failed_retry([ids[0]]) == 0  # no longer failed
    assert await clocked_engine.failed_retry() == 2
    assert await zmembers(raw_redis, keys.failed) == []
    assert sorted(await queued(raw_redis, keys)) == sorted(ids[1:])
    assert await clocked_engine.failed_retry() == 0


@pytest.mark.anyio
async def test_failed_retry_filters_by_queue(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock
) -> None:
    [mine] = await fail_jobs(clocked_engine, clock, 1)
    [other] = await fail_jobs(clocked_engine, clock, 1, job=OtherMail)
    other_keys = clocked_engine.keys(OTHER_QUEUE)

    assert await clocked_engine.failed_retry([mine], queue=OTHER_QUEUE) == 0
    assert await clocked_engine.failed_retry(queue=OTHER_QUEUE) == 1
    assert await queued(raw_redis, other_keys) == [other]
    assert await zmembers(raw_redis, clocked_engine.keys(QUEUE).failed) == [mine]
    assert await clocked_engine.failed_retry(ids=None) == 1
    assert await queued(raw_redis, clocked_engine.keys(QUEUE)) == [mine]


@pytest.mark.anyio
async def test_failed_forget_and_flush(clocked_engine: RedisEngine, raw_redis: Redis, clock: Clock) -> None:
    keys = clocked_engine.keys(QUEUE)
    ids = await fail_jobs(clocked_engine, clock, 3)
    [other] = await fail_jobs(clocked_engine, clock, 1, job=OtherMail)

    assert await clocked_engine.failed_forget([ids[0]]) == 1
    assert await raw_redis.exists(keys.job(ids[0])) == 0
    assert await zmembers(raw_redis, keys.failed) == ids[1:]
    assert await clocked_engine.failed_forget([ids[0]]) == 0

    assert await clocked_engine.failed_flush(QUEUE) == 2
    assert await zmembers(raw_redis, keys.failed) == []
    assert await raw_redis.exists(*(keys.job(i) for i in ids)) == 0
    other_keys = clocked_engine.keys(OTHER_QUEUE)
    assert await zmembers(raw_redis, other_keys.failed) == [other]
    assert await clocked_engine.failed_flush(QUEUE) == 0
    assert await clocked_engine.failed_flush() == 1
    assert await raw_redis.exists(other_keys.job(other)) == 0


@pytest.mark.anyio
async def test_failed_forget_removes_the_quarantined_original(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    keys = clocked_engine.keys(QUEUE)
    await raw_redis.set(keys.job("squat-1"), "x")
    await raw_redis.rpush(keys.ready, "squat-1")
    assert [(q.job_id, q.reason) for q in (await claim(clocked_engine)).quarantined] == [
        ("squat-1", "wrong_type")
    ]
    # Only raw writes touched this queue, so it is not in the queues set: name it.
    assert await clocked_engine.failed_retry(["squat-1"], queue=QUEUE) == 0  # nothing to run
    assert await clocked_engine.failed_forget(["squat-1"], queue=QUEUE) == 1
    assert await raw_redis.exists(keys.job("squat-1"), f"{keys.base}:bad:squat-1") == 0


@pytest.mark.anyio
async def test_failed_operations_ignore_unknown_ids(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str
) -> None:
    ready = await Mail({}).dispatch()
    before = await snapshot(raw_redis, prefix)
    assert await clocked_engine.failed_retry(["no-such-job"]) == 0
    assert await clocked_engine.failed_forget(["no-such-job"]) == 0
    assert await clocked_engine.failed_retry([ready]) == 0  # ready, not failed
    assert await clocked_engine.failed_forget([ready]) == 0
    assert await clocked_engine.failed_flush(QUEUE) == 0
    assert await clocked_engine.failed_retry() == 0
    assert await clocked_engine.failed_list(QUEUE) == []
    assert await snapshot(raw_redis, prefix) == before


@pytest.mark.anyio
async def test_invalid_job_ids_are_refused_before_any_io(prefix: str) -> None:
    # Nothing listens on port 1: any I/O would raise EngineUnavailable instead.
    dead = RedisEngine(Settings(url="redis://127.0.0.1:1", prefix=prefix, socket_timeout=0.5))
    try:
        with pytest.raises(InvalidJobId):
            await dead.failed_retry(["ok-id", "bad id"])
        with pytest.raises(InvalidJobId):
            await dead.failed_retry(["x" * 65], queue=QUEUE)
        with pytest.raises(InvalidJobId):
            await dead.failed_forget(["a/b"])
        with pytest.raises(InvalidJobId):
            await dead.failed_forget([""], queue=QUEUE)
        with pytest.raises(InvalidJobId):
            await dead.get_job(QUEUE, "../etc")
    finally:
        await dead.aclose()


# -- retention --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reap_trims_the_failed_set_to_failed_max(
    settings: Settings, clock: Clock, raw_redis: Redis
) -> None:
    async with engine_with(settings, clock, failed_max=5) as engine:
        keys = engine.keys(QUEUE)
        ids = await fail_jobs(engine, clock, 8)
        reaped = await engine.reap(QUEUE, max_stalls=1)
        assert (reaped.requeued, reaped.failed, reaped.trimmed) == ([], [], 3)
        assert await zmembers(raw_redis, keys.failed) == ids[3:]
        assert await raw_redis.exists(*(keys.job(i) for i in ids[:3])) == 0
        assert await raw_redis.exists(*(keys.job(i) for i in ids[3:])) == 5
        assert (await engine.reap(QUEUE, max_stalls=1)).trimmed == 0


@pytest.mark.anyio
async def test_reap_drops_expired_failed_ids(settings: Settings, clock: Clock, raw_redis: Redis) -> None:
    async with engine_with(settings, clock, failed_ttl_ms=10_000) as engine:
        keys = engine.keys(QUEUE)
        [old] = await fail_jobs(engine, clock, 1)
        clock.advance(8)
        [recent] = await fail_jobs(engine, clock, 1)
        assert (await engine.reap(QUEUE, max_stalls=1)).trimmed == 0
        clock.advance(1.5)  # `old` failed 10.5 s ago, `recent` 2.5 s ago
        assert (await engine.reap(QUEUE, max_stalls=1)).trimmed == 1
        assert await zmembers(raw_redis, keys.failed) == [recent]
        assert await raw_redis.exists(keys.job(old)) == 0
        assert await raw_redis.exists(keys.job(recent)) == 1


# -- Redis going away -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dispatch_to_an_unreachable_redis_raises_engine_unavailable(prefix: str) -> None:
    dead = RedisEngine(
        Settings(url="redis://127.0.0.1:1", prefix=prefix, socket_timeout=0.5, dispatch_timeout=2)
    )
    try:
        start = time.monotonic()
        with use_engine(dead), pytest.raises(EngineUnavailable) as caught:
            await Mail({}).dispatch()
        assert time.monotonic() - start < 5
        assert isinstance(caught.value, ConnectionError)
    finally:
        await dead.aclose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener never accepts: connections open, then nothing ever answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


@pytest.mark.anyio
async def test_dispatch_to_a_silent_redis_raises_engine_unavailable(prefix: str, silent_port: int) -> None:
    """A Redis that accepts but never answers must also surface as EngineUnavailable."""
    silent = RedisEngine(
        Settings(
            url=f"redis://127.0.0.1:{silent_port}",
            prefix=prefix,
            socket_timeout=0.2,
            dispatch_timeout=1,
        )
    )
    try:
        start = time.monotonic()
        with pytest.raises(EngineUnavailable) as caught:
            await silent.dispatch(Mail({}))
        assert time.monotonic() - start < 5
        assert isinstance(caught.value, ConnectionError)
    finally:
        await silent.aclose()


# -- replay safety: each script run twice with identical arguments ---------------------------


@pytest.mark.anyio
async def test_dispatch_replay_stores_one_job(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: Clock
) -> None:
    assert await dispatch_script(clocked_engine, "replay-1", b'{"a":1}', now=clock()) == 1
    before = await snapshot(raw_redis, prefix)
    clock.advance(1)
    assert await dispatch_script(clocked_engine, "replay-1", b'{"a":1}', now=clock()) == 0
    assert await dispatch_script(clocked_engine, "replay-1", b'{"a":2}', now=clock()) == 0
    assert await snapshot(raw_redis, prefix) == before
    assert await queued(raw_redis, clocked_engine.keys(QUEUE)) == ["replay-1"]

    args: dict[str, Any] = {"now": clock(), "delay_ms": 5_000}
    assert await dispatch_script(clocked_engine, "replay-2", b"{}", **args) == 1
    before = await snapshot(raw_redis, prefix)
    assert await dispatch_script(clocked_engine, "replay-2", b"{}", **args) == 0
    assert await snapshot(raw_redis, prefix) == before


@pytest.mark.anyio
async def test_ack_replay_changes_nothing(clocked_engine: RedisEngine, raw_redis: Redis, prefix: str) -> None:
    await Mail({}).dispatch()
    job = await claim_one(clocked_engine)
    assert await clocked_engine.ack(job) is True
    before = await snapshot(raw_redis, prefix)
    assert await clocked_engine.ack(job) is True  # a replay: reported done again, nothing changes
    assert await snapshot(raw_redis, prefix) == before


@pytest.mark.anyio
async def test_retry_replay_changes_nothing(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str
) -> None:
    job_id = await TripleMail({}).dispatch()
    for delay_ms in (0, 5_000):
        job = await claim_one(clocked_engine)
        assert await clocked_engine.retry(job, delay_ms, ERROR) is True
        before = await snapshot(raw_redis, prefix)
        assert (
            await clocked_engine.retry(job, delay_ms, ERROR) is True
        )  # a replay: reported done again, nothing changes
        assert await snapshot(raw_redis, prefix) == before
    stored = await job_hash(raw_redis, clocked_engine.keys(QUEUE).job(job_id))
    assert stored["a"] == "2"


@pytest.mark.anyio
async def test_fail_replay_changes_nothing(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: Clock
) -> None:
    job_id = await Mail({}).dispatch()
    job = await claim_one(clocked_engine)
    assert await clocked_engine.fail(job, ERROR) is True
    before = await snapshot(raw_redis, prefix)
    clock.advance(1)
    assert await clocked_engine.fail(job, ERROR) is True  # a replay: reported done again, nothing changes
    assert await snapshot(raw_redis, prefix) == before
    stored = await job_hash(raw_redis, clocked_engine.keys(QUEUE).job(job_id))
    assert stored["a"] == "1"


@pytest.mark.anyio
async def test_release_replay_changes_nothing(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str
) -> None:
    await Mail({}).dispatch()
    job = await claim_one(clocked_engine)
    assert await clocked_engine.release(job) is True
    before = await snapshot(raw_redis, prefix)
    assert await clocked_engine.release(job) is True  # a replay: reported done again, nothing changes
    assert await snapshot(raw_redis, prefix) == before


@pytest.mark.anyio
async def test_promote_replay_moves_nothing(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: Clock
) -> None:
    await Mail({}).dispatch(delay=1)
    clock.advance(1)
    assert await clocked_engine.promote([QUEUE]) == (1, -1)
    before = await snapshot(raw_redis, prefix)
    assert await clocked_engine.promote([QUEUE]) == (0, -1)
    assert await snapshot(raw_redis, prefix) == before


@pytest.mark.anyio
async def test_reap_replay_moves_nothing(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: Clock
) -> None:
    job_id = await Mail({}).dispatch()
    await claim_one(clocked_engine, lease_ms=1_000)
    clock.advance(2)
    assert (await clocked_engine.reap(QUEUE, max_stalls=3)).requeued == [job_id]
    before = await snapshot(raw_redis, prefix)
    reaped = await clocked_engine.reap(QUEUE, max_stalls=3)
    assert (reaped.requeued, reaped.failed, reaped.trimmed) == ([], [], 0)
    assert await snapshot(raw_redis, prefix) == before


@pytest.mark.anyio
async def test_requeue_and_forget_replays_change_nothing(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: Clock
) -> None:
    first, second = await fail_jobs(clocked_engine, clock, 2)
    assert await clocked_engine.failed_retry([first]) == 1
    before = await snapshot(raw_redis, prefix)
    assert await clocked_engine.failed_retry([first]) == 0
    assert await clocked_engine.failed_forget([first]) == 0
    assert await snapshot(raw_redis, prefix) == before
    assert await clocked_engine.failed_forget([second]) == 1
    before = await snapshot(raw_redis, prefix)
    assert await clocked_engine.failed_forget([second]) == 0
    assert await snapshot(raw_redis, prefix) == before


# -- wait_for_work ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_wait_for_work_wakes_on_dispatch(engine: RedisEngine) -> None:
    async def dispatch_soon() -> None:
        await anyio.sleep(0.1)
        await Mail({}).dispatch()

    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatch_soon)
        start = time.monotonic()
        woke = await engine.wait_for_work([OTHER_QUEUE, QUEUE], 5)
        elapsed = time.monotonic() - start
    assert woke is True
    assert elapsed < 2.5  # far under the 5 s block


@pytest.mark.anyio
async def test_wait_for_work_times_out_when_nothing_comes(engine: RedisEngine) -> None:
    start = time.monotonic()
    assert await engine.wait_for_work([QUEUE], 0.2) is False
    assert 0.1 < time.monotonic() - start < 1.5


@pytest.mark.anyio
async def test_wait_for_work_takes_a_waiting_token(engine: RedisEngine) -> None:
    await Mail({}).dispatch()
    start = time.monotonic()
    assert await engine.wait_for_work([QUEUE], 5) is True
    assert time.monotonic() - start < 2.5
    assert await engine.wait_for_work([QUEUE], 0.2) is False  # the one token was taken


@pytest.mark.anyio
async def test_wait_for_work_honours_a_longer_block_than_the_first_call(
    settings: Settings,
) -> None:
    """The blocking connection's socket timeout must outlast every block, not only the first."""
    async with engine_with(settings, socket_timeout=0.2) as engine:
        assert await engine.wait_for_work([QUEUE], 0.05) is False
        start = time.monotonic()
        assert await engine.wait_for_work([QUEUE], 0.8) is False
        assert time.monotonic() - start < 2.5


@pytest.mark.anyio
async def test_a_dispatch_reaching_redis_after_its_deadline_stores_nothing(
    clocked_engine: RedisEngine, raw_redis: Redis, prefix: str, clock: Clock
) -> None:
    keys = clocked_engine.keys(QUEUE)
    late = await clocked_engine.scripts.dispatch(
        keys=[keys.ready, keys.delayed, keys.wake],
        args=[keys.base, QUEUE, 1024, clock(), Mail.name, 1, 0, clock() - 1, GUARD, 0, "", "latejob", b"{}"],
    )
    assert late == -1
    assert await raw_redis.exists(keys.job("latejob")) == 0
    assert await queued(raw_redis, keys) == []
    deadline = clock() + 10_000
    on_time = await clocked_engine.scripts.dispatch(
        keys=[keys.ready, keys.delayed, keys.wake],
        args=[keys.base, QUEUE, 1024, clock(), Mail.name, 1, 0, deadline, GUARD, 0, "", "ontime", b"{}"],
    )
    assert on_time == 1
