"""Deployment URLs and settings, and the sharding rules, without a server (one test tries a dead port)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from aiojobs_redis import ConfigurationError, EngineUnavailable, InvalidQueueName, Job, RedisEngine, Settings
from aiojobs_redis.config import redact_url
from aiojobs_redis.sharding import (
    Router,
    ShardedQueue,
    expand,
    fair_shares,
    members,
    plan_claims,
    shard_count,
)
from aiojobs_redis.topology import Topology, parse

# -- URLs and settings ------------------------------------------------------------------------


def test_a_cluster_url_lists_startup_nodes() -> None:
    topo = parse("redis+cluster://app:s3cret@127.0.0.1:7000,127.0.0.1:7001,[::1]:7002")
    assert topo == Topology(
        kind="cluster",
        nodes=(("127.0.0.1", 7000), ("127.0.0.1", 7001), ("::1", 7002)),
        username="app",
        password="s3cret",
    )
    assert parse("rediss+cluster://h1").nodes == (("h1", 6379),)
    assert parse("rediss+cluster://h1").tls is True


def test_a_sentinel_url_names_the_primary() -> None:
    topo = parse("redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/2?sentinel_password=sp")
    assert (topo.kind, topo.service, topo.db, topo.password, topo.sentinel_password) == (
        "sentinel",
        "mymaster",
        2,
        "pw",
        "sp",
    )
    assert topo.nodes == (("127.0.0.1", 26379), ("127.0.0.1", 26380))
    assert parse("redis+sentinel://s1/m").nodes == (("s1", 26379),)


def test_settings_can_say_cluster_or_sentinel_for_a_plain_url() -> None:
    assert parse("redis://127.0.0.1:7000,127.0.0.1:7001", cluster=True).kind == "cluster"
    sentinel = parse("redis://127.0.0.1:26379", sentinel_service="mymaster")
    assert (sentinel.kind, sentinel.service) == ("sentinel", "mymaster")
    assert parse("redis://127.0.0.1:6379/3").kind == "single"
    settings = Settings(url="redis://127.0.0.1:7000", cluster=True)
    assert settings.cluster is True


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",
        "redis+cluster://h:notaport",
        "redis+cluster://h:1/3",
        "redis+cluster://h:1?foo=1",
        "redis+sentinel://h:1",
        "redis+sentinel://h:1/m/notadb",
        "redis+sentinel://h:1/m/0/extra",
        "redis+sentinel://h:1/m?password=x",
        "http://h:1",
    ],
)
def test_bad_deployment_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings(url=url)


def test_a_cluster_has_only_database_zero() -> None:
    with pytest.raises(ConfigurationError, match="database 0"):
        Settings(url="redis+cluster://h:1", db=1)
    with pytest.raises(ConfigurationError):
        Settings(url="redis://h:1", cluster=True, sentinel_service="m")


def test_durable_settings_are_checked() -> None:
    assert Settings(durable=True).durable_replicas == 1
    with pytest.raises(ConfigurationError):
        Settings(durable_replicas=0)
    with pytest.raises(ConfigurationError):
        Settings(durable=True, durable_timeout=5, socket_timeout=5)


def test_passwords_of_deployment_urls_are_redacted() -> None:
    assert redact_url("redis+cluster://u:pw@h1:1,h2:2") == "redis+cluster://u:***@h1:1,h2:2"
    redacted = redact_url("redis+sentinel://:pw@s1:1,s2:2/m?sentinel_password=sp")
    assert "pw" not in redacted.replace("password", "") and "sp" not in redacted
    assert repr(Settings(url="redis+sentinel://:pw@s1:1/m")).count("pw") == 0


@pytest.mark.anyio
async def test_an_unreachable_cluster_is_engine_unavailable() -> None:
    started = time.monotonic()
    engine = RedisEngine(Settings(url="redis+cluster://127.0.0.1:1", socket_timeout=0.5))
    try:
        with pytest.raises(EngineUnavailable, match="Cluster"):
            await engine.ping()
    finally:
        await engine.aclose()
    assert time.monotonic() - started < 5


# -- sharding ---------------------------------------------------------------------------------


def test_a_sharded_queue_names_its_shards() -> None:
    queue = ShardedQueue("units-a", shards=4)
    assert queue.names == ["units-a#0", "units-a#1", "units-a#2", "units-a#3"]
    assert ShardedQueue("units-a", shards=4).shards == 4  # the same declaration again is fine
    with pytest.raises(ConfigurationError, match="already declared"):
        ShardedQueue("units-a", shards=5)
    for bad in (0, 1025, True, "4"):
        with pytest.raises(ConfigurationError):
            ShardedQueue("units-b", shards=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ShardedQueue("units-c#1", shards=2)
    with pytest.raises(InvalidQueueName):
        ShardedQueue("a:b", shards=2)


def test_shard_names_are_valid_queue_names_and_plain_ones_stay_strict() -> None:
    assert members("units-a") == ["units-a", "units-a#0", "units-a#1", "units-a#2", "units-a#3"]
    assert members("units-a#2") == ["units-a#2"]
    assert members("plain") == ["plain"]
    for bad in ("a#", "a#b", "#1", "a#12345", "a#1#2"):
        with pytest.raises(InvalidQueueName):
            expand([bad])


class ShardedByClass(Job):
    queue = "units-d"
    shards = 3

    async def handle(self) -> None:
        return None


class SameQueueUnsharded(Job):
    queue = "units-d"

    async def handle(self) -> None:
        return None


def test_dispatch_routes_round_robin_over_the_shards() -> None:
    router = Router()
    ShardedQueue("units-e", shards=4)

    class Declared(Job):
        queue = "units-e"

    picked = [router.route(Declared()) for _ in range(40)]
    assert Counter(picked) == dict.fromkeys(["units-e#0", "units-e#1", "units-e#2", "units-e#3"], 10)
    assert picked[:4] != picked[4:8] or len(set(picked[:4])) == 4
    by_class = Counter(router.route(ShardedByClass()) for _ in range(9))
    assert by_class == {"units-d#0": 3, "units-d#1": 3, "units-d#2": 3}
    # A class of the same queue that does not say it is sharded goes to the queue itself,
    # which workers serving the queue also drain.
    assert router.route(SameQueueUnsharded()) == "units-d"
    assert shard_count("units-d") == 3
    assert expand(["units-d"]) == [["units-d", "units-d#0", "units-d#1", "units-d#2"]]


def test_expand_keeps_priority_groups_unless_fair() -> None:
    assert expand(["a", "units-d", "b", "a"]) == [
        ["a"],
        ["units-d", "units-d#0", "units-d#1", "units-d#2"],
        ["b"],
    ]
    assert expand(["a", "b"], fair=True) == [["a", "b"]]


def test_fair_shares_never_exceed_what_is_ready() -> None:
    assert fair_shares(10, [100, 100]) == [5, 5]
    assert fair_shares(10, [2, 100, 100]) == [2, 4, 4]
    assert fair_shares(10, [1, 1, 1]) == [1, 1, 1]
    assert fair_shares(3, [5, 5, 5, 5]) == [1, 1, 1, 0]
    assert fair_shares(0, [5]) == [0]
    assert sum(fair_shares(97, [40, 0, 13, 70])) == 97


def test_plan_claims_keeps_priority_between_groups_and_fairness_inside() -> None:
    groups = [["hi"], ["s0", "s1", "s2"], ["lo"]]
    ready = {"hi": 3, "s0": 50, "s1": 50, "s2": 1, "lo": 9}
    assert plan_claims(groups, ready, 100, turn=0) == [("hi", 3), ("s0", 48), ("s1", 48), ("s2", 1)]
    assert plan_claims(groups, ready, 2, turn=0) == [("hi", 2)]
    assert plan_claims(groups, {"s1": 5, "lo": 5}, 10, turn=0) == [("s1", 5), ("lo", 5)]
    # Remainders rotate: over many small rounds every shard gets its turn.
    firsts = Counter(
        plan_claims([["s0", "s1", "s2"]], dict.fromkeys(("s0", "s1", "s2"), 9), 1, t)[0][0] for t in range(30)
    )
    assert firsts == {"s0": 10, "s1": 10, "s2": 10}
    assert plan_claims(groups, {}, 10, turn=0) == []
