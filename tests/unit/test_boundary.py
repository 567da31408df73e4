"""The redis-py error boundary: one mapping for raised errors and for error replies in place."""

from __future__ import annotations

import pytest
from redis import exceptions as rex

from aiojobs_redis.boundary import is_wrong_type, map_error, map_reply, redis_errors, text
from aiojobs_redis.errors import EngineError, EngineUnavailable, PayloadTooLarge

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
    (
        rex.ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
        EngineError,
        "act: Redis refused the command: Redis is out of memory (maxmemory reached",
    ),
    (rex.NoPermissionError("NOPERM no EVALSHA"), EngineError, "act: Redis refused the command: NOPERM"),
    (rex.ResponseError("WRONGTYPE Operation"), EngineError, "act: Redis refused the command: WRONGTYPE"),
    (rex.DataError("Invalid input"), EngineError, "act: Redis refused the command: Invalid input"),
    (RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed"),
     EngineUnavailable, "act: Redis connection lost"),
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
