"""A TCP fault proxy between Redis clients and one Redis server, on 127.0.0.1 only.

The proxy runs its own event loop in a background thread, so sync and async tests drive it
the same way: start it, point the client at `proxy.url`, switch faults at run time.

Link states (one at a time):
  pass-through   bytes flow
  black hole     connections stay open (new ones are accepted) and nothing flows either way;
                 what was sent meanwhile is delivered once the hole closes, as TCP would
  reset          every connection is closed with RST, new ones too while the state lasts
  refuse         the port stops listening (connection refused); open connections are closed
Modifiers, with any state: a delay per chunk read (both directions), and replies delivered
one byte at a time.
Rules act on single requests, which the proxy frames from the client's RESP stream
(pipelined or split across reads alike): `drop_reply` forwards the request, lets Redis run
it, discards its reply and closes the connection (the client sees a connection error and
redis-py replays the command); `cut` forwards the first half of the request, then closes;
both keep the client's connection open and silent for `hold` seconds before closing it.
`late` delivers the request (and what follows it on that connection) `hold` seconds late,
even if the client has given up and closed meanwhile, as TCP retransmission would.

The proxy counts the commands it forwarded, by name, and records what its rules did.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import ipaddress
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

_READ = 65536
_CRLF = b"\r\n"
_MAX_LINE = 64 * 1024  # a RESP header line longer than this is garbage


class RespError(ValueError):
    """The byte stream is not RESP."""


# -- RESP framing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """One request as the client sent it."""

    name: str  # upper-cased; "" for an empty request
    args: tuple[bytes, ...]  # the arguments after the name
    raw: bytes  # the exact bytes, to forward or to recognise a replay

    @property
    def digest(self) -> bytes:
        return hashlib.blake2b(self.raw, digest_size=16).digest()


def _line(buf: bytes | bytearray, pos: int) -> int | None:
    """The offset of the CRLF ending the header line at `pos`, or None if it has not arrived."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        if len(buf) - pos > _MAX_LINE:
            raise RespError("header line too long")
        return None
    return end


def _int(buf: bytes | bytearray, start: int, end: int) -> int:
    try:
        return int(bytes(buf[start:end]))
    except ValueError:
        raise RespError(f"bad length {bytes(buf[start:end])!r}") from None


def parse_request(buf: bytes | bytearray, pos: int = 0) -> tuple[Command, int] | None:
    """Frame one request at `pos`: (command, offset after it), or None while incomplete.

    Requests are RESP arrays of bulk strings, or inline commands (a line of words).
    """
    if pos >= len(buf):
        return None
    if buf[pos] != ord("*"):
        return _parse_inline(buf, pos)
    header = _line(buf, pos)
    if header is None:
        return None
    cursor = header + 2
    parts: list[bytes] = []
    for _ in range(max(_int(buf, pos + 1, header), 0)):
        bulk = _parse_bulk(buf, cursor)
        if bulk is None:
            return None
        part, cursor = bulk
        parts.append(part)
    name = parts[0].decode("latin-1").upper() if parts else ""
    return Command(name, tuple(parts[1:]), bytes(buf[pos:cursor])), cursor


def _parse_inline(buf: bytes | bytearray, pos: int) -> tuple[Command, int] | None:
    end = buf.find(b"\n", pos)
    if end < 0:
        if len(buf) - pos > _MAX_LINE:
            raise RespError("inline command too long")
        return None
    words = bytes(buf[pos:end]).rstrip(b"\r").split()
    name = words[0].decode("latin-1").upper() if words else ""
    return Command(name, tuple(words[1:]), bytes(buf[pos : end + 1])), end + 1


def _parse_bulk(buf: bytes | bytearray, pos: int) -> tuple[bytes, int] | None:
    """One bulk string of a request at `pos`: (its bytes, offset after it), or None."""
    if pos >= len(buf):
        return None
    if buf[pos] != ord("$"):
        raise RespError(f"expected a bulk string, got {bytes(buf[pos : pos + 1])!r}")
    header = _line(buf, pos)
    if header is None:
        return None
    size = _int(buf, pos + 1, header)
    if size < 0:
        raise RespError("null bulk string in a request")
    start, stop = header + 2, header + 2 + size
    if stop + 2 > len(buf):
        return None
    if buf[stop : stop + 2] != _CRLF:
        raise RespError("bulk string not followed by CRLF")
    return bytes(buf[start:stop]), stop + 2


_SIMPLE = frozenset(b"+-:_,#(")  # one line
_BLOB = frozenset(b"$!=")  # a length, then that many bytes and CRLF
_AGGREGATE = frozenset(b"*~>")  # a count, then that many values
_PAIRS = frozenset(b"%|")  # a count, then twice that many values


def skip_value(buf: bytes | bytearray, pos: int) -> int | None:
    """The offset after one complete RESP2/RESP3 value at `pos`, or None while incomplete."""
    if pos >= len(buf):
        return None
    kind = buf[pos]
    end = _line(buf, pos)
    if end is None:
        return None
    if kind in _SIMPLE:
        return end + 2
    if kind in _BLOB:
        size = _int(buf, pos + 1, end)
        if size < 0:
            return end + 2
        stop = end + 2 + size + 2
        return stop if stop <= len(buf) else None
    if kind in _AGGREGATE or kind in _PAIRS:
        count = _int(buf, pos + 1, end)
        cursor: int | None = end + 2
        for _ in range(max(count, 0) * (2 if kind in _PAIRS else 1)):
            assert cursor is not None
            cursor = skip_value(buf, cursor)
            if cursor is None:
                return None
        return cursor
    raise RespError(f"unknown RESP type {bytes([kind])!r}")


def parse_reply(buf: bytes | bytearray, pos: int = 0) -> tuple[bytes, bool, int] | None:
    """Frame one reply at `pos`: (raw bytes, is a RESP3 push, offset after), or None.

    A RESP3 attribute travels with the reply after it. A push (`>`) answers no request.
    """
    cursor = pos
    if cursor < len(buf) and buf[cursor] == ord("|"):
        after = skip_value(buf, cursor)
        if after is None:
            return None
        cursor = after
    push = cursor < len(buf) and buf[cursor] == ord(">")
    end = skip_value(buf, cursor)
    if end is None:
        return None
    return bytes(buf[pos:end]), push, end


class RequestFramer:
    """Splits a client's byte stream into requests, however it arrives."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Command]:
        self._buf += data
        found: list[Command] = []
        pos = 0
        while (parsed := parse_request(self._buf, pos)) is not None:
            command, pos = parsed
            found.append(command)
        del self._buf[:pos]
        return found

    @property
    def pending(self) -> int:
        """Bytes of an incomplete request kept for the next read."""
        return len(self._buf)


class ReplyFramer:
    """Splits a server's byte stream into replies: (raw, is a push) each."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        self._buf += data
        found: list[tuple[bytes, bool]] = []
        pos = 0
        while (parsed := parse_reply(self._buf, pos)) is not None:
            raw, push, pos = parsed
            found.append((raw, push))
        del self._buf[:pos]
        return found


# -- rules and predicates ---------------------------------------------------------------------


Predicate = Callable[[Command], bool]


def named(*names: str) -> Predicate:
    """Requests whose command name is one of `names` (any case); no names: every request."""
    wanted = {n.upper() for n in names}
    return lambda command: not wanted or command.name in wanted


def evalsha(*shas: str) -> Predicate:
    """EVALSHA calls of the given script digests; none given: every EVALSHA."""
    wanted = {s.lower().encode() for s in shas}
    return lambda command: (
        command.name == "EVALSHA" and bool(command.args) and (not wanted or command.args[0].lower() in wanted)
    )


@dataclass(eq=False)
class Rule:
    """What to do with the n-th request that matches (and every n-th after it, with `every`,
    at most `limit` times).

    `fresh_only` ignores requests byte-identical to one this rule already acted on, so a
    client's replay of that request goes through (and is recorded as a "replay" event).
    """

    action: Literal["drop_reply", "cut", "late"]
    match: Predicate
    nth: int = 1
    every: bool = False
    limit: int | None = None
    fresh_only: bool = False
    hold: float = 0.0  # drop_reply, cut: the client's connection stays open and silent this long
    # late: the request reaches Redis this much later
    matched: int = 0
    fired: int = 0
    _acted: set[bytes] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if self.nth < 1 or self.hold < 0 or (self.limit is not None and self.limit < 1):
            raise ValueError("nth and limit must be >= 1, hold >= 0")

    def decide(self, command: Command, proxy: FaultProxy) -> bool:
        """Called on the proxy's loop for each request; True when the rule acts on it."""
        if not self.match(command):
            return False
        digest = command.digest
        if self.fresh_only and digest in self._acted:
            proxy.record("replay", command)
            return False
        limit = self.limit if self.every else 1
        if limit is not None and self.fired >= limit:
            return False
        self.matched += 1
        if self.matched % self.nth:
            return False
        self.fired += 1
        self._acted.add(digest)
        return True


class LinkState(enum.Enum):
    PASS = "pass"
    BLACK_HOLE = "black_hole"
    RESET = "reset"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class ProxyEvent:
    at: float  # time.time()
    kind: str  # drop_reply, cut, late, replay, reset
    command: str
    first_arg: bytes


# -- the proxy --------------------------------------------------------------------------------


def _loopback(host: str) -> str:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the fault proxy only uses loopback addresses, not {host!r}")
    return host


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with RST: linger on, timeout 0, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    client_reader: asyncio.StreamReader
    client: asyncio.StreamWriter
    server_reader: asyncio.StreamReader
    server: asyncio.StreamWriter
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0  # requests forwarded, in order
    received: int = 0  # replies seen, in order
    drop_at: int | None = None  # index of the request whose reply is dropped
    cutting: bool = False  # a request was cut: the link closes after the rule's hold
    hold: float = 0.0
    closed: bool = False

    @property
    def doomed(self) -> bool:
        """A rule acted: nothing more is forwarded to Redis on this link."""
        return self.cutting or self.drop_at is not None

    def close(self, *, rst: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.server):
            if rst:
                _rst(writer)
            else:
                writer.close()
        self.finished.set()


class FaultProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<upstream_port>, with faults switchable at run time."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = (_loopback(upstream_host), upstream_port)
        self.host = "127.0.0.1"
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._flowing: asyncio.Event | None = None
        self._state = LinkState.PASS
        self._delay = 0.0
        self._one_byte = False
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._forwarded: Counter[str] = Counter()
        self._events: list[ProxyEvent] = []
        self._connections = 0

    # -- life cycle (any thread) --------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._call(self._open())
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- switching faults (any thread) --------------------------------------------------------

    def pass_through(self) -> None:
        """Back to normal: bytes flow, no delay, whole replies, no rules."""
        self._call(self._set(LinkState.PASS, delay=0.0, one_byte=False, rules=[]))

    def black_hole(self) -> None:
        self._call(self._set(LinkState.BLACK_HOLE))

    def reset(self) -> None:
        self._call(self._set(LinkState.RESET))

    def refuse(self) -> None:
        self._call(self._set(LinkState.REFUSE))

    def restore(self) -> None:
        """Back to pass-through, keeping the delay, reply slicing and rules."""
        self._call(self._set(LinkState.PASS))

    def set_delay(self, seconds: float) -> None:
        self._call(self._set(None, delay=seconds))

    def slice_replies(self, on: bool = True) -> None:
        """Deliver replies one byte at a time."""
        self._call(self._set(None, one_byte=on))

    def add_rule(self, rule: Rule) -> Rule:
        self._call(self._set(None, rules=[*self._rules, rule]))
        return rule

    def clear_rules(self) -> None:
        self._call(self._set(None, rules=[]))

    @property
    def state(self) -> LinkState:
        return self._state

    # -- what happened (any thread) -----------------------------------------------------------

    def forwarded(self) -> Counter[str]:
        """Requests forwarded to Redis in full, by command name."""
        with self._lock:
            return Counter(self._forwarded)

    def events(self, kind: str | None = None) -> list[ProxyEvent]:
        with self._lock:
            return [e for e in self._events if kind is None or e.kind == kind]

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def record(self, kind: str, command: Command | None = None) -> None:
        """Add an event to the proxy's record (rules call this on the proxy's loop)."""
        name = command.name if command else ""
        first = command.args[0] if command and command.args else b""
        with self._lock:
            self._events.append(ProxyEvent(time.time(), kind, name, first))

    # -- on the proxy's loop ------------------------------------------------------------------

    async def _open(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _set(
        self,
        state: LinkState | None,
        *,
        delay: float | None = None,
        one_byte: bool | None = None,
        rules: list[Rule] | None = None,
    ) -> None:
        if delay is not None:
            self._delay = delay
        if one_byte is not None:
            self._one_byte = one_byte
        if rules is not None:
            self._rules = rules
        if state is None or state is self._state:
            return
        previous, self._state = self._state, state
        assert self._flowing is not None
        if state is LinkState.BLACK_HOLE:
            self._flowing.clear()
        else:
            self._flowing.set()
        if state is LinkState.RESET:
            self.record("reset")
            for link in list(self._links):
                link.close(rst=True)
        elif state is LinkState.REFUSE:
            if self._server is not None:
                self._server.close()
                self._server = None
            for link in list(self._links):
                link.close()
        if previous is LinkState.REFUSE:
            await self._listen()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.close(rst=True)
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for _ in range(3):  # let the closed transports finish closing
            await asyncio.sleep(0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        with self._lock:
            self._connections += 1
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()  # stopping; asyncio logs a handler that ends cancelled
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._state is not LinkState.PASS and self._state is not LinkState.BLACK_HOLE:
            _rst(writer)
            return
        try:
            server_reader, server = await asyncio.open_connection(*self.upstream)
        except OSError:
            _rst(writer)
            return
        link = _Link(reader, writer, server_reader, server)
        self._links.add(link)
        pumps = [
            asyncio.create_task(self._pump(link, self._to_server, cut_side=True)),
            asyncio.create_task(self._pump(link, self._to_client, cut_side=False)),
        ]
        try:
            await link.finished.wait()
        finally:
            link.close()
            self._links.discard(link)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(
        self, link: _Link, direction: Callable[[_Link], Coroutine[Any, Any, None]], *, cut_side: bool
    ) -> None:
        try:
            await direction(link)
        except (OSError, RespError, asyncio.IncompleteReadError):
            pass
        finally:
            # After a cut Redis closes its side at once; the link lives on for the rule's hold.
            if cut_side or not link.cutting:
                link.finished.set()

    async def _gate(self) -> None:
        """Wait while black-holed, then apply the per-chunk delay."""
        assert self._flowing is not None
        await self._flowing.wait()
        if self._delay > 0:
            await asyncio.sleep(self._delay)
            await self._flowing.wait()

    def _rule_for(self, command: Command) -> Rule | None:
        for rule in self._rules:
            if rule.decide(command, self):
                return rule
        return None

    async def _to_server(self, link: _Link) -> None:
        framer = RequestFramer()
        while data := await link.client_reader.read(_READ):
            await self._gate()
            if link.doomed:
                continue  # a rule is closing this link: nothing more goes through
            for command in framer.feed(data):
                rule = self._rule_for(command)
                if rule is not None and rule.action == "cut":
                    link.cutting = True
                    self.record("cut", command)
                    link.server.write(command.raw[: max(1, len(command.raw) // 2)])
                    await link.server.drain()
                    link.server.close()
                    await asyncio.sleep(rule.hold)
                    link.close()
                    return
                if rule is not None and rule.action == "late":
                    self.record("late", command)
                    await link.server.drain()
                    await asyncio.sleep(rule.hold)
                    rule = None
                link.server.write(command.raw)
                link.sent += 1
                with self._lock:
                    self._forwarded[command.name] += 1
                if rule is not None:  # drop_reply: the reply stream drops it and closes
                    link.drop_at, link.hold = link.sent - 1, rule.hold
                    self.record("drop_reply", command)
                    break
            await link.server.drain()

    async def _to_client(self, link: _Link) -> None:
        framer = ReplyFramer()
        while data := await link.server_reader.read(_READ):
            await self._gate()
            for raw, push in framer.feed(data):
                if not push:
                    index = link.received
                    link.received += 1
                    if index == link.drop_at:
                        await asyncio.sleep(link.hold)
                        link.close()
                        return
                if self._one_byte:
                    for byte in raw:
                        link.client.write(bytes((byte,)))
                        await link.client.drain()
                        await asyncio.sleep(0)
                else:
                    link.client.write(raw)
            await link.client.drain()
