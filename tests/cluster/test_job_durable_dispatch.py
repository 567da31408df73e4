"""`Job.dispatch(durable=...)` and `Job.dispatch_many(durable=...)` reach the engine.

On the session's Cluster and Sentinel deployments (one replica per primary). Asking for two
replicas can never be met there, so a dispatch that waits for replicas raises NotReplicated
and one that does not wait returns: which of the two happens shows what the Job API passed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot
from support.deployments import ClusterDeployment, SentinelDeployment
from support.keyspace import delete_prefix

from aiojobs_redis import Job, NotReplicated, RedisEngine, Settings, use_engine
from aiojobs_redis.records import parse_inline

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

Deployment = ClusterDeployment | SentinelDeployment
UNMET = {"durable_replicas": 2, "durable_timeout": 0.2}  # more replicas than there are


class Parcel(Job):
    name = "job_durable_dispatch.Parcel"  # another test module has a job Parcel
    queue = "parcels"

    async def handle(self) -> None:  # pragma: no cover - only dispatched here
        return None


@pytest.fixture(params=["cluster", "sentinel"])
def deployment(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def nodes(request: pytest.FixtureRequest, deployment: str) -> Deployment:
    """The processes of the deployment the test runs on."""
    found: Deployment = request.getfixturevalue(
        "redis_cluster" if deployment == "cluster" else "sentinel_deployment"
    )
    return found


@pytest.fixture
async def cleanup(settings: Settings) -> AsyncIterator[None]:
    yield
    await delete_prefix(settings.url, settings.prefix)


def queued_on_replica(deployment: Deployment, queue_list: str) -> set[str]:
    """The ids of the jobs waiting inline in `queue_list`, as the replica of its primary has it."""
    if isinstance(deployment, ClusterDeployment):
        primary = deployment.owner_of_slot(key_slot(queue_list.encode()))
        [replica] = deployment.replicas_of(primary)
    else:
        [replica] = [n for n in deployment.data_nodes if n.port != deployment.current_primary_port()]
    with replica.client() as client:
        if isinstance(deployment, ClusterDeployment):
            client.execute_command("READONLY")
        entries: list[bytes | str] = client.lrange(queue_list, 0, -1)
    raw = [e.encode() if isinstance(e, str) else e for e in entries]  # the client may decode replies
    return {record[0] for record in map(parse_inline, raw) if record is not None}


@pytest.mark.usefixtures("cleanup")
async def test_durable_true_waits_for_replicas_and_the_default_does_not(settings: Settings) -> None:
    assert settings.durable is False  # the default setting
    async with RedisEngine(settings.with_(**UNMET)) as engine:
        with use_engine(engine):
            assert await Parcel({}).dispatch(), "the setting says: do not wait"
            assert len(await Parcel.dispatch_many([{}, {}, {}])) == 3

            started = time.monotonic()
            with pytest.raises(NotReplicated) as single:
                await Parcel({}).dispatch(durable=True)
            waited = time.monotonic() - started
            assert 0.15 < waited < 2, "it waited for the replicas, up to durable_timeout"
            assert "1 of 2 replica(s)" in str(single.value)
            [job_id] = single.value.job_ids
            info = await engine.get_job("parcels", job_id)
            assert info is not None and info.state == "ready", "stored, only not confirmed"

            with pytest.raises(NotReplicated) as many:
                await Parcel.dispatch_many([{"n": n} for n in range(5)], durable=True)
            assert len(many.value.job_ids) == 5


@pytest.mark.usefixtures("cleanup")
async def test_the_durable_setting_is_the_default_and_false_overrides_it(settings: Settings) -> None:
    async with RedisEngine(settings.with_(durable=True, **UNMET)) as engine:
        with use_engine(engine):
            with pytest.raises(NotReplicated):
                await Parcel({}).dispatch()
            with pytest.raises(NotReplicated):
                await Parcel.dispatch_many([{}, {}])
            assert await Parcel({}).dispatch(durable=False)
            assert len(await Parcel.dispatch_many([{}, {}], durable=False)) == 2


@pytest.mark.usefixtures("cleanup")
async def test_a_durable_job_dispatch_is_on_the_replica_when_it_returns(
    settings: Settings, nodes: Deployment
) -> None:
    async with RedisEngine(settings) as engine:
        with use_engine(engine):
            ids = [await Parcel({"n": n}).dispatch(durable=True) for n in range(10)]
            ids += await Parcel.dispatch_many([{"n": n} for n in range(50)], durable=True)
        on_replica = queued_on_replica(nodes, engine.keys("parcels").ready)
    assert set(ids) - on_replica == set()
