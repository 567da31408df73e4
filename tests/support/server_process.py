"""A Redis-protocol server seen from outside: its process id, whether it runs, whether it answers."""

from __future__ import annotations

import socket


def server_pid(url: str) -> int:
    """The server's process id, from its own INFO reply."""
    host, port = url.removeprefix("redis://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        reply = b""
        while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{url} closed the connection mid-reply")
            reply += chunk
    line = next(line for line in reply.decode().splitlines() if line.startswith("process_id:"))
    return int(line.split(":", 1)[1])


def is_gone(pid: int) -> bool:
    """True once `pid` no longer runs (exited and reaped, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def answers(url: str) -> bool:
    host, port = url.removeprefix("redis://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
