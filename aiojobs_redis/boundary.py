"""The redis-py error boundary: redis-py's (and the transport's) errors become ours, once.

`async with redis_errors(action):` maps what a call raises; `map_error(error, action)` maps an
error reply a pipeline returned in place. Both use the same rules, so a reply is classified
the same way whether it came back alone or in a batch:

  credentials refused or missing       RedisAuthError (a ConfigurationError: retrying cannot help)
  a TLS certificate that does not      RedisTLSError (a ConfigurationError)
  verify
  transport error, timeout, OSError,   EngineUnavailable ("Redis unavailable")
  a Cluster in failover or resharding
  a Cluster that cannot be reached     EngineUnavailable ("Redis Cluster unavailable")
  uvloop's RuntimeError on a reset     EngineUnavailable ("Redis connection lost")
  connection; redis-py's AttributeError
  on a connection closed mid-write
  a script's "payload too large"       PayloadTooLarge
  any other error reply or redis-py    EngineError ("Redis refused the command"), an out of
  error                                memory refusal explained as such

Anything else (ours included) is left as it is.

`redis_errors(action, timeout=s)` also bounds the call: no answer within `s` seconds raises
EngineUnavailable ("Redis did not answer within s s"). redis-py's own bound is much longer on
a Redis that accepts connections but never answers (SIGSTOP, a black-holed network): each of
its replays reconnects, and each reconnect waits a socket timeout for the handshake.
"""

from __future__ import annotations

import os
import ssl
from types import TracebackType
from typing import Any

import anyio
from redis import exceptions as rex

from . import topology
from .errors import (
    AiojobsRedisError,
    EngineError,
    EngineUnavailable,
    InvalidPriority,
    PayloadTooLarge,
    RedisAuthError,
    RedisTLSError,
)


class redis_errors:
    """`async with redis_errors(action):` raises ours for a redis-py error, named by `action`.

    With `timeout` (seconds), a block still waiting for Redis after that long is cancelled
    and raises EngineUnavailable.

    A class rather than an @asynccontextmanager: it is on the path of every call, and a
    generator-based context manager costs several times more.
    """

    __slots__ = ("_scope", "action", "timeout")

    def __init__(self, action: str, *, timeout: float | None = None) -> None:
        self.action = action
        self.timeout = timeout
        self._scope: anyio.CancelScope | None = None

    async def __aenter__(self) -> None:
        if self.timeout is not None:
            self._scope = anyio.move_on_after(self.timeout)
            self._scope.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        scope, self._scope = self._scope, None
        if scope is not None and scope.__exit__(exc_type, exc, tb) and scope.cancelled_caught:
            raise EngineUnavailable(
                f"{self.action}: Redis did not answer within {self.timeout:g} s"
            ) from None
        if isinstance(exc, Exception):
            mapped = map_error(exc, self.action)
            if mapped is not None:
                raise mapped from exc


def map_error(error: BaseException, action: str) -> Exception | None:
    """Ours for a redis-py (or transport) error, raised or replied in place; None: leave it."""
    if isinstance(error, AiojobsRedisError):
        return None
    if isinstance(error, rex.AuthenticationError | rex.AuthorizationError):
        return RedisAuthError(f"{action}: {explain_auth(error)}")
    refused_certificate = certificate_error(error)
    if refused_certificate is not None:
        return RedisTLSError(
            f"{action}: the Redis server's TLS certificate did not verify ({refused_certificate}); "
            "give the CA that signed it in the URL, rediss://HOST:PORT?ssl_ca_certs=/path/to/ca.pem, "
            "and a host name the certificate names"
        )
    if topology.is_transient(error):
        return EngineUnavailable(f"{action}: Redis unavailable ({type(error).__name__}: {error})")
    if isinstance(error, rex.RedisClusterException):
        if topology.is_unavailable(error):
            return EngineUnavailable(f"{action}: Redis Cluster unavailable ({error})")
        return EngineError(f"{action}: Redis Cluster refused the command: {error}")
    if isinstance(error, rex.ResponseError) and "payload too large" in str(error):
        return PayloadTooLarge(f"{action}: {error}")
    if isinstance(error, rex.ResponseError) and "invalid priority" in str(error):
        return InvalidPriority(f"{action}: Redis refused the priority level (an int from -10 to 10)")
    if isinstance(error, rex.RedisError):
        return EngineError(f"{action}: Redis refused the command: {explain(error)}")
    if is_closed_transport(error):
        return EngineUnavailable(f"{action}: Redis connection lost ({error})")
    return None


def map_reply(reply: Exception, action: str) -> Exception:
    """An error reply (or an error recorded in its place) as the exception to raise."""
    return map_error(reply, action) or reply


_SCRIPT_REFUSED = "can't run this command"  # Redis 7: a script's command the ACL refuses


def explain(error: Exception) -> str:
    text = str(error)
    if "maxmemory" in text or text.startswith("OOM"):
        return f"Redis is out of memory (maxmemory reached; nothing of this call was stored): {text}"
    if isinstance(error, rex.NoPermissionError) or text.startswith("NOPERM") or _SCRIPT_REFUSED in text:
        # redis-py drops the NOPERM code from the text, and a command a script may not run
        # comes back as a plain error; the ACL line is in the README.
        return (
            f"NOPERM {text.removeprefix('NOPERM ')} (the Redis user's ACL does not allow it: "
            "see the README's ACL line, aiojobs_redis.acl)"
        )
    return text


def explain_auth(error: Exception) -> str:
    """What to fix for a refused or missing password, with Redis's own words."""
    said = str(error)
    if "Authentication required" in said or "already authenticated" in said:
        return (
            "Redis needs a password: give it in the URL, redis://:PASSWORD@HOST:PORT, or "
            f"redis://USER:PASSWORD@HOST:PORT for an ACL user (Redis said: {said})"
        )
    return (
        "Redis refused the user name or password in the URL: check redis://:PASSWORD@HOST:PORT, "
        f"or redis://USER:PASSWORD@HOST:PORT for an ACL user (Redis said: {said})"
    )


def certificate_error(error: BaseException) -> str | None:
    """The reason a TLS certificate was refused, if that is what `error` (or its cause) is."""
    seen: BaseException | None = error
    for _ in range(5):  # redis-py wraps the ssl error once or twice
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, rex.ConnectionError) and "CERTIFICATE_VERIFY_FAILED" in str(error):
        return "CERTIFICATE_VERIFY_FAILED"
    return None


def is_closed_transport(error: BaseException) -> bool:
    """A write to a connection that went away as the call used it.

    uvloop reports a write to a reset connection as RuntimeError('... handler is closed');
    redis-py's Cluster pipeline, when a failover closes a connection another task is writing
    to, raises AttributeError("'NoneType' object has no attribute 'writelines'") from inside
    redis-py (its writer is already None). Only that one, raised in redis-py's own code,
    counts: an AttributeError of ours is a bug and stays one.
    """
    if isinstance(error, RuntimeError):
        return "closed" in str(error)
    return (
        isinstance(error, AttributeError)
        and str(error).startswith("'NoneType' object has no attribute")
        and _raised_in_redis_py(error)
    )


def _raised_in_redis_py(error: BaseException) -> bool:
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{os.sep}redis{os.sep}" in tb.tb_frame.f_code.co_filename


def is_wrong_type(error: Exception) -> bool:
    """A WRONGTYPE reply: the key holds another type than the command works on."""
    return isinstance(error, rex.ResponseError) and str(error).startswith("WRONGTYPE")


def text(value: Any) -> str:
    """A reply's bytes (or anything else) as text; bytes that are not UTF-8 are replaced."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
