"""Workflows when a script call's reply is lost: the fault proxy (support/proxy.py) lets Redis
run the call, drops its reply and closes the connection, and redis-py sends the call again.
Each replayed transition of a flow must change nothing the first call did not: a chain or a
batch stored once with the ids the caller got, a prerequisite's end released or failed its
dependents once (their D counts and the batch's counts moved once), a failed retry revived
its flow once (and said so), an abort of a waiting step failed the rest once. A flow
dispatch replayed late, after its first job ran and its record went, stores nothing.

Calls under test go through the proxy; the test's own reads and claims go straight to Redis.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.engine_calls import claim_from
from support.faultapp import Noop, Record
from support.ledger import read_ledger
from support.proxy import FaultProxy, Rule, evalsha
from support.redis_server import RedisServer

from aiojobs_redis import RedisEngine, Settings, Worker, batch, chain, use_engine
from aiojobs_redis.records import ClaimedJob, parse_inline
from aiojobs_redis.scripts import SCRIPT_NAMES, source

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

QUEUE = "faults"
PREFIX = "flowreplay:"
SCRIPT_BY_SHA = {hashlib.sha1(source(name).encode()).hexdigest().encode(): name for name in SCRIPT_NAMES}
ERROR: dict[str, Any] = {"reason": "permanent", "type": "PermanentFailure", "message": "boom"}


def sha(script: str) -> str:
    return next(digest.decode() for digest, name in SCRIPT_BY_SHA.items() if name == script)


def replays_by_script(proxy: FaultProxy) -> Counter[str]:
    return Counter(
        SCRIPT_BY_SHA.get(e.first_arg, "?") for e in proxy.events("replay") if e.command == "EVALSHA"
    )


def drop_first_reply(proxy: FaultProxy, script: str) -> None:
    """The next call of `script` runs, its reply is lost, and its replay goes through."""
    proxy.clear_rules()
    proxy.add_rule(Rule("drop_reply", evalsha(sha(script)), fresh_only=True))


@asynccontextmanager
async def engines(server: RedisServer, proxy: FaultProxy) -> AsyncIterator[tuple[RedisEngine, RedisEngine]]:
    """The engine under test (through the proxy, installed for dispatch) and one straight to
    Redis. Scripts are loaded first: a dropped reply is then that of a call Redis ran."""
    proxied = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=3, dispatch_timeout=6)
    async with RedisEngine(proxied) as engine, RedisEngine(Settings(url=server.url, prefix=PREFIX)) as direct:
        for name in SCRIPT_NAMES:
            await direct.redis.script_load(source(name))
        with use_engine(engine):
            yield engine, direct


def texts(values: Any) -> list[str]:
    """Replies of redis-py (bytes) as text."""
    return [v.decode() for v in values]


class FlowState:
    """Reads of one queue's flow state, straight from Redis."""

    def __init__(self, direct: RedisEngine) -> None:
        self.redis = direct.redis
        self.keys = direct.keys(QUEUE)

    async def queued(self) -> list[str]:
        """The queue list, head first (an inline record stands for its job's id)."""
        entries: list[bytes] = await self.redis.lrange(self.keys.ready, 0, -1)  # type: ignore[assignment]
        return [parsed[0] if (parsed := parse_inline(e)) else e.decode() for e in entries]

    async def zset(self, key: str) -> list[str]:
        return texts(await self.redis.zrange(key, 0, -1))

    async def waiting(self) -> set[str]:
        return set(await self.zset(self.keys.waiting))

    async def failed(self) -> set[str]:
        return set(await self.zset(self.keys.failed))

    async def field(self, job_id: str, name: str) -> str | None:
        value: bytes | None = await self.redis.hget(self.keys.job(job_id), name)  # type: ignore[assignment]
        return None if value is None else value.decode()

    async def dependents(self, job_id: str) -> set[str]:
        return set(texts(await self.redis.smembers(self.keys.dependents(job_id))))

    async def batch(self, batch_id: str) -> tuple[dict[str, str], list[str], list[str]]:
        key = self.keys.batch(batch_id)
        raw: dict[bytes, bytes] = await self.redis.hgetall(key)  # type: ignore[assignment]
        counts = {k.decode(): v.decode() for k, v in raw.items()}
        ok = texts(await self.redis.lrange(f"{key}:ok", 0, -1))
        ko = texts(await self.redis.lrange(f"{key}:ko", 0, -1))
        return counts, ok, ko

    async def job_hashes(self) -> set[str]:
        found = set()
        async for key in self.redis.scan_iter(match=f"{self.keys.job_prefix}*", count=1000):
            if await self.redis.type(key) == b"hash":
                found.add(key.decode()[len(self.keys.job_prefix) :])
        return found

    async def batches(self) -> set[str]:
        prefix = f"{self.keys.base}:batch:"
        return {
            key.decode()[len(prefix) :]
            async for key in self.redis.scan_iter(match=f"{prefix}*", count=1000)
            if b":ok" not in key[len(prefix) :] and b":ko" not in key[len(prefix) :]
        }


async def claim(direct: RedisEngine, job_id: str) -> ClaimedJob:
    """Claim the job at the head of the queue, which must be `job_id`."""
    got = await claim_from(direct, QUEUE, 1, worker_id="w", request_id=f"r-{job_id}", lease_ms=30_000)
    assert [j.id for j in got.jobs] == [job_id]
    return got.jobs[0]


async def test_a_replayed_chain_dispatch_stores_each_step_once(
    server: RedisServer, proxy: FaultProxy
) -> None:
    async with engines(server, proxy) as (_, direct):
        state = FlowState(direct)
        outside = await Noop().dispatch()  # an inline record, made a hash by the flow's call
        drop_first_reply(proxy, "dispatch_flow")
        ids = await chain(Noop(), Noop(), Noop()).dispatch()
        joined = await Noop().dispatch(depends_on=[outside, ids[2]])
        replays = replays_by_script(proxy)["dispatch_flow"]
        first, second, third = ids
        hashes = await state.job_hashes()
        queued = await state.queued()
        waiting = await state.waiting()
        edges = [await state.dependents(i) for i in (first, second, third, outside)]
        counts = [await state.field(i, "D") for i in (second, third, joined)]
    print(f"\nreplayed chain dispatch: {replays} replay(s); stored {len(hashes)} job hashes, queue {queued}")
    assert replays == 1
    assert len(set(ids)) == 3 and joined not in ids
    assert hashes == {*ids, outside, joined}
    assert queued == [outside, first], "each step queued once, the outside job kept its place"
    assert waiting == {second, third, joined}
    assert edges == [{second}, {third}, {joined}, {joined}]
    assert counts == ["1", "1", "2"]


async def test_a_replayed_depends_on_dispatch_stores_the_job_once(
    server: RedisServer, proxy: FaultProxy
) -> None:
    async with engines(server, proxy) as (_, direct):
        state = FlowState(direct)
        before = [await Noop().dispatch(), await Noop().dispatch()]  # inline records
        drop_first_reply(proxy, "dispatch_flow")
        joined = await Noop().dispatch(depends_on=before)
        replays = replays_by_script(proxy)["dispatch_flow"]
        queued = await state.queued()
        edges = [await state.dependents(i) for i in before]
        count = await state.field(joined, "D")
        hashes = await state.job_hashes()
        waiting = await state.waiting()
    assert replays == 1
    assert queued == before, "the inline records became hashes in place, once"
    assert edges == [{joined}, {joined}] and count == "2"
    assert hashes == {*before, joined}
    assert waiting == {joined}


async def test_a_replayed_batch_dispatch_stores_one_batch(server: RedisServer, proxy: FaultProxy) -> None:
    async with engines(server, proxy) as (_, direct):
        state = FlowState(direct)
        callback = Noop()
        drop_first_reply(proxy, "dispatch_flow")
        batch_id, ids = await batch([Noop() for _ in range(5)], on_complete=callback).dispatch()
        replays = replays_by_script(proxy)["dispatch_flow"]
        queued = await state.queued()
        counts, ok, ko = await state.batch(batch_id)
        batches = await state.batches()
        waiting = await state.waiting()
        hashes = await state.job_hashes()
    print(
        f"\nreplayed batch dispatch: {replays} replay(s); {len(batches)} batch stored, {len(queued)} queued"
    )
    assert replays == 1
    assert queued == ids and len(set(ids)) == 5
    assert batches == {batch_id}
    assert (counts["n"], counts["left"], counts["ok"], counts["ko"]) == ("5", "5", "0", "0")
    assert counts["cb"] == callback.id and (ok, ko) == ([], [])
    assert waiting == {callback.id}
    assert hashes == {*ids, callback.id}


async def test_a_replayed_ack_releases_dependents_once_and_counts_a_member_once(
    server: RedisServer, proxy: FaultProxy
) -> None:
    async with engines(server, proxy) as (engine, direct):
        state = FlowState(direct)
        first, second = await chain(Noop(), Noop()).dispatch()
        other = await Noop().dispatch()  # a second prerequisite, still live
        joined = await Noop().dispatch(depends_on=[first, other])
        callback = Noop()
        batch_id, members = await batch([Noop(), Noop()], on_complete=callback).dispatch()

        drop_first_reply(proxy, "ack")
        acked_first = await engine.ack(await claim(direct, first))
        queued = await state.queued()
        joined_left = await state.field(joined, "D")
        drop_first_reply(proxy, "ack")
        await claim(direct, other)  # the head of the queue: claimed, not ended here
        acked_member = await engine.ack(await claim(direct, members[0]))
        counts, ok, ko = await state.batch(batch_id)
        replays = replays_by_script(proxy)["ack"]
        waiting = await state.waiting()
    print(
        f"\nreplayed ack: {replays} replay(s); dependent's count left {joined_left} (2 before); "
        f"batch ok={counts['ok']} left={counts['left']}"
    )
    assert replays == 2 and acked_first and acked_member
    assert queued == [other, *members, second], "the next step released once"
    assert joined_left == "1", "the dependent counted its prerequisite once"
    assert (counts["ok"], counts["ko"], counts["left"], ok, ko) == ("1", "0", "1", [members[0]], [])
    assert waiting == {joined, callback.id}


async def test_a_replayed_fail_fails_dependents_once_and_counts_a_member_once(
    server: RedisServer, proxy: FaultProxy
) -> None:
    async with engines(server, proxy) as (engine, direct):
        state = FlowState(direct)
        first, second, third = await chain(Noop(), Noop(), Noop()).dispatch()
        callback = Noop()
        batch_id, members = await batch([Noop(), Noop()], on_complete=callback).dispatch()

        drop_first_reply(proxy, "fail")
        failed_first = await engine.fail(await claim(direct, first), ERROR)
        failed = await state.failed()
        reasons = [await direct.get_job(QUEUE, i) for i in (second, third)]
        await engine.ack(await claim(direct, members[0]))
        drop_first_reply(proxy, "fail")
        failed_member = await engine.fail(await claim(direct, members[1]), ERROR)
        counts, ok, ko = await state.batch(batch_id)
        replays = replays_by_script(proxy)["fail"]
        waiting = await state.waiting()
        queued = await state.queued()
    print(
        f"\nreplayed fail: {replays} replay(s), batch ok={counts['ok']} ko={counts['ko']} "
        f"left={counts['left']}"
    )
    assert replays == 2 and failed_member and failed_first
    assert failed == {first, second, third}
    reasons_seen = [(r.state, r.error["reason"]) for r in reasons if r and r.error]
    assert reasons_seen == [("failed", "dependency_failed")] * 2
    assert (counts["ok"], counts["ko"], counts["left"], ok, ko) == ("1", "1", "0", [members[0]], [members[1]])
    assert waiting == set() and queued == [callback.id], "the callback released once"


async def test_a_replayed_failed_retry_revives_a_flow_once(server: RedisServer, proxy: FaultProxy) -> None:
    async with engines(server, proxy) as (engine, direct):
        state = FlowState(direct)
        first, second, third = await chain(Noop(), Noop(), Noop()).dispatch()
        callback = Noop()
        batch_id, members = await batch([Noop(), Noop()], on_success=callback).dispatch()
        for job_id in (first, members[0]):
            assert await direct.fail(await claim(direct, job_id), ERROR)
        assert await state.waiting() == set()

        drop_first_reply(proxy, "requeue_failed")
        chain_report = await engine.failed_retry_report([first], queue=QUEUE)
        drop_first_reply(proxy, "requeue_failed")
        member_report = await engine.failed_retry_report([members[0]], queue=QUEUE)
        replays = replays_by_script(proxy)["requeue_failed"]
        queued = await state.queued()
        waiting = await state.waiting()
        failed = await state.failed()
        counts, ok, ko = await state.batch(batch_id)
        left = [await state.field(i, "D") for i in (second, third)]
        attempts = await state.field(first, "a")
        again = await engine.failed_retry([first, members[0]], queue=QUEUE)
    print(
        f"\nreplayed failed retry: {replays} replay(s); reported requeued "
        f"{chain_report.requeued} and {member_report.requeued} (1 each applied); batch "
        f"left={counts['left']} ko={counts['ko']}"
    )
    assert replays == 2
    assert queued == [members[1], first, members[0]], "each revived job queued once"
    assert waiting == {second, third, callback.id} and failed == set()
    assert left == ["1", "1"] and attempts == "0"
    assert (counts["left"], counts["ok"], counts["ko"], ok, ko) == ("2", "0", "0", [], [])
    assert (chain_report.requeued, member_report.requeued) == (1, 1), "the replay reports what the call did"
    assert again == 0, "a job no longer failed is not requeued again"


async def test_a_replayed_abort_of_a_waiting_step_fails_the_rest_once(
    server: RedisServer, proxy: FaultProxy
) -> None:
    async with engines(server, proxy) as (engine, direct):
        state = FlowState(direct)
        first, second, third = await chain(Record({}), Record({}), Record({})).dispatch()
        callback = Noop()
        batch_id, members = await batch([Noop(), Noop()], on_complete=callback).dispatch()
        drop_first_reply(proxy, "abort")
        aborted = await engine.abort(second, QUEUE)
        drop_first_reply(proxy, "abort")
        aborted_member = await engine.abort(members[0], QUEUE)
        replays = replays_by_script(proxy)["abort"]
        infos = [await direct.get_job(QUEUE, i) for i in (second, third)]
        waiting = await state.waiting()
        failed = await state.failed()
        counts, ok, ko = await state.batch(batch_id)
        queued = await state.queued()
        again = await engine.abort(second, QUEUE)
    print(f"\nreplayed abort: {replays} replay(s); batch ko={counts['ko']} left={counts['left']}")
    assert replays == 2 and aborted and aborted_member and not again
    assert [(i.state, i.error["reason"]) for i in infos if i and i.error] == [
        ("failed", "aborted"),
        ("failed", "dependency_aborted"),
    ]
    assert waiting == {callback.id} and failed == {second, third, members[0]}
    assert (counts["left"], counts["ko"], ko, ok) == ("1", "1", [members[0]], [])
    assert queued == [first, members[1]]


@pytest.mark.parametrize("kind", ["chain", "batch"])
async def test_a_flow_dispatch_replayed_late_does_not_store_the_flow_again(
    server: RedisServer, proxy: FaultProxy, ledger_dir: Path, kind: str
) -> None:
    """The first call runs and its reply is lost; redis-py's replay reaches Redis 2.5 s later,
    before the call's deadline. Meanwhile a worker ran the flow's first job, and its record,
    kept only 200 ms once done (keep_done_ms), has gone: the replay must not store the flow
    again (the first job would run twice, and a batch would count from zero again)."""
    ledger = {"ledger": str(ledger_dir)}
    async with engines(server, proxy) as (_, direct):
        state = FlowState(direct)
        worker_settings = Settings(url=server.url, prefix=PREFIX, keep_done_ms=200)
        async with RedisEngine(worker_settings) as worker_engine:
            worker = Worker(worker_engine, [QUEUE], lease=2, reap_interval=0.5, idle_wait=0.2)
            async with anyio.create_task_group() as group:
                await group.start(worker.run)
                proxy.add_rule(Rule("drop_reply", evalsha(sha("dispatch_flow")), fresh_only=True))
                proxy.add_rule(Rule("late", evalsha(sha("dispatch_flow")), hold=2.5))
                if kind == "chain":
                    ids = await chain(Record(ledger), Record(ledger)).dispatch()
                else:
                    batch_id, ids = await batch(
                        [Record(ledger), Record(ledger)], on_complete=Record(ledger)
                    ).dispatch()
                await anyio.sleep(2)  # a flow stored again would run meanwhile
                worker.stop()
        late = proxy.events("late")
        runs = read_ledger(ledger_dir)
        waiting = await state.waiting()
        left = (await state.batch(batch_id))[0].get("left") if kind == "batch" else None
    started = Counter(r.job_id for r in runs if r.event == "start")
    print(f"\nlate {kind} dispatch replay: runs per job {dict(started)}")
    assert len(late) == 1
    assert [started[i] for i in ids] == [1, 1], "the replay stored the flow again"
    assert max(started.values()) == 1 and len(started) == 3 - (kind == "chain")
    assert waiting == set()
    assert left in (None, "0")
