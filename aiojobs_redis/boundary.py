"""The redis-py error boundary: redis-py's (and the transport's) errors become ours, once.

`async with redis_errors(action):` maps what a call raises; `map_error(error, action)` maps an
error reply a pipeline returned in place. Both use the same rules, so a reply is classified
the same way whether it came back alone or in a batch:

  transport error, timeout, OSError,   EngineUnavailable ("Redis unavailable")
  a Cluster in failover or resharding
  a Cluster that cannot be reached     EngineUnavailable ("Redis Cluster unavailable")
  uvloop's RuntimeError on a reset     EngineUnavailable ("Redis connection lost")
  connection
  a script's "payload too large"       PayloadTooLarge
  any other error reply or redis-py    EngineError ("Redis refused the command"), an out of
  error                                memory refusal explained as such

Anything else (ours included) is left as it is.
"""

from __future__ import annotations

from typing import Any

from redis import exceptions as rex

from . import topology
from .errors import AiojobsRedisError, EngineError, EngineUnavailable, PayloadTooLarge


class redis_errors:
    """`async with redis_errors(action):` raises ours for a redis-py error, named by `action`.

    A class rather than an @asynccontextmanager: it is on the path of every call, and a
    generator-based context manager costs several times more.
    """

    __slots__ = ("action",)

    def __init__(self, action: str) -> None:
        self.action = action

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, Exception):
            mapped = map_error(exc, self.action)
            if mapped is not None:
                raise mapped from exc


def map_error(error: BaseException, action: str) -> Exception | None:
    """Ours for a redis-py (or transport) error, raised or replied in place; None: leave it."""
    if isinstance(error, AiojobsRedisError):
        return None
    if topology.is_transient(error):
        return EngineUnavailable(f"{action}: Redis unavailable ({type(error).__name__}: {error})")
    if isinstance(error, rex.RedisClusterException):
        if topology.is_unavailable(error):
            return EngineUnavailable(f"{action}: Redis Cluster unavailable ({error})")
        return EngineError(f"{action}: Redis Cluster refused the command: {error}")
    if isinstance(error, rex.ResponseError) and "payload too large" in str(error):
        return PayloadTooLarge(f"{action}: {error}")
    if isinstance(error, rex.RedisError):
        return EngineError(f"{action}: Redis refused the command: {explain(error)}")
    if is_closed_transport(error):
        return EngineUnavailable(f"{action}: Redis connection lost ({error})")
    return None


def map_reply(reply: Exception, action: str) -> Exception:
    """An error reply (or an error recorded in its place) as the exception to raise."""
    return map_error(reply, action) or reply


def explain(error: Exception) -> str:
    text = str(error)
    if "maxmemory" in text or text.startswith("OOM"):
        return f"Redis is out of memory (maxmemory reached; nothing of this call was stored): {text}"
    return text


def is_closed_transport(error: BaseException) -> bool:
    """uvloop reports a write to a reset connection as RuntimeError('... handler is closed')."""
    return isinstance(error, RuntimeError) and "closed" in str(error)


def is_wrong_type(error: Exception) -> bool:
    """A WRONGTYPE reply: the key holds another type than the command works on."""
    return isinstance(error, rex.ResponseError) and str(error).startswith("WRONGTYPE")


def text(value: Any) -> str:
    """A reply's bytes (or anything else) as text; bytes that are not UTF-8 are replaced."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
