"""One multiplexed connection for the engine's script calls.

redis-py spends tens of microseconds of Python on every command (pool checkout, retry
wrapper, observability hooks, reply callbacks), more than the round trip itself on
loopback. The engine's hot path is a few EVALSHA calls, every one of them safe to send
twice, so they share one pipelined connection instead: any task writes its commands at
once, hiredis parses the replies, and they are handed out in order. A caller that gives up
(cancelled) costs nothing: its reply is read and dropped, the connection stays usable.

redis-py still opens the connection (TLS and its verification, AUTH, HELLO, SELECT, all
from the same URL and options as the engine's pool); the wire then takes over its socket.
A reply that does not come within the socket timeout closes the connection, as does any
transport error; calls in flight then fail with redis-py's ConnectionError/TimeoutError
and are replayed by the same Retry policy the engine gives redis-py.

Upgrading redis-py: this is one of the three modules that use its internals (wire.py,
durable.py, topology.py); read them, and run tests/faults/test_wire.py and the Cluster
suite, before anything else. Here: `redis._parsers.base.BaseParser`,
`ConnectionPool.make_connection()` and the connection's `_reader`/`_writer`.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as rex
from redis._parsers.base import BaseParser
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry


class _Reply:
    """A reply's slot: the future a caller awaits, and when its command was written."""

    __slots__ = ("future", "sent_at")

    def __init__(self, future: asyncio.Future[Any], sent_at: float) -> None:
        self.future, self.sent_at = future, sent_at


class _Protocol(asyncio.Protocol):
    """Reads replies for the commands written on one connection, in order."""

    def __init__(self, transport: asyncio.Transport, timeout: float, owner: object) -> None:
        self.transport = transport
        self._owner = owner  # the stream writer that opened it, kept until it is closed
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[_Reply] = collections.deque()
        self.closed: BaseException | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def send(self, packed: bytes, count: int) -> list[asyncio.Future[Any]]:
        if self.closed is None and self.transport.is_closing():
            self._fail(rex.ConnectionError("Connection closed by server."))
        if self.closed is not None:
            raise self.closed
        now = self.loop.time()
        futures = [self.loop.create_future() for _ in range(count)]
        self.waiting.extend(_Reply(f, now) for f in futures)
        self.transport.write(packed)
        if self._watchdog is None:
            self._watchdog = self.loop.call_at(now + self.timeout, self._check_overdue)
        return futures

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(rex.ConnectionError(f"Protocol error: {exc}"))
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream cannot be trusted
                self._fail(rex.ConnectionError("unexpected reply from Redis"))
                return
            future = self.waiting.popleft().future
            if not future.done():  # done: its caller was cancelled
                if isinstance(reply, hiredis.ReplyError):
                    future.set_result(BaseParser.parse_error(str(reply)))  # type: ignore[no-untyped-call]
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(rex.ConnectionError(f"Connection lost: {exc}" if exc else "Connection closed by server."))

    def eof_received(self) -> bool | None:
        self._fail(rex.ConnectionError("Connection closed by server."))
        return None

    def _check_overdue(self) -> None:
        self._watchdog = None
        if not self.waiting or self.closed is not None:
            return
        due = self.waiting[0].sent_at + self.timeout
        if self.loop.time() >= due:
            self._fail(rex.TimeoutError("Timeout reading from socket"))
        else:
            self._watchdog = self.loop.call_at(due, self._check_overdue)

    def _fail(self, error: BaseException) -> None:
        if self.closed is None:
            self.closed = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.transport.abort()  # replies still in flight can no longer be matched
        while self.waiting:
            future = self.waiting.popleft().future
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self._fail(rex.ConnectionError("Connection closed by the client."))


async def _no_cleanup(error: BaseException) -> None:
    """Nothing to undo before a replay: a failed connection has already closed itself."""


class Wire:
    """Pipelined calls over one connection, for commands that are safe to send twice."""

    def __init__(self, pool: ConnectionPool, *, timeout: float, retry: Retry) -> None:
        self._pool = pool
        self._timeout = timeout
        self._retry = retry
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._closed = False

    async def call(self, *args: Any) -> Any:
        """One command's reply; an error reply is raised as redis-py's exception."""
        [reply] = await self.call_many([args])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies to `commands`, sent in one write; error replies are returned in place."""
        packed = b"".join(hiredis.pack_command(tuple(command)) for command in commands)
        return await self._retry.call_with_retry(lambda: self._send(packed, len(commands)), _no_cleanup)

    async def _send(self, packed: bytes, count: int) -> list[Any]:
        protocol = self._protocol
        if protocol is None or protocol.closed is not None:
            protocol = await self._connect()
        futures = protocol.send(packed, count)
        try:
            return [await future for future in futures]
        except BaseException:
            for future in futures:
                if not future.done():
                    future.cancel()  # cancelled: its reply is dropped when it comes
                elif not future.cancelled():
                    future.exception()  # the connection's failure, raised once already
            raise

    async def _connect(self) -> _Protocol:
        if self._closed:
            raise rex.ConnectionError("the engine is closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            protocol = self._protocol
            if protocol is not None and protocol.closed is None:
                return protocol  # another caller connected meanwhile
            connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            await connection.connect()  # TLS, AUTH, HELLO, SELECT: redis-py's handshake
            writer = getattr(connection, "_writer", None)
            if writer is None:
                await connection.disconnect()
                raise rex.ConnectionError("cannot take over the connection's socket")
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            protocol = _Protocol(transport, self._timeout, writer)
            transport.set_protocol(protocol)
            connection._reader = connection._writer = None  # redis-py's object lets go of it
            self._protocol = protocol
            return protocol

    async def aclose(self) -> None:
        self._closed = True
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
