"""kill -9 of a Cluster primary while worker processes and dispatchers run.

A Cluster of its own (3 primaries, 3 replicas, node timeout 1 s). Jobs go to a queue
sharded over every primary; two worker processes serve it; two sets of dispatchers run in
the test, one plain and one durable (WAIT for the replica). A primary is killed mid-run;
its replica takes over; the run must complete: every acknowledged job runs, except those
Redis's asynchronous replication lost, which the ledger counts (durable dispatches: none).
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

import anyio
import pytest
from redis.crc import key_slot
from support.clusterapp import HOPS, Hop
from support.deployments import SERVER_ERRORS, ClusterDeployment, Node
from support.failover import FULL, Producers, describe, figures, settle
from support.wait import wait_until
from support.worker_procs import Workers

from aiojobs_redis import EngineError, Job, NotReplicated, RedisEngine, Settings

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(300 if FULL else 120)]

RUN_SECONDS = 30.0 if FULL else 8.0
KILLS_AT = (6.0, 18.0) if FULL else (2.5,)
WORKERS = 4 if FULL else 2
JOB_SLEEP = 0.02


def victim(cluster: ClusterDeployment) -> Node:
    """The primary with a live replica that owns the most shards of `hops`."""
    owners = [cluster.owner_of_slot(key_slot(name.encode())) for name in HOPS.names]
    candidates = [n for n in cluster.primaries() if cluster.replicas_of(n)]
    return max(candidates, key=owners.count)


def wait_for_new_owner(cluster: ClusterDeployment, slot: int, old: Node) -> float:
    """Seconds until a live primary other than `old` owns `slot`."""

    def taken_over() -> bool:
        try:
            return cluster.owner_of_slot(slot) is not old
        except LookupError:  # the old primary is flagged failed; no one owns the slot yet
            return False

    return wait_until(taken_over, 30, "a replica to take over", ignore=SERVER_ERRORS)


async def test_a_primary_killed_mid_run_fails_over_and_the_run_completes(tmp_path: Path, prefix: str) -> None:
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    with ClusterDeployment(tmp_path / "cluster") as cluster:
        workers = Workers(cluster.url, prefix, tmp_path)
        try:
            await _run(cluster, workers, ledger_dir, prefix)
        finally:
            workers.stop_all()


async def _run(cluster: ClusterDeployment, workers: Workers, ledger_dir: Path, prefix: str) -> None:
    args = ("--import", "support.clusterapp", "--queue", "hops", "--concurrency", "20", "--lease", "2")
    for _ in range(WORKERS):
        workers.start(*args, "--reap-interval", "0.5")
    base = Settings(url=cluster.url, prefix=prefix, dispatch_timeout=5)
    payload = {"ledger": str(ledger_dir), "sleep": JOB_SLEEP}
    async with (
        RedisEngine(base) as plain_engine,
        RedisEngine(base.with_(durable=True, durable_timeout=0.5)) as durable_engine,
    ):
        plain = Producers(plain_engine, lambda: Hop(payload))
        durable = Producers(durable_engine, lambda: Hop(payload))
        stop = anyio.Event()
        kills: list[tuple[int, float, float]] = []  # port, killed at, promoted after
        started = time.time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(plain.run, stop)
            tg.start_soon(durable.run, stop)
            for kill_at in KILLS_AT:
                await anyio.sleep(started + kill_at - time.time())
                node = victim(cluster)
                slot = next(
                    key_slot(n.encode())
                    for n in HOPS.names
                    if cluster.owner_of_slot(key_slot(n.encode())) is node
                )
                killed_at = time.time()
                node.kill()
                promoted = await anyio.to_thread.run_sync(wait_for_new_owner, cluster, slot, node)
                kills.append((node.port, killed_at, promoted))
            await anyio.sleep(max(0.0, started + RUN_SECONDS - time.time()))
            stop.set()
        dispatched = {**plain.acked, **durable.acked, **durable.unconfirmed}
        settled = await settle(plain_engine, "hops", ledger_dir, set(dispatched), timeout=60)
        stats = await plain_engine.stats("hops")
    plain_result = figures(ledger_dir, plain.acked)
    durable_result = figures(ledger_dir, durable.acked)
    everything = figures(ledger_dir, dispatched)
    first_kill = kills[0][1]
    print()
    for port, killed_at, promoted in kills:
        print(
            f"Cluster: killed primary {port} at {killed_at - started:.1f} s; "
            f"its replica took over {promoted:.2f} s later"
        )
    last_kill = kills[-1][1]
    starts = sorted(r.at for r in everything.runs if r.event == "start")
    pause = max((b - a for a, b in itertools.pairwise(starts)), default=0.0)
    print(f"  longest pause between any two job starts: {pause:.2f} s")
    print(describe("  plain dispatch  ", plain, plain_result, first_kill, kills[0][2] + 2, last_kill))
    print(describe("  durable dispatch", durable, durable_result, first_kill, kills[0][2] + 2, last_kill))
    print(
        f"  all jobs: {len(dispatched)} dispatched in {RUN_SECONDS:.0f} s by {WORKERS} workers, settled "
        f"{settled:.1f} s after the dispatchers stopped; stored-but-unconfirmed that never ran: "
        f"{len(set(durable.unconfirmed) & set(everything.ledger.lost))}"
    )
    assert all(s.ready == s.delayed == s.running == 0 for s in stats), "nothing left queued or leased"
    assert durable_result.ledger.lost == [], "a dispatch the replica acknowledged survives the failover"
    assert len(plain_result.ledger.lost) <= len(plain.acked) // 20, (
        "losses only in Redis's replication window"
    )
    assert plain.acked and durable.acked
    assert len(workers.alive()) == WORKERS, "the workers rode out the failover"


class Parcel(Job):
    queue = "parcels"  # set per test run to a queue on the primary about to fail

    async def handle(self) -> None:
        return None


async def test_writes_the_replica_never_received_are_lost_unless_the_dispatch_was_durable(
    tmp_path: Path, prefix: str
) -> None:
    """Redis's own window, made wide on purpose: the replica is cut off, then its primary dies.

    The replica is stopped and the primary drops its replication link, so what is stored
    next exists on the primary only. Plain dispatches are acknowledged and die with it;
    durable ones are refused (NotReplicated) instead of acknowledged.
    """
    with ClusterDeployment(tmp_path / "cluster") as cluster:
        primary = cluster.primaries()[0]
        [replica] = cluster.replicas_of(primary)
        queue = cluster.queue_on(primary, "parcels")
        job = type("WindowParcel", (Parcel,), {"queue": queue, "name": "window.Parcel"})
        settings = Settings(url=cluster.url, prefix=prefix, dispatch_timeout=5)
        async with (
            RedisEngine(settings) as plain,
            RedisEngine(settings.with_(durable=True, durable_timeout=0.3)) as durable,
        ):
            before = await plain.dispatch_many([job({}) for _ in range(20)], durable=True)  # replicated
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGSTOP)
            try:
                with primary.client() as client:
                    client.client_kill_filter(_type="replica")
                acknowledged = await plain.dispatch_many([job({}) for _ in range(50)])
                with pytest.raises(NotReplicated) as refused:
                    await durable.dispatch_many([job({}) for _ in range(10)])
                primary.kill()
            finally:
                replica.proc.send_signal(signal.SIGCONT)
            slot = key_slot(queue.encode())
            took_over = await anyio.to_thread.run_sync(wait_for_new_owner, cluster, slot, primary)
            with anyio.fail_after(20):
                while True:
                    try:
                        ready = (await plain.stats(queue))[0].ready
                        break
                    except EngineError:
                        await anyio.sleep(0.2)
            survivors = {i for i in [*before, *acknowledged] if await plain.get_job(queue, i) is not None}
    lost = [i for i in acknowledged if i not in survivors]
    print(
        f"\nreplication window: replica cut off, primary killed, replica took over after {took_over:.2f} s; "
        f"plain: {len(acknowledged)} acknowledged, {len(lost)} lost; durable: 0 acknowledged, "
        f"{len(refused.value.job_ids)} refused with NotReplicated; {len(before)} replicated earlier all kept"
    )
    assert set(before) <= survivors, "what the replica had acknowledged survived"
    assert lost == acknowledged, "acknowledged but never replicated: lost with the primary"
    assert len(refused.value.job_ids) == 10
    assert ready == len(before)
