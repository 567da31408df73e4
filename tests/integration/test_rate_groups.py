"""Rate groups (per-key limits) on the real Redis, driven by direct engine calls.

Time moves only through the FakeClock. The queue's per-group limits are written as the
control fields claim.lua reads (`grate` µs per start, `gburst`, `gmaxrun`).
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from support.clock import FakeClock
from support.engine_calls import claim_from

from aiojobs_redis import InvalidGroupKey, Job, RedisEngine
from aiojobs_redis.records import Claim, ClaimedJob

pytestmark = [pytest.mark.anyio, pytest.mark.deployments]  # also on a Cluster and behind Sentinel

QUEUE = "groups-it"
LEASE = 30_000
ERROR: dict[str, Any] = {"reason": "error", "type": "ValueError", "message": "boom"}


class TenantMail(Job):
    queue = QUEUE
    group = "{tenant}"
    attempts = 3

    async def handle(self) -> None:
        return None


class MethodGroupMail(Job):
    queue = QUEUE

    def group(self) -> str:
        return f"m-{self.payload['n'] % 2}"

    async def handle(self) -> None:
        return None


class PlainGroupsMail(Job):
    queue = QUEUE

    async def handle(self) -> None:
        return None


class LaterTenantMail(Job):
    queue = QUEUE
    group = "{tenant}"
    delay = "+5 seconds"

    async def handle(self) -> None:
        return None


class UniqueTenantMail(Job):
    queue = QUEUE
    group = "{tenant}"
    unique = True
    unique_key = "n"

    async def handle(self) -> None:
        return None


async def claim(engine: RedisEngine, limit: int, request: str, worker: str = "w1") -> Claim:
    return await claim_from(engine, QUEUE, limit, worker_id=worker, request_id=request, lease_ms=LEASE)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def tenants(claimed: Claim) -> list[str]:
    import orjson

    return [orjson.loads(job.payload).get("tenant", "-") for job in claimed.jobs]


async def running_counts(raw: Redis, engine: RedisEngine) -> dict[str, int]:
    counts = await raw.hgetall(engine.keys(QUEUE).group_running)
    return {text(k): int(v) for k, v in counts.items()}


async def test_group_key_from_a_method_and_a_dispatch_override(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    await MethodGroupMail.dispatch({"n": 3})
    await TenantMail().dispatch({"tenant": "x"}, group="acme")
    ring = {text(g) for g in await raw_redis.lrange(clocked_engine.keys(QUEUE).ring, 0, -1)}
    assert ring == {"m-1", "acme"}


async def test_bad_group_keys_raise_before_anything_is_stored(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    with pytest.raises(InvalidGroupKey, match="no field 'tenant'"):
        await TenantMail.dispatch({"other": 1})
    with pytest.raises(InvalidGroupKey, match="payload mapping"):
        await TenantMail.dispatch([1, 2])
    with pytest.raises(InvalidGroupKey, match="invalid group key"):
        await TenantMail.dispatch({"tenant": "has space"})
    with pytest.raises(InvalidGroupKey, match="invalid group key"):
        await TenantMail.dispatch({"tenant": "x" * 201})
    with pytest.raises(InvalidGroupKey):
        await TenantMail().dispatch({"tenant": "a"}, group="")
    with pytest.raises(InvalidGroupKey, match="not both"):
        await TenantMail().dispatch({"tenant": "a"}, priority=3)
    assert await raw_redis.exists(clocked_engine.keys(QUEUE).ring) == 0


def test_priority_and_group_on_one_class_are_refused() -> None:
    with pytest.raises(ValueError, match="both priority and group"):

        class PriorityTenantMail(Job):
            queue = QUEUE
            group = "{tenant}"
            priority = 2

            async def handle(self) -> None:
                return None


async def test_delayed_and_hash_jobs_carry_their_group(
    clocked_engine: RedisEngine, clock: FakeClock, raw_redis: Redis
) -> None:
    later = await LaterTenantMail.dispatch({"tenant": "late"})
    unique = await UniqueTenantMail.dispatch({"tenant": "uniq", "n": 1})
    keys = clocked_engine.keys(QUEUE)
    assert await raw_redis.hget(keys.job(later), "g") == b"late"
    assert await raw_redis.lrange(keys.group("uniq"), 0, -1) == [unique.encode()]
    clock.advance(5)
    await clocked_engine.promote([QUEUE])
    assert await raw_redis.lrange(keys.group("late"), 0, -1) == [later.encode()]
    assert [text(g) for g in await raw_redis.lrange(keys.ring, 0, -1)] == ["uniq", "late"]
    claimed = await claim(clocked_engine, 10, "r1")
    assert {j.id for j in claimed.jobs} == {later, unique}
    assert await running_counts(raw_redis, clocked_engine) == {"late": 1, "uniq": 1}


async def test_round_robin_one_job_per_group_per_turn(clocked_engine: RedisEngine, raw_redis: Redis) -> None:
    for _ in range(5):
        await TenantMail.dispatch({"tenant": "big"})
    await TenantMail.dispatch({"tenant": "small"})
    await TenantMail.dispatch({"tenant": "small"})
    await TenantMail.dispatch({"tenant": "tiny"})
    keys = clocked_engine.keys(QUEUE)
    assert await raw_redis.llen(keys.group("big")) == 5
    assert [text(g) for g in await raw_redis.lrange(keys.ring, 0, -1)] == ["big", "small", "tiny"]
    first = await claim(clocked_engine, 4, "r1")
    assert tenants(first) == ["big", "small", "tiny", "big"]
    rest = await claim(clocked_engine, 10, "r2")
    assert tenants(rest) == ["small", "big", "big", "big"]
    assert not rest.more
    assert await raw_redis.exists(keys.ring, keys.group("big"), keys.group("small")) == 0
    # Field g, and the running count per group.
    assert await raw_redis.hget(keys.job(first.jobs[0].id), "g") == b"big"
    assert await running_counts(raw_redis, clocked_engine) == {"big": 5, "small": 2, "tiny": 1}


async def test_jobs_without_a_group_take_one_turn_among_the_groups(clocked_engine: RedisEngine) -> None:
    for _ in range(4):
        await PlainGroupsMail.dispatch({})
    for tenant in ("a", "b", "c"):
        for _ in range(4):
            await TenantMail.dispatch({"tenant": tenant})
    claimed = await claim(clocked_engine, 8, "r1")
    # Share of the ungrouped lists: ceil(8 / (3 groups + 1)) = 2; then the ring.
    assert tenants(claimed) == ["-", "-", "a", "b", "c", "a", "b", "c"]


async def test_a_group_list_of_another_type_is_moved_aside_and_reported(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    await TenantMail.dispatch({"tenant": "ok"})
    keys = clocked_engine.keys(QUEUE)
    await raw_redis.rpush(keys.ring, "broken")
    await raw_redis.set(keys.group("broken"), "not a list")
    claimed = await claim(clocked_engine, 10, "r1")
    assert tenants(claimed) == ["ok"]
    [bad] = claimed.quarantined
    assert bad.moved_to == f"{keys.base}:bad:g:broken"
    assert await raw_redis.get(bad.moved_to) == b"not a list"
    assert await raw_redis.llen(keys.ring) == 0


async def test_group_rate_holds_a_group_without_scanning_it(
    clocked_engine: RedisEngine, clock: FakeClock, raw_redis: Redis
) -> None:
    await clocked_engine.set_controls(QUEUE, {"grate": "1000000", "gburst": "2"})  # 1/s, bursts of 2
    for tenant in ("a", "b"):
        for _ in range(5):
            await TenantMail.dispatch({"tenant": tenant})
    first = await claim(clocked_engine, 100, "r1")
    assert tenants(first) == ["a", "b", "a", "b"]  # the burst of each
    keys = clocked_engine.keys(QUEUE)
    assert await raw_redis.llen(keys.ring) == 0  # both held: in gwait, not in the ring
    assert await raw_redis.zcard(keys.group_wait) == 2
    assert await raw_redis.zscore(keys.group_wait, "a") == await raw_redis.zscore(keys.group_wait, "b")
    assert await raw_redis.zscore(keys.group_wait, "a") == clock.now_ms + 1000
    again = await claim(clocked_engine, 100, "r2")
    assert again.jobs == [] and not again.more
    assert 1 <= again.wait_ms <= 250  # come back by then (capped: a new group may arrive)
    clock.advance(0.999)
    assert (await claim(clocked_engine, 100, "r3")).jobs == []
    clock.advance(0.001)
    assert tenants(await claim(clocked_engine, 100, "r4")) == ["a", "b"]
    # The override wins; '0' lifts the limit: once the starts the rate already allowed are
    # past (its last theoretical arrival time), a group takes all its jobs at once.
    await clocked_engine.set_controls(QUEUE, {"o:grate": "0"})
    clock.advance(2)
    assert sorted(tenants(await claim(clocked_engine, 100, "r5"))) == ["a", "a", "b", "b"]


async def test_a_replayed_claim_spends_no_group_allowance_twice(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    await clocked_engine.set_controls(QUEUE, {"grate": "1000000", "gburst": "1"})
    for tenant in ("a", "b"):
        for _ in range(3):
            await TenantMail.dispatch({"tenant": tenant})
    keys = clocked_engine.keys(QUEUE)
    first = await claim(clocked_engine, 10, "same")
    tat = await raw_redis.get(keys.group_rate("a"))
    replay = await claim(clocked_engine, 10, "same")
    assert [j.id for j in replay.jobs] == [j.id for j in first.jobs]
    assert await raw_redis.get(keys.group_rate("a")) == tat
    assert await running_counts(raw_redis, clocked_engine) == {"a": 1, "b": 1}


async def test_group_max_running_and_every_way_a_run_ends(
    clocked_engine: RedisEngine, clock: FakeClock, raw_redis: Redis
) -> None:
    await clocked_engine.set_controls(QUEUE, {"gmaxrun": "1"})
    for _ in range(9):
        await TenantMail.dispatch({"tenant": "solo"})
    endings: list[str] = []

    async def one() -> ClaimedJob:
        clock.advance(0.1)  # a held group is looked at again after 100 ms
        got = await claim(clocked_engine, 5, f"r{clock.now_ms}")
        assert len(got.jobs) == 1, endings
        assert await running_counts(raw_redis, clocked_engine) == {"solo": 1}
        blocked = await claim(clocked_engine, 5, f"b{clock.now_ms}")
        assert blocked.jobs == [] and blocked.wait_ms == 100
        return got.jobs[0]

    job = await one()
    assert await clocked_engine.ack(job)
    endings.append("ack")
    job = await one()
    assert await clocked_engine.fail(job, ERROR)
    endings.append("fail")
    job = await one()
    assert await clocked_engine.retry(job, 0, ERROR)
    endings.append("retry")
    job = await one()
    assert await clocked_engine.release(job)
    endings.append("release")
    job = await one()
    assert await clocked_engine.defer(job, 10, ERROR, give_up_after_ms=60_000) == 1
    endings.append("defer")
    job = await one()
    assert await clocked_engine.throttle(job, 0, 25) == 1
    endings.append("throttle")
    job = await one()
    assert await clocked_engine.abort(job.id, QUEUE)
    endings.append("abort")
    job = await one()
    clock.advance(LEASE / 1000 + 1)
    reaped = await clocked_engine.reap(QUEUE, max_stalls=5)
    assert reaped.requeued == [job.id]
    assert await running_counts(raw_redis, clocked_engine) == {}
    # Replays of the ends change nothing: failed twice, one slot freed once.
    job = await one()
    await TenantMail.dispatch({"tenant": "solo"})
    assert await clocked_engine.fail(job, ERROR)
    job = await one()
    assert await clocked_engine.fail(job, ERROR)
    assert await clocked_engine.fail(job, ERROR)
    assert await clocked_engine.retry(job, 0, ERROR) is False
    assert await running_counts(raw_redis, clocked_engine) == {}


async def test_throttle_holds_its_group_only_and_uses_no_attempt(
    clocked_engine: RedisEngine, clock: FakeClock, raw_redis: Redis
) -> None:
    for tenant in ("a", "b"):
        for _ in range(3):
            await TenantMail.dispatch({"tenant": tenant})
    got = await claim(clocked_engine, 1, "r1")
    [job] = got.jobs
    assert tenants(got) == ["a"]
    assert await clocked_engine.throttle(job, 2000, 25) == 1
    assert await clocked_engine.throttle(job, 2000, 25) == 1  # a replay: the same answer
    keys = clocked_engine.keys(QUEUE)
    record = await raw_redis.hgetall(keys.job(job.id))
    assert record[b"h"] == b"1" and record[b"s"] == b"ready" and b"a" not in record
    assert await raw_redis.lindex(keys.group("a"), 0) == job.id.encode()  # back at the head
    during = await claim(clocked_engine, 10, "r2")
    assert tenants(during) == ["b", "b", "b"]
    clock.advance(1.999)
    assert (await claim(clocked_engine, 10, "r3")).jobs == []
    clock.advance(0.001)
    after = await claim(clocked_engine, 10, "r4")
    assert after.jobs[0].id == job.id and after.jobs[0].attempts_used == 0
    assert tenants(after) == ["a", "a", "a"]
    # Throttled max_throttles times: -1, and nothing changes.
    again = after.jobs[0]
    assert await clocked_engine.throttle(again, 10, 1) == -1
    assert await raw_redis.hget(keys.job(again.id), "s") == b"running"


async def test_throttle_of_a_job_without_a_group_holds_its_queue(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    await PlainGroupsMail.dispatch({})
    await PlainGroupsMail.dispatch({})
    [job] = (await claim(clocked_engine, 1, "r1")).jobs
    assert await clocked_engine.throttle(job, 3000, 25) == 1
    held = await claim(clocked_engine, 10, "r2")
    assert held.jobs == [] and held.wait_ms == 3000
    clock.advance(3)
    assert (await claim(clocked_engine, 10, "r3")).jobs[0].id == job.id


async def test_stats_get_job_and_abort_see_jobs_waiting_in_groups(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    await clocked_engine.set_controls(QUEUE, {"grate": "1000000"})
    await TenantMail.dispatch({"tenant": "a"})
    await TenantMail.dispatch({"tenant": "b"})
    waiting = await TenantMail.dispatch({"tenant": "b"})
    await UniqueTenantMail.dispatch({"tenant": "c", "n": 7})
    await PlainGroupsMail.dispatch({})
    assert (await clocked_engine.stats(QUEUE))[0].ready == 5
    claimed = await claim(clocked_engine, 10, "r1")
    assert tenants(claimed) == ["-", "a", "b", "c"]
    keys = clocked_engine.keys(QUEUE)
    assert await raw_redis.zscore(keys.group_wait, "b") is not None  # held: its rate
    assert (await clocked_engine.stats(QUEUE))[0].ready == 1
    # get_job and abort find a job waiting inline in a group held by its limit...
    info = await clocked_engine.get_job(QUEUE, waiting)
    assert info is not None and info.state == "ready"
    assert await clocked_engine.abort(waiting, QUEUE)
    assert await raw_redis.llen(keys.group("b")) == 0
    # ...and a job with a hash waiting in its group's list.
    hashed = await UniqueTenantMail.dispatch({"tenant": "c", "n": 8})
    assert await raw_redis.lrange(keys.group("c"), 0, -1) == [hashed.encode()]
    info = await clocked_engine.get_job(QUEUE, hashed)
    assert info is not None and info.state == "ready"
    assert await clocked_engine.abort(hashed, QUEUE)
    assert await raw_redis.llen(keys.group("c")) == 0
    assert (await clocked_engine.stats(QUEUE))[0].ready == 0


@pytest.mark.parametrize("which", ["ring", "gwait", "gst"])
async def test_group_keys_of_another_type_are_moved_aside_and_reported(
    clocked_engine: RedisEngine, raw_redis: Redis, which: str
) -> None:
    await clocked_engine.set_controls(QUEUE, {"gmaxrun": "5"})
    await TenantMail.dispatch({"tenant": "ok"})
    keys = clocked_engine.keys(QUEUE)
    key = {"ring": keys.ring, "gwait": keys.group_wait, "gst": keys.group_running}[which]
    await raw_redis.set(key, "junk")
    claimed = await claim(clocked_engine, 10, "r1")
    [bad] = claimed.quarantined
    assert bad.moved_to == f"{keys.base}:bad:{which}"
    assert "held another type" in bad.describe(QUEUE)
    assert await raw_redis.get(bad.moved_to) == b"junk"
    if which != "ring":  # (the ring itself was lost: its group's jobs wait for a new dispatch)
        assert tenants(claimed) == ["ok"]
        job = claimed.jobs[0]
        await raw_redis.set(keys.group_running, "junk again")
        assert await clocked_engine.ack(job)  # the count starts again; the ack is not refused
        assert await raw_redis.type(keys.group_running) in (b"none", b"hash")


async def test_a_group_emptied_and_refilled_keeps_one_turn(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    await TenantMail.dispatch({"tenant": "a"})
    await TenantMail.dispatch({"tenant": "b"})
    assert tenants(await claim(clocked_engine, 1, "r1")) == ["a"]  # a's list is empty now
    await TenantMail.dispatch({"tenant": "a"})
    ring = [text(g) for g in await raw_redis.lrange(clocked_engine.keys(QUEUE).ring, 0, -1)]
    assert ring == ["b", "a"]


class ShardedTenantMail(Job):
    queue = "groups-it-sharded"
    shards = 4
    group = "{tenant}"

    async def handle(self) -> None:
        return None


async def test_a_sharded_queue_keeps_each_group_on_one_shard(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    for tenant in ("x", "y"):
        for _ in range(6):
            await ShardedTenantMail.dispatch({"tenant": tenant})
        holding = [
            shard
            for shard in range(4)
            if await raw_redis.llen(clocked_engine.keys(f"groups-it-sharded#{shard}").group(tenant))
        ]
        assert len(holding) == 1
        assert await raw_redis.llen(clocked_engine.keys(f"groups-it-sharded#{holding[0]}").group(tenant)) == 6
