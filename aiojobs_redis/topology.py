"""Where Redis runs: one server, a Redis Cluster, or a primary watched by Sentinel.

The URL says which (`rediss+` instead of `redis+` for TLS)::

    redis://host:6379/0                                  one server (also rediss://, unix://)
    redis+cluster://[user:pw@]host:7000,host:7001        a Cluster; the nodes listed are only
                                                         where discovery starts
    redis+sentinel://[user:pw@]host:26379,host:26380/mymaster[/db][?sentinel_password=...]
                                                         the primary Sentinel names `mymaster`

The same can be said with settings: `cluster=True` with `redis://host:port[,host:port]`, or
`sentinel_service="mymaster"` with `redis://sentinel:port,...`. A password in the URL is the
data nodes'; Sentinel's own, if any, goes in `sentinel_username` / `sentinel_password`.

This module parses that, builds the redis-py clients (a `RedisCluster`, or a client whose
pool asks Sentinel where the primary is), maps the errors of a deployment in motion
(failover, resharding) to "unavailable", and waits on wake lists that live on several nodes.

Upgrading redis-py: this is one of the three modules that use its internals (wire.py,
durable.py, topology.py); read them, and run tests/faults/test_wire.py and the Cluster
suite, before anything else. Here: a Cluster's `nodes_manager` (blocking on wake lists
spread over nodes).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import parse_qsl, unquote

import anyio
from redis import exceptions as rex
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.crc import key_slot

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .config import Settings

Kind = Literal["single", "cluster", "sentinel"]

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
SINGLE_SCHEMES = ("redis://", "rediss://", "unix://")
SCHEMES = SINGLE_SCHEMES + CLUSTER_SCHEMES + SENTINEL_SCHEMES
_SENTINEL_QUERY = ("sentinel_username", "sentinel_password")

# Errors a Cluster answers while a failover or a slot migration is under way: the command
# did not run; try again shortly. (ClusterError is "TTL exhausted": too many redirections.)
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.ClusterError,
    rex.SlotNotCoveredError,
)
_TRANSIENT = (rex.ConnectionError, rex.TimeoutError, OSError, *UNAVAILABLE_ERRORS)
_UNREACHABLE_MESSAGES = (
    "Redis Cluster cannot be connected",
    "All slots are not covered",
    "could not agree on a valid slots cache",
)


@dataclass(frozen=True, slots=True)
class Topology:
    kind: Kind
    nodes: tuple[tuple[str, int], ...] = ()  # cluster startup nodes, or the sentinels
    service: str | None = None  # the primary's name in Sentinel
    username: str | None = None
    password: str | None = None
    tls: bool = False
    db: int | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def parse(url: str, *, cluster: bool = False, sentinel_service: str | None = None) -> Topology:
    """The deployment a URL (and the `cluster` / `sentinel_service` settings) describes."""
    if cluster and sentinel_service:
        raise ConfigurationError("cluster=True and sentinel_service exclude each other")
    if url.startswith(CLUSTER_SCHEMES) or (cluster and url.startswith(("redis://", "rediss://"))):
        return _parse_multi(url, "cluster", 6379, None)
    if url.startswith(SENTINEL_SCHEMES) or (sentinel_service and url.startswith(("redis://", "rediss://"))):
        return _parse_multi(url, "sentinel", 26379, sentinel_service)
    if cluster:
        raise ConfigurationError("cluster=True needs a redis:// or redis+cluster:// URL")
    return Topology("single")


def _parse_multi(url: str, kind: Kind, default_port: int, service: str | None) -> Topology:
    scheme, _, rest = url.partition("://")
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = tuple(_host_port(item, default_port, kind) for item in hosts.split(",") if item.strip())
    if not nodes:
        raise ConfigurationError(f"a {kind} URL needs at least one host:port")
    segments = [unquote(s) for s in path.split("/") if s]
    db: int | None = None
    if kind == "sentinel":
        if segments and service is None:
            service = segments.pop(0)
        if not service:
            raise ConfigurationError("a Sentinel URL names the primary: redis+sentinel://host:port/mymaster")
    if segments:
        try:
            db = int(segments.pop(0))
        except ValueError:
            raise ConfigurationError(f"invalid database number in the {kind} URL") from None
    if segments or fragment:
        raise ConfigurationError(f"unexpected path in the {kind} URL")
    if kind == "cluster" and db:
        raise ConfigurationError("a Redis Cluster has only database 0")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(options) - (set(_SENTINEL_QUERY) if kind == "sentinel" else set())
    if unknown:
        raise ConfigurationError(f"unsupported options in the {kind} URL: {', '.join(sorted(unknown))}")
    return Topology(
        kind=kind,
        nodes=nodes,
        service=service,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=scheme.startswith("rediss"),
        db=db,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _host_port(item: str, default_port: int, kind: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:7000
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ConfigurationError(f"invalid port in the {kind} URL") from None
    if not host or not 0 < number < 65536:
        raise ConfigurationError(f"invalid host:port in the {kind} URL")
    return host, number


def of(settings: Settings) -> Topology:
    return parse(settings.url, cluster=settings.cluster, sentinel_service=settings.sentinel_service)


# -- clients ----------------------------------------------------------------------------------


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool that waits for a free connection instead of failing when all are busy."""


def client_options(settings: Settings) -> dict[str, Any]:
    """The engine's connection options: timeouts, replays, health checks, db."""
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_timeout,
        # redis-py replays a command after a connection error; every script is safe to run
        # twice, so a few quick replays are welcome. Longer outages are the worker's
        # business (it reconnects with its own capped backoff).
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3),
        # RuntimeError: uvloop's word for a write to a connection that was reset.
        "retry_on_error": [rex.ConnectionError, rex.TimeoutError, RuntimeError],
        "health_check_interval": 30,
    }
    if settings.db is not None:
        options["db"] = settings.db
    return options | _no_maintenance_notifications()


def _no_maintenance_notifications() -> dict[str, Any]:
    """redis-py 7+ asks each new connection for maintenance notifications (a Redis Enterprise
    feature) and logs the refusal at DEBUG: the engine does not use them, so never ask."""
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # an older redis-py: nothing to turn off
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def open_client(settings: Settings, options: dict[str, Any], *, blocking: bool = False) -> Redis:
    """A client for the deployment in `settings`.

    `options` are the engine's connection options (timeouts, retries, health checks, db).
    `blocking=True` gives a small client of its own for blocking pops. A `RedisCluster` is
    returned under the `Redis` type: the engine uses only commands both provide, and
    `is_cluster()` tells them apart where it matters.
    """
    topo = of(settings)
    if topo.kind == "single":
        if blocking:
            return Redis(connection_pool=ConnectionPool.from_url(settings.url, max_connections=4, **options))
        pool = BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.max_connections,
            timeout=settings.socket_timeout,
            **options,
        )
        return Redis(connection_pool=pool)
    auth: dict[str, Any] = {"username": topo.username, "password": topo.password}
    if topo.kind == "cluster":
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topo.nodes],
            max_connections=settings.max_connections if not blocking else 256,
            ssl=topo.tls,
            socket_timeout=options["socket_timeout"],
            socket_connect_timeout=options["socket_connect_timeout"],
            health_check_interval=options.get("health_check_interval", 0),
            retry=options["retry"],
            **auth,
            **_no_maintenance_notifications(),
        )
        return cast(Redis, client)
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(topo.nodes),
        sentinel_kwargs={
            **timeouts,
            "username": topo.sentinel_username,
            "password": topo.sentinel_password,
            "ssl": topo.tls,
            **_no_maintenance_notifications(),
        },
    )
    node_options = dict(options, **auth, ssl=topo.tls)
    if topo.db is not None and "db" not in node_options:
        node_options["db"] = topo.db
    assert topo.service is not None
    if blocking:
        return sentinel.master_for(topo.service, max_connections=4, **node_options)  # type: ignore[no-any-return]
    return sentinel.master_for(  # type: ignore[no-any-return]
        topo.service,
        connection_pool_class=BlockingSentinelPool,
        max_connections=settings.max_connections,
        timeout=settings.socket_timeout,
        **node_options,
    )


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


async def close(client: Redis) -> None:
    """Close a client from open_client(), with its pool (and Sentinel's connections)."""
    if isinstance(client, RedisCluster):
        await client.aclose()
        # aclose() skips a client flagged for rediscovery (after a connection error):
        # disconnect every node it still knows either way.
        manager = client.nodes_manager
        for node in {*manager.nodes_cache.values(), *manager.startup_nodes.values()}:
            await node.disconnect()
        return
    pool = client.connection_pool
    await client.aclose(close_connection_pool=True)
    if isinstance(pool, SentinelConnectionPool):
        await pool.sentinel_manager.aclose()


def is_loopback(host: str) -> bool:
    """True for a host that is this machine for sure: "localhost" or a loopback address.

    Other names, `*.localhost` included, are not taken on trust: whether they resolve to
    this machine is the resolver's choice (RFC 6761 only says they should), and the
    dashboard decides on this whether a network listener needs authentication.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_transient(exc: BaseException) -> bool:
    """A transport error, a timeout, or a Cluster in failover or resharding: try again shortly."""
    return isinstance(exc, _TRANSIENT)


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean "the deployment cannot answer right now", not "refused"."""
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, rex.RedisClusterException) and str(exc).startswith(_UNREACHABLE_MESSAGES)


# -- blocking on wake lists spread over nodes -------------------------------------------------


def slot_of(key: str) -> int:
    return key_slot(key.encode())


async def blpop_any(client: Redis, keys: Sequence[str], seconds: float) -> bool:
    """BLPOP one token from any of `keys`; False when `seconds` pass first.

    On a Cluster, keys of different slots cannot share a BLPOP (CROSSSLOT): each slot gets
    its own, all at once, and the first token ends the others. A token that a cancelled
    BLPOP had already taken is lost, which costs nothing: the woken worker's next claim
    looks at every queue it serves. An error on one node is raised only when every
    slot's BLPOP failed, so a node in failover does not stop the wait on the others.
    """
    groups: dict[int, list[str]] = {}
    if isinstance(client, RedisCluster):
        # Discover the Cluster first, shielded: a stopping worker cancels this wait, and
        # redis-py leaks the connections of a discovery cancelled half way.
        with anyio.CancelScope(shield=True):
            await client.initialize()
        for key in keys:
            groups.setdefault(slot_of(key), []).append(key)
    if len(groups) <= 1:
        return await client.blpop(list(keys), seconds) is not None
    woke = False
    errors: list[Exception] = []

    async with anyio.create_task_group() as tg:

        async def pop(group: list[str]) -> None:
            nonlocal woke
            try:
                popped = await client.blpop(group, seconds)
            except Exception as exc:  # reported below unless another slot answered
                errors.append(exc)
                return
            if popped is not None:
                woke = True
                tg.cancel_scope.cancel()

        for group in groups.values():
            tg.start_soon(pop, group)
    if not woke and len(errors) == len(groups):
        raise errors[0]
    return woke
