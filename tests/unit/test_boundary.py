"""The redis-py error boundary: one mapping for raised errors and for error replies in place."""

from __future__ import annotations

import ssl

import anyio
import pytest
from redis import exceptions as rex

from aiojobs_redis.boundary import is_wrong_type, map_error, map_reply, redis_errors, text
from aiojobs_redis.errors import (
    EngineError,
    EngineUnavailable,
    InvalidPriority,
    PayloadTooLarge,
    RedisAuthError,
    RedisTLSError,
)

pytestmark = pytest.mark.anyio

# (the error redis-py raises or replies, what it becomes, words its message must hold)
MAPPED: list[tuple[Exception, type[Exception], str]] = [
    (rex.ConnectionError("reset"), EngineUnavailable, "act: Redis unavailable (ConnectionError: reset)"),
    (rex.TimeoutError("timed out"), EngineUnavailable, "act: Redis unavailable (TimeoutError: timed out)"),
    (OSError("no route"), EngineUnavailable, "act: Redis unavailable (OSError: no route)"),
    (rex.ClusterDownError("CLUSTERDOWN"), EngineUnavailable, "act: Redis unavailable (ClusterDownError"),
    (rex.TryAgainError("TRYAGAIN"), EngineUnavailable, "act: Redis unavailable (TryAgainError"),
    (
        rex.RedisClusterException("Redis Cluster cannot be connected. Please provide at least one node"),
        EngineUnavailable,
        "act: Redis Cluster unavailable (Redis Cluster cannot be connected",
    ),
    (
        rex.RedisClusterException("No way to dispatch this command"),
        EngineError,
        "act: Redis Cluster refused the command: No way",
    ),
    (rex.ResponseError("ERR payload too large (70000 bytes)"), PayloadTooLarge, "act: ERR payload too large"),
    (rex.ResponseError("ERR invalid priority"), InvalidPriority, "act: Redis refused the priority level"),
    (
        rex.ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
        EngineError,
        "act: Redis refused the command: Redis is out of memory (maxmemory reached",
    ),
    (rex.NoPermissionError("NOPERM no EVALSHA"), EngineError, "act: Redis refused the command: NOPERM"),
    (rex.NoPermissionError("this user has no permissions to run the 'xadd' command"), EngineError,
     "act: Redis refused the command: NOPERM this user has no permissions to run the 'xadd' command "
     "(the Redis user's ACL does not allow it: see the README's ACL line"),
    (rex.ResponseError("The user executing the script can't run this command or subcommand script: 1f, "
                       "on @user_script:1."), EngineError,
     "act: Redis refused the command: NOPERM The user executing the script can't run this command"),
    (rex.ResponseError("WRONGTYPE Operation"), EngineError, "act: Redis refused the command: WRONGTYPE"),
    (rex.DataError("Invalid input"), EngineError, "act: Redis refused the command: Invalid input"),
    (RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed"),
     EngineUnavailable, "act: Redis connection lost"),
    (rex.AuthenticationError("invalid username-password pair or user is disabled."), RedisAuthError,
     "act: Redis refused the user name or password in the URL: check redis://:PASSWORD@HOST:PORT"),
    (rex.AuthenticationError("Authentication required."), RedisAuthError,
     "act: Redis needs a password: give it in the URL, redis://:PASSWORD@HOST:PORT"),
    (rex.ConnectionError("Error 1 connecting to h:6380. [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                         "verify failed: unable to get local issuer certificate (_ssl.c:1006)."),
     RedisTLSError, "act: the Redis server's TLS certificate did not verify (CERTIFICATE_VERIFY_FAILED); "
     "give the CA that signed it in the URL, rediss://HOST:PORT?ssl_ca_certs="),
]  # fmt: skip

LEFT_ALONE: list[Exception] = [
    RuntimeError("something else"),
    ValueError("not Redis's"),
    EngineError("already ours"),
    EngineUnavailable("dispatch: the call reached Redis after its deadline"),
]


async def raised(error: Exception) -> BaseException:
    with pytest.raises(Exception) as caught:
        async with redis_errors("act"):
            raise error
    return caught.value


@pytest.mark.parametrize(("error", "kind", "message"), MAPPED, ids=lambda v: type(v).__name__)
async def test_a_raised_error_is_mapped(error: Exception, kind: type[Exception], message: str) -> None:
    mapped = await raised(error)
    assert type(mapped) is kind
    assert str(mapped).startswith(message), str(mapped)
    assert mapped.__cause__ is error


@pytest.mark.parametrize(("error", "kind", "message"), MAPPED, ids=lambda v: type(v).__name__)
def test_an_error_reply_in_place_is_mapped(error: Exception, kind: type[Exception], message: str) -> None:
    mapped = map_reply(error, "act")
    assert type(mapped) is kind
    assert str(mapped).startswith(message), str(mapped)


@pytest.mark.parametrize(("error", "kind", "message"), MAPPED, ids=lambda v: type(v).__name__)
async def test_raised_and_in_place_agree(error: Exception, kind: type[Exception], message: str) -> None:
    from_raise, in_place = await raised(error), map_reply(error, "act")
    assert (type(from_raise), str(from_raise)) == (type(in_place), str(in_place))


@pytest.mark.parametrize("error", LEFT_ALONE, ids=repr)
async def test_other_errors_are_left_as_they_are(error: Exception) -> None:
    assert map_error(error, "act") is None
    assert map_reply(error, "act") is error
    assert await raised(error) is error


async def test_no_error_no_mapping() -> None:
    async with redis_errors("act"):
        pass


def test_cancellation_is_never_mapped() -> None:
    assert map_error(KeyboardInterrupt(), "act") is None


def test_wrong_type_replies_are_recognised() -> None:
    assert is_wrong_type(rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"))
    assert not is_wrong_type(rex.ResponseError("ERR something"))
    assert not is_wrong_type(rex.ConnectionError("WRONGTYPE in a message"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"plain", "plain"), (b"caf\xc3\xa9", "café"), (b"\xff", "\ufffd"), ("already", "already"), (12, "12")],
)
def test_text_decodes_replies(value: object, expected: str) -> None:
    assert text(value) == expected


async def test_a_wrapped_certificate_error_gives_its_reason() -> None:
    """redis-py raises ConnectionError while handling the ssl module's error."""
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_message = "self-signed certificate in certificate chain"
    try:
        try:
            raise refused
        except ssl.SSLError:
            raise rex.ConnectionError("Error 1 connecting to h:6380.") from None
    except rex.ConnectionError as caught:
        mapped = map_error(caught, "act")
    assert isinstance(mapped, RedisTLSError)
    reason = "(self-signed certificate in certificate chain)"
    assert str(mapped).startswith(f"act: the Redis server's TLS certificate did not verify {reason}")


async def test_a_bounded_call_that_gets_no_answer_is_unavailable() -> None:
    with anyio.fail_after(5), pytest.raises(EngineUnavailable) as raised:
        async with redis_errors("act", timeout=0.05):
            await anyio.sleep(10)
    assert str(raised.value) == "act: Redis did not answer within 0.05 s"


async def test_a_bounded_call_leaves_an_outer_cancellation_alone() -> None:
    with anyio.move_on_after(0.05) as outer:
        async with redis_errors("act", timeout=10):
            await anyio.sleep(10)
    assert outer.cancelled_caught


async def test_a_bounded_call_in_time_maps_errors_as_ever() -> None:
    async with redis_errors("act", timeout=5):
        pass
    with pytest.raises(EngineUnavailable, match=r"act: Redis unavailable \(ConnectionError: reset\)"):
        async with redis_errors("act", timeout=5):
            raise rex.ConnectionError("reset")


def _raise_from(filename: str) -> AttributeError:
    """An AttributeError raised by code that lives in `filename`."""
    namespace: dict[str, object] = {}
    code = "def write(conn):\n    conn._writer.writelines([b'x'])\n"
    exec(compile(code, filename, "exec"), namespace)
    try:
        namespace["write"](type("Conn", (), {"_writer": None})())  # type: ignore[operator]
    except AttributeError as exc:
        return exc
    raise AssertionError("no AttributeError")


def test_redis_py_writing_to_a_connection_closed_under_it_is_redis_unavailable() -> None:
    """A Cluster failover closes a connection that a pipeline is writing to: redis-py raises
    AttributeError from its own code. A worker's reaper once died of it."""
    inside = _raise_from("/venv/lib/python3.11/site-packages/redis/asyncio/connection.py")
    mapped = map_error(inside, "reap q")
    assert isinstance(mapped, EngineUnavailable) and "connection lost" in str(mapped)
    ours = _raise_from("/src/aiojobs_redis/worker.py")
    assert map_error(ours, "reap q") is None, "an AttributeError of ours is a bug: left as it is"
