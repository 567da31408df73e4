"""kill -9 of the primary Sentinel watches, while worker processes and dispatchers run.

A deployment of its own: a primary, a replica, three sentinels (quorum 2, down after 1 s,
failover timeout 5 s). Two worker processes and the test's dispatchers (plain and durable)
are given only the sentinels' addresses; after the kill they must find the promoted replica
by themselves. The ledger counts lost and duplicated jobs; the test prints how long the
failover took and when dispatching and running resumed.
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

import anyio
import pytest
from support.deployments import SERVER_ERRORS, SentinelDeployment
from support.failover import FULL, Producers, describe, figures, settle
from support.faultapp import Record
from support.wait import wait_until
from support.worker_procs import Workers

from aiojobs_redis import EngineError, NotReplicated, RedisEngine, Settings

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(300 if FULL else 120)]

RUN_SECONDS = 30.0 if FULL else 10.0
KILL_AT = 8.0 if FULL else 2.5
WORKERS = 4 if FULL else 2


async def test_the_primary_killed_mid_run_is_replaced_and_everyone_follows(
    tmp_path: Path, prefix: str
) -> None:
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    with SentinelDeployment(tmp_path / "sentinel") as deployment:
        workers = Workers(deployment.url, prefix, tmp_path)
        try:
            await _run(deployment, workers, ledger_dir, prefix)
        finally:
            workers.stop_all()


async def _run(deployment: SentinelDeployment, workers: Workers, ledger_dir: Path, prefix: str) -> None:
    for _ in range(WORKERS):
        workers.start("--concurrency", "20", "--lease", "2", "--reap-interval", "0.5")
    base = Settings(url=deployment.url, prefix=prefix, dispatch_timeout=5)
    payload = {"ledger": str(ledger_dir), "sleep": 0.02}
    durable_settings = base.with_(durable=True, durable_timeout=0.5)
    async with RedisEngine(base) as plain_engine, RedisEngine(durable_settings) as durable_engine:
        plain = Producers(plain_engine, lambda: Record(payload))
        durable = Producers(durable_engine, lambda: Record(payload))
        stop = anyio.Event()
        old = deployment.primary
        started = time.time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(plain.run, stop)
            tg.start_soon(durable.run, stop)
            await anyio.sleep(KILL_AT)
            killed_at = time.time()
            old.kill()
            promoted = await anyio.to_thread.run_sync(
                lambda: wait_until(
                    lambda: deployment.current_primary_port() != old.port,
                    30,
                    "the sentinels to promote",
                    ignore=SERVER_ERRORS,
                )
            )
            await anyio.sleep(max(0.0, started + RUN_SECONDS - time.time()))
            stop.set()
        dispatched = {**plain.acked, **durable.acked, **durable.unconfirmed}
        settled = await settle(plain_engine, "faults", ledger_dir, set(dispatched), timeout=60)
        stats = await plain_engine.stats("faults")
    plain_result = figures(ledger_dir, plain.acked)
    durable_result = figures(ledger_dir, durable.acked)
    every_start = sorted(r.at for r in plain_result.runs if r.event == "start")
    after_kill = [at for i, at in dispatched.items() if at > killed_at]
    dispatch_resumed = min(after_kill, default=killed_at) - killed_at
    fresh = [
        r.at for r in plain_result.runs if r.event == "start" and dispatched.get(r.job_id, 0) > killed_at
    ]
    workers_resumed = min(fresh, default=killed_at) - killed_at
    gap = max((b - a for a, b in itertools.pairwise(every_start)), default=0.0)
    print(
        f"\nSentinel: killed primary {old.port} at {killed_at - started:.1f} s; sentinels promoted "
        f"port {deployment.current_primary_port()} {promoted:.2f} s later; dispatch resumed after "
        f"{dispatch_resumed:.2f} s, workers after {workers_resumed:.2f} s (longest pause between job "
        f"starts {gap:.2f} s)"
    )
    print(describe("  plain dispatch  ", plain, plain_result, killed_at, promoted + 2))
    print(describe("  durable dispatch", durable, durable_result, killed_at, promoted + 2))
    print(f"  {len(dispatched)} jobs dispatched in {RUN_SECONDS:.0f} s; settled {settled:.1f} s after")
    assert all(s.ready == s.delayed == s.running == 0 for s in stats), "nothing left queued or leased"
    assert durable_result.ledger.lost == [], "a dispatch the replica acknowledged survives the failover"
    assert len(plain_result.ledger.lost) <= len(plain.acked) // 20, (
        "losses only in Redis's replication window"
    )
    assert after_kill, "dispatchers found the new primary"
    assert fresh, "workers found the new primary"
    assert len(workers.alive()) == WORKERS, "the workers rode out the failover"


async def test_writes_the_replica_never_received_are_lost_unless_the_dispatch_was_durable(
    tmp_path: Path, prefix: str
) -> None:
    """The replication window behind Sentinel, made wide on purpose (see the Cluster test)."""
    with SentinelDeployment(tmp_path / "sentinel") as deployment:
        primary, [replica] = deployment.primary, deployment.replicas
        settings = Settings(url=deployment.url, prefix=prefix, dispatch_timeout=5)
        async with (
            RedisEngine(settings) as plain,
            RedisEngine(settings.with_(durable=True, durable_timeout=0.3)) as durable,
        ):
            before = await plain.dispatch_many([Record({}) for _ in range(20)], durable=True)
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGSTOP)
            try:
                with primary.client() as client:
                    client.client_kill_filter(_type="replica")
                acknowledged = await plain.dispatch_many([Record({}) for _ in range(50)])
                with pytest.raises(NotReplicated) as refused:
                    await durable.dispatch_many([Record({}) for _ in range(10)])
                primary.kill()
            finally:
                replica.proc.send_signal(signal.SIGCONT)
            promoted = await anyio.to_thread.run_sync(
                lambda: wait_until(
                    lambda: deployment.current_primary_port() == replica.port,
                    30,
                    "the promotion",
                    ignore=SERVER_ERRORS,
                )
            )
            with anyio.fail_after(20):
                while True:
                    try:
                        ready = (await plain.stats("faults"))[0].ready
                        break
                    except EngineError:
                        await anyio.sleep(0.2)
            survivors = {i for i in [*before, *acknowledged] if await plain.get_job("faults", i) is not None}
    lost = [i for i in acknowledged if i not in survivors]
    print(
        f"\nreplication window behind Sentinel: replica promoted {promoted:.2f} s after the kill; plain: "
        f"{len(acknowledged)} acknowledged, {len(lost)} lost; durable: 0 acknowledged, "
        f"{len(refused.value.job_ids)} refused with NotReplicated; {len(before)} replicated earlier all kept"
    )
    assert set(before) <= survivors
    assert lost == acknowledged
    assert len(refused.value.job_ids) == 10
    assert ready == len(before)
