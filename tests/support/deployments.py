"""Real local deployments on loopback: a Redis Cluster, and a primary + replica under Sentinel.

`redis-server` and `redis-cli` from PATH. Every process listens on 127.0.0.1 only, on free
ports, with its data in a directory of its own; `kill()` is `kill -9`.
"""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from support.redis_server import PORT_TRIES, free_port, log_size, port_taken, server_binary
from support.wait import wait_until

# What a node that is starting, stopping or failing over answers meanwhile.
SERVER_ERRORS = (redis.RedisError, OSError)


def redis_cli() -> str | None:
    return shutil.which("redis-cli")


class Node:
    """One redis-server process on 127.0.0.1."""

    def __init__(self, directory: Path, *extra: str, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.may_move = port is None  # until its first start: then others know the port
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        for _ in range(PORT_TRIES):
            offset = log_size(log)
            self.proc = subprocess.Popen(self._args(log))
            wait_until(
                functools.partial(self._answers_or_lost_its_port, log, offset),
                10,
                f"redis-server on port {self.port}",
                ignore=SERVER_ERRORS,
            )
            if self.answers():
                self.may_move = False
                return
            self.port = free_port()
            if "--cluster-port" in self.extra:  # the bus port may be the one taken
                self.extra[self.extra.index("--cluster-port") + 1] = str(free_port())
        raise AssertionError(f"redis-server found {PORT_TRIES} ports taken in turn")

    @property
    def bus_port(self) -> int:
        """A Cluster node's bus port."""
        return int(self.extra[self.extra.index("--cluster-port") + 1])

    def _answers_or_lost_its_port(self, log: Path, offset: int) -> bool:
        """Up, or gone at once because its port was taken (while it may still move)."""
        return self.answers() or (self.may_move and not self.alive and port_taken(log, offset))

    def _args(self, log: Path) -> list[str]:
        return [
            server_binary(),
            *self.extra,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--logfile",
            str(log),
        ]

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def info(self, section: str) -> dict[str, object]:
        with self.client() as client:
            return client.info(section)  # type: ignore[no-any-return]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _replicate(node: Node, primary_id: str) -> bool:
    with node.client() as client:
        return bool(client.execute_command("CLUSTER", "REPLICATE", primary_id))


class ClusterDeployment:
    """`primaries` primaries with `replicas` replicas each, made a cluster by redis-cli."""

    def __init__(
        self, directory: Path, *, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000
    ):
        self.directory = directory
        self.primaries_wanted = primaries
        self.replicas = replicas
        self.nodes = [
            Node(
                directory / f"node-{i}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                "--cluster-port",
                str(free_port()),
                "--save",
                "",
                "--appendonly",
                "yes",
            )
            for i in range(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(
            f"127.0.0.1:{n.port}" for n in self.nodes[: self.primaries_wanted]
        )

    def start(self) -> float:
        """Start the nodes and form the cluster; return the seconds it took."""
        started = time.monotonic()
        for node in self.nodes:
            node.start()
        cli = redis_cli()
        if cli is not None:
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        else:
            self._create_by_hand()
        self.wait_healthy()
        return time.monotonic() - started

    def _create_by_hand(self) -> None:
        """What `redis-cli --cluster create` does, for servers that come without redis-cli."""
        primaries = self.nodes[: self.primaries_wanted]
        with self.nodes[0].client() as first:
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        for i, node in enumerate(primaries):
            low = i * 16384 // len(primaries)
            high = (i + 1) * 16384 // len(primaries) - 1
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)

        def everyone_met() -> bool:
            return all(len(self._cluster_nodes_of(n)) == len(self.nodes) for n in self.nodes)

        wait_until(everyone_met, 30, "the nodes to meet", ignore=SERVER_ERRORS)
        for i, node in enumerate(self.nodes[len(primaries) :]):
            with primaries[i % len(primaries)].client() as client:
                primary_id: str = client.execute_command("CLUSTER", "MYID")
            wait_until(
                functools.partial(_replicate, node, primary_id),
                30,
                "a replica to follow its primary",
                ignore=SERVER_ERRORS,
            )

    def alive_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def wait_healthy(self, timeout: float = 30) -> float:
        """Until every live node says cluster_state:ok and each replica's link is up."""

        def healthy() -> bool:
            for node in self.alive_nodes():
                if node.info("cluster").get("cluster_enabled") != 1:
                    return False
                with node.client() as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                replication = node.info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
            return len(self.primaries()) == self.primaries_wanted

        return wait_until(healthy, timeout, "the cluster to be healthy", ignore=SERVER_ERRORS)

    def _cluster_nodes(self) -> list[list[str]]:
        for node in self.alive_nodes():
            return self._cluster_nodes_of(node)
        raise RuntimeError("no node of the cluster is alive")

    @staticmethod
    def _cluster_nodes_of(node: Node) -> list[list[str]]:
        with node.client() as client:
            text: str = client.execute_command("CLUSTER", "NODES")
        return [line.split() for line in text.splitlines() if line.strip()]

    def primaries(self) -> list[Node]:
        """The live primaries that own slots, in slot order."""
        by_port = {n.port: n for n in self.alive_nodes()}
        owners: list[tuple[int, Node]] = []
        for fields in self._cluster_nodes():
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            flags = fields[2].split(",")
            if "master" in flags and "fail" not in flags and len(fields) > 8 and port in by_port:
                first_slot = int(fields[8].split("-")[0])
                owners.append((first_slot, by_port[port]))
        return [node for _, node in sorted(owners, key=lambda pair: pair[0])]

    def replicas_of(self, primary: Node) -> list[Node]:
        """The live replicas of `primary`."""
        rows = self._cluster_nodes()
        ids = {int(f[1].split("@")[0].rsplit(":", 1)[1]): f[0] for f in rows}
        ports = [int(f[1].split("@")[0].rsplit(":", 1)[1]) for f in rows if f[3] == ids[primary.port]]
        return [n for n in self.alive_nodes() if n.port in ports]

    def queue_on(self, primary: Node, base: str) -> str:
        """A queue name `base-N` whose hash tag's slot `primary` owns."""
        for n in range(10_000):
            name = f"{base}-{n}"
            if self.owner_of_slot(key_slot(name.encode())) is primary:
                return name
        raise LookupError(f"no queue name for {primary.port}")

    def owner_of_slot(self, slot: int) -> Node:
        for fields in self._cluster_nodes():
            flags = fields[2].split(",")
            if "master" not in flags or "fail" in flags:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no live primary owns slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> ClusterDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


SENTINEL_CONF = """port {port}
bind 127.0.0.1
dir {dir}
logfile {dir}/sentinel.log
sentinel monitor {service} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {service} 1000
sentinel failover-timeout {service} 5000
"""


class SentinelDeployment:
    """A primary, `replicas` replicas and three sentinels watching them as `service`."""

    def __init__(self, directory: Path, *, replicas: int = 1, service: str = "mymaster") -> None:
        self.directory = directory
        self.service = service
        persistence = ("--save", "", "--appendonly", "yes")
        self.primary = Node(directory / "primary", *persistence)
        # Their --replicaof is set once the primary has started: it may move to another port.
        self.replicas = [Node(directory / f"replica-{i}", *persistence) for i in range(replicas)]
        self.sentinels = [Node(directory / f"sentinel-{i}") for i in range(3)]

    @property
    def data_nodes(self) -> list[Node]:
        return [self.primary, *self.replicas]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self) -> float:
        started = time.monotonic()
        self.primary.start()
        for replica in self.replicas:
            if "--replicaof" not in replica.extra:
                replica.extra += ["--replicaof", "127.0.0.1", str(self.primary.port)]
            replica.start()
        for sentinel in self.sentinels:
            sentinel.directory.mkdir(parents=True, exist_ok=True)
            conf = sentinel.directory / "sentinel.conf"
            conf.write_text(
                SENTINEL_CONF.format(
                    port=sentinel.port,
                    dir=sentinel.directory,
                    service=self.service,
                    primary=self.primary.port,
                )
            )
            sentinel.extra = [str(conf), "--sentinel"]
            sentinel.start()
        self.wait_watching()
        return time.monotonic() - started

    def sentinel_view(self, sentinel: Node) -> dict[str, object]:
        with sentinel.client() as client:
            return client.sentinel_master(self.service)  # type: ignore[no-any-return]

    def wait_watching(self, timeout: float = 30) -> float:
        """Until every sentinel knows the others and the replicas, and the replicas are in sync."""
        replicas = sum(1 for r in self.replicas if r.alive)

        def watching() -> bool:
            for sentinel in self.sentinels:
                view = self.sentinel_view(sentinel)
                if view["num-other-sentinels"] != 2 or view["num-slaves"] != replicas:
                    return False
            return all(
                r.info("replication").get("master_link_status") == "up" for r in self.replicas if r.alive
            )

        return wait_until(watching, timeout, "the sentinels to watch the primary", ignore=SERVER_ERRORS)

    def current_primary_port(self) -> int:
        for sentinel in self.sentinels:
            if sentinel.alive:
                with sentinel.client() as client:
                    _host, port = client.sentinel_get_master_addr_by_name(self.service)
                return int(port)
        raise RuntimeError("no sentinel is alive")

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data_nodes]:
            node.stop()

    def __enter__(self) -> SentinelDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
