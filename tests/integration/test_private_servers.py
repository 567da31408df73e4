"""The test suite's private servers: a port taken between choosing it and binding it (by a
client's local port, or another run's server) moves the server to another port, once."""

from __future__ import annotations

import socket
from pathlib import Path

from support.deployments import Node
from support.redis_server import RedisServer


def test_a_server_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        server = RedisServer(tmp_path / "server", aof=False)
        server.port = taken  # as if another process had bound the chosen port first
        node = Node(tmp_path / "node")
        node.port = taken
        try:
            server.start()
            node.start()
            assert server.port != taken and server.answers()
            assert node.port != taken and node.answers()
        finally:
            server.kill()
            node.kill()


def test_a_server_given_its_port_does_not_move(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        server = RedisServer(tmp_path / "server", port=taken, aof=False)
        try:
            server.start()
        except RuntimeError as exc:
            assert str(taken) in str(exc)
        else:
            raise AssertionError("a server given a taken port started elsewhere")
        finally:
            server.kill()
