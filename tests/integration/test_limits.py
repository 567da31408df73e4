"""Queue-wide limits against the real Redis: the claim's GCRA and max_running driven by a fake
clock, overrides, the declaration a worker writes, and the `limits` command."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import anyio
import pytest
from support.clock import FakeClock
from support.engine_calls import claim_from

from aiojobs_redis import QueueLimits, RedisEngine, ShardedQueue, Worker, cli
from aiojobs_redis import limits as limits_module
from aiojobs_redis.job import Job
from aiojobs_redis.records import Claim

pytestmark = pytest.mark.anyio

QUEUE = "limits-it"
LEASE = 30_000


class LimitedMail(Job):
    name = "limits.LimitedMail"
    queue = QUEUE

    async def handle(self) -> None:  # pragma: no cover - claimed, never run here
        return None


@pytest.fixture(autouse=True)
def forget_declarations() -> Iterator[None]:
    before = set(limits_module._declared)
    yield
    for queue in set(limits_module._declared) - before:
        limits_module.forget(queue)


class Claimer:
    """Claims with fresh request ids, as one worker does."""

    def __init__(self, engine: RedisEngine) -> None:
        self.engine, self.seq = engine, 0

    async def __call__(self, limit: int, request_id: str | None = None) -> Claim:
        self.seq += 1
        return await claim_from(
            self.engine, QUEUE, limit, worker_id="w1", request_id=request_id or str(self.seq), lease_ms=LEASE
        )


async def queued(engine: RedisEngine, n: int) -> None:
    await LimitedMail.dispatch_many([{"n": i} for i in range(n)])


async def tat_us(engine: RedisEngine) -> int:
    return int(await engine.redis.get(engine.keys(QUEUE).base + ":rl") or 0)


async def test_the_rate_lets_a_burst_start_then_one_per_interval_and_says_how_long_to_wait(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    await queued(clocked_engine, 30)
    await clocked_engine.set_controls(QUEUE, {"rate": "100000", "burst": "3"})  # 10/s, bursts of 3
    claim = Claimer(clocked_engine)
    first = await claim(10)
    assert (len(first.jobs), first.wait_ms, first.more) == (3, 100, False)  # the burst, exactly
    again = await claim(10)
    assert (len(again.jobs), again.wait_ms) == (0, 100)
    clock.advance(0.099)
    assert [len((c := await claim(10)).jobs), c.wait_ms] == [0, 1]
    clock.advance(0.001)
    assert [len((c := await claim(10)).jobs), c.wait_ms] == [1, 100]
    clock.advance(0.25)  # two and a half intervals: two starts, the half is kept
    assert [len((c := await claim(10)).jobs), c.wait_ms] == [2, 50]
    clock.advance(60)  # a long quiet spell earns no more than the burst
    assert [len((c := await claim(10)).jobs), c.wait_ms] == [3, 100]
    # A claim the rate holds back took nothing: the rest wait in the queue, no attempt used.
    stats = (await clocked_engine.stats(QUEUE))[0]
    assert (stats.ready, stats.running) == (30 - 9, 9)
    # Starts over any span stay within rate * W + burst: 9 starts in 60.35 s... and the
    # GCRA's state is one TAT: 100 ms per start past the last allowed one.
    assert await tat_us(clocked_engine) == clock.now_ms * 1000 + 300_000


async def test_a_claim_that_takes_fewer_than_allowed_spends_only_what_it_took(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    await queued(clocked_engine, 2)
    await clocked_engine.set_controls(QUEUE, {"rate": "100000", "burst": "5"})
    claim = Claimer(clocked_engine)
    got = await claim(10)
    assert len(got.jobs) == 2 and got.wait_ms <= 1  # not held back: the queue ran dry
    await queued(clocked_engine, 10)
    assert len((await claim(10)).jobs) == 3  # the rest of the burst


async def test_a_replayed_claim_returns_its_jobs_without_spending_the_allowance_again(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    await queued(clocked_engine, 10)
    await clocked_engine.set_controls(QUEUE, {"rate": "100000", "burst": "3"})
    claim = Claimer(clocked_engine)
    first = await claim(10, "r1")
    tat = await tat_us(clocked_engine)
    replay = await claim(10, "r1")
    assert [j.id for j in replay.jobs] == [j.id for j in first.jobs] and len(first.jobs) == 3
    assert await tat_us(clocked_engine) == tat
    clock.advance(0.1)
    assert len((await claim(10)).jobs) == 1  # one interval later: one start, as without the replay


async def test_the_override_wins_zero_lifts_and_clearing_it_brings_the_code_back(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    await queued(clocked_engine, 40)
    await clocked_engine.set_controls(QUEUE, {"rate": "1000000", "burst": "1", "maxrun": "2"})
    claim = Claimer(clocked_engine)
    assert len((await claim(10)).jobs) == 1
    await clocked_engine.set_controls(QUEUE, {"o:rate": "0", "o:maxrun": "0"})  # lifted
    assert len((await claim(10)).jobs) == 10
    await clocked_engine.set_controls(QUEUE, {"o:rate": "100000", "o:burst": "4", "o:maxrun": ""})
    clock.advance(10)
    capped = await claim(10)  # max 2 running from the code, 11 run already
    assert (len(capped.jobs), capped.wait_ms) == (0, 100)
    await clocked_engine.set_controls(QUEUE, {"o:maxrun": "100"})
    assert len((await claim(10)).jobs) == 4  # the override's burst
    await clocked_engine.set_controls(QUEUE, {"o:rate": None, "o:burst": None, "o:maxrun": None})
    clock.advance(10)
    assert [len((c := await claim(10)).jobs), c.wait_ms] == [0, 100]  # the code's max_running again


async def test_max_running_counts_running_jobs_and_a_reaped_lease_gives_the_slot_back(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    await queued(clocked_engine, 5)
    await clocked_engine.set_controls(QUEUE, {"maxrun": "2"})
    claim = Claimer(clocked_engine)
    first = await claim(5)
    assert (len(first.jobs), first.wait_ms) == (2, 100)
    assert await clocked_engine.ack(first.jobs[0])
    assert len((await claim(5)).jobs) == 1
    assert len((await claim(5)).jobs) == 0
    clock.advance(LEASE / 1000 + 1)  # the worker is gone: its leases lapse
    reaped = await clocked_engine.reap(QUEUE, max_stalls=3)
    assert len(reaped.requeued) == 2
    again = await claim(5)
    assert len(again.jobs) == 2 and {j.attempts_used for j in again.jobs} == {0}


async def test_declared_limits_are_written_once_per_version_and_clear_what_they_leave_out(
    engine: RedisEngine,
) -> None:
    meta = engine.keys(QUEUE).meta
    await engine.set_controls(QUEUE, {"o:rate": "5000"})
    first = {"rate": "10000", "burst": "2", "maxrun": None, "v": "v1"}
    assert await engine.declare_controls(QUEUE, first) is True
    assert await engine.declare_controls(QUEUE, {**first, "rate": "1"}) is False  # same v: left alone
    second = {"rate": None, "burst": None, "maxrun": "3", "v": "v2"}
    assert await engine.declare_controls(QUEUE, second) is True
    assert (await engine.controls([QUEUE]))[0] == {"maxrun": "3", "v": "v2", "o:rate": "5000"}
    assert await engine.redis.exists(meta) == 1


async def test_a_worker_writes_the_declared_limits_when_it_starts_a_sharded_queue_its_parts(
    engine: RedisEngine, caplog: pytest.LogCaptureFixture
) -> None:
    ShardedQueue("limits-it-sharded", shards=2)
    QueueLimits(QUEUE, rate="50/second", burst=5, max_running=3, group_rate="1/second")
    QueueLimits("limits-it-sharded", rate="30/second", max_running=6)
    caplog.set_level(logging.INFO, logger="aiojobs_redis.worker")
    # Limits another deployment declared for a queue served here without a declaration.
    elsewhere = {"rate": "1000", "burst": None, "v": "elsewhere"}
    await engine.declare_controls("limits-it-plain", elsewhere)
    for _ in range(2):  # the second worker finds the same version: nothing written or logged
        queues = [QUEUE, "limits-it-sharded", "limits-it-plain"]
        await Worker(engine, queues, burst=True, schedules=False).run()
    metas = await engine.controls([QUEUE, "limits-it-sharded", "limits-it-sharded#0", "limits-it-sharded#1"])
    assert {k: v for k, v in metas[0].items() if k != "v"} == {
        "rate": "20000",
        "burst": "5",
        "maxrun": "3",
        "grate": "1000000",
    }
    assert [(m["rate"], m["maxrun"], "burst" in m) for m in metas[1:]] == [("100000", "2", False)] * 3
    assert (await engine.controls(["limits-it-plain"]))[0] == {"rate": "1000", "v": "elsewhere"}  # left alone
    written = [r.getMessage() for r in caplog.records if "limits from the code set" in r.getMessage()]
    assert len(written) == 4, written
    assert any("divided among it and its 2 shards" in line for line in written)


def test_the_limits_command_sets_shows_and_clears_overrides(
    redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--url", redis_url, "--prefix", prefix]
    overrides = ["--rate", "10/second", "--burst", "2", "--max-running", "0"]
    # A queue Redis has not seen is refused as a typo (nothing is written), unless --new.
    assert cli.main(["limits", "set", QUEUE, *overrides, *base]) == 1
    assert f"unknown queue {QUEUE!r}" in capsys.readouterr().err
    assert cli.main(["limits", "clear", QUEUE, *base]) == 1
    assert "pass --new" not in capsys.readouterr().err
    assert cli.main(["limits", "set", QUEUE, *overrides, "--new", *base]) == 0
    out = capsys.readouterr().out
    assert "overridden: rate 10/second, burst 2, max_running no limit" in out
    assert cli.main(["limits", "show", QUEUE, "--json", *base]) == 0
    shown = capsys.readouterr().out
    assert '"o:rate":"100000"' in shown and '"o:maxrun":"0"' in shown and '"maxrun":null' in shown
    assert cli.main(["limits", "clear", QUEUE, "--rate", *base]) == 0
    out = capsys.readouterr().out
    assert "limits of limits-it: overridden rate cleared (where set)" in out
    assert "rate               -     -" in out and "burst              -     2" in out
    assert cli.main(["limits", "clear", QUEUE, *base]) == 0
    capsys.readouterr()
    assert cli.main(["limits", "show", QUEUE, "--json", *base]) == 0
    assert '"controls":{}' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["limits", "set", QUEUE, "--rate", "10/fortnight", *base])
    assert "invalid rate '10/fortnight'" in capsys.readouterr().err
    assert cli.main(["limits", "set", QUEUE, "--rate", "2.5", *base]) == 0  # a number per second
    assert "rate 2.5/second" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["limits", "set", QUEUE, "--burst", "0", *base])
    assert "expected a whole number >= 1, not '0'" in capsys.readouterr().err
    assert cli.main(["limits", "set", QUEUE, *base]) == 1
    assert "give at least one limit" in capsys.readouterr().err


async def test_an_override_of_a_sharded_queue_is_divided_among_the_queue_and_its_shards(
    engine: RedisEngine, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    members = ["limits-it-cli", "limits-it-cli#0", "limits-it-cli#1"]
    await engine.register_queues(members)  # as the workers serving it do; the command has no code
    base = ["--url", redis_url, "--prefix", prefix]
    overrides = ["--rate", "30/second", "--max-running", "4", "--group-rate", "2/s"]
    argv = ["limits", "set", "limits-it-cli", *overrides, *base]
    assert await anyio.to_thread.run_sync(cli.main, argv) == 0
    shown = capsys.readouterr().out
    assert all(f"{q}\n" in shown for q in members), shown
    metas = await engine.controls(members)
    assert [(m["o:rate"], m["o:maxrun"], m["o:grate"]) for m in metas] == [
        ("100000", "2", "500000"),
        ("100000", "1", "500000"),
        ("100000", "1", "500000"),
    ]


class HoldsItsSlot(Job):
    """Runs until the test ends, so max_running=1 stays reached."""

    name = "limits.HoldsItsSlot"
    queue = "limits-first"

    async def handle(self) -> None:
        await anyio.sleep(60)


class QuickAfter(Job):
    name = "limits.QuickAfter"
    queue = "limits-second"
    done = 0

    async def handle(self) -> None:
        await anyio.sleep(0.05)  # a round per slot freed: the first queue's hold lapses meanwhile
        QuickAfter.done += 1


async def test_a_queue_a_limit_holds_back_does_not_starve_the_next_queue(engine: RedisEngine) -> None:
    """The first queue in priority order has more ready jobs than a round claims, but its
    max_running is reached: each round's share goes to the next queue instead of an idle wait."""
    await engine.set_controls("limits-first", {"maxrun": "1"})
    await HoldsItsSlot.dispatch_many([{"n": n} for n in range(300)])
    await QuickAfter.dispatch_many([{"n": n} for n in range(40)])
    QuickAfter.done = 0
    worker = Worker(
        engine, ["limits-first", "limits-second"], concurrency=3, batch_size=2, telemetry=False, grace=0
    )
    idle_waits_before_drained = 0  # idle waits while the second queue still had ready jobs
    wait_for_work = engine.wait_for_work

    async def counted_wait(queues: Sequence[str], block_seconds: float) -> bool:
        nonlocal idle_waits_before_drained
        idle_waits_before_drained += worker.counters.claimed < 41
        return await wait_for_work(queues, block_seconds)

    engine.wait_for_work = counted_wait  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.move_on_after(30):
            while QuickAfter.done < 40:
                await anyio.sleep(0.02)
        worker.stop()
    assert QuickAfter.done == 40
    assert worker.counters.claimed == 41  # one of the first queue's, all of the second's
    # The second queue's jobs were claimed round after round, with no idle wait between.
    assert idle_waits_before_drained == 0


async def test_clearing_a_declared_rate_clears_its_burst_too(
    engine: RedisEngine, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await engine.set_controls("limits-it-declared", {"rate": "200000", "burst": "3", "maxrun": "4", "v": "x"})
    argv = [
        "limits",
        "clear",
        "limits-it-declared",
        "--rate",
        "--declared",
        "--url",
        redis_url,
        "--prefix",
        prefix,
    ]
    assert await anyio.to_thread.run_sync(cli.main, argv) == 0
    assert "declared rate, burst cleared (where set)" in capsys.readouterr().out
    # A burst without its rate is what QueueLimits refuses: it does not stay behind.
    assert await engine.controls(["limits-it-declared"]) == [{"maxrun": "4"}]
