"""Settings, read from the environment once and overridden by connect() arguments."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.connection import parse_url

from .codec import DEFAULT_MAX_PAYLOAD_BYTES
from .errors import ConfigurationError
from .keys import validate_prefix
from .topology import SCHEMES, SINGLE_SCHEMES, parse

EngineKind = Literal["redis", "sync"]

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Settings:
    engine: EngineKind = "redis"
    url: str = "redis://127.0.0.1:6379"
    prefix: str = "jobs:"
    db: int | None = None  # None: the database in the URL, else 0
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    socket_timeout: float = 5.0  # seconds, every Redis call
    dispatch_timeout: float = 10.0  # seconds, a whole dispatch including client retries
    max_connections: int = 64
    failed_ttl_ms: int = 7 * DAY_MS
    failed_max: int = 100_000
    keep_done_ms: int = 0  # keep a finished job's record this long; 0 deletes it at once
    # After a job ends, a marker at its key refuses a replayed dispatch of it (see ack.lua).
    # A replay can only come while the dispatch call is still running, so the guard only
    # has to outlast dispatch_timeout.
    replay_guard_ms: int = 15_000
    # Cluster and Sentinel (see topology.py): a redis+cluster:// or redis+sentinel:// URL
    # says it all; these say the same for a redis:// URL listing the nodes or sentinels.
    cluster: bool = False
    sentinel_service: str | None = None
    # Durable dispatch: after storing, WAIT until `durable_replicas` replicas acknowledged
    # (at most `durable_timeout` s); NotReplicated when fewer did. Per call: dispatch(durable=).
    durable: bool = False
    durable_replicas: int = 1
    durable_timeout: float = 1.0
    # On one server (redis://, rediss://, unix://), the engine's script calls share one
    # pipelined connection (wire.py); False sends them through redis-py's pool too.
    multiplex: bool = True
    # JOB_ENGINE=sync: a job that fails for good raises its exception in dispatch()'s caller.
    sync_raise_on_failure: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ("redis", "sync"):
            raise ConfigurationError(f"JOB_ENGINE must be 'redis' or 'sync', not {self.engine!r}")
        check_prefix(self.prefix)
        if self.db is not None and (
            not isinstance(self.db, int) or isinstance(self.db, bool) or not 0 <= self.db <= 65_535
        ):
            raise ConfigurationError(f"the database number must be 0 to 65535, not {self.db!r}")
        for name in ("max_payload_bytes", "max_connections", "failed_ttl_ms", "failed_max"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.socket_timeout <= 0 or self.dispatch_timeout <= 0:
            raise ConfigurationError("timeouts must be positive")
        if self.replay_guard_ms < self.dispatch_timeout * 1000:
            raise ConfigurationError("replay_guard_ms must be at least dispatch_timeout (in ms)")
        self._check_url()
        if self.durable_replicas < 1 or self.durable_timeout <= 0:
            raise ConfigurationError("durable_replicas must be >= 1 and durable_timeout positive")
        if self.durable and self.durable_timeout >= self.socket_timeout:
            raise ConfigurationError("durable_timeout must be shorter than socket_timeout")

    def _check_url(self) -> None:
        if not self.url.startswith(SCHEMES):
            raise ConfigurationError(unsupported_url(self.url))
        topology = parse(self.url, cluster=self.cluster, sentinel_service=self.sentinel_service)
        if topology.kind == "cluster" and self.db:
            raise ConfigurationError("a Redis Cluster has only database 0")
        url_db = url_database(self.url) if topology.kind == "single" else topology.db
        if self.db is not None and url_db is not None and self.db != url_db:
            raise ConfigurationError(
                f"two database numbers: {self.db} (REDIS_JOB_DB, --db or db=) and {url_db} "
                f"(in the URL {redact_url(self.url)}); give one of them, or the same in both"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if "JOB_ENGINE" in env:
            values["engine"] = env["JOB_ENGINE"].strip().lower()
        if "REDIS_URL" in env:
            values["url"] = env["REDIS_URL"]
        if "REDIS_JOB_PREFIX" in env:
            values["prefix"] = env["REDIS_JOB_PREFIX"]
        if "REDIS_JOB_DB" in env and overrides.get("db") is None:
            try:
                values["db"] = int(env["REDIS_JOB_DB"])
            except ValueError:
                raise ConfigurationError(
                    f"REDIS_JOB_DB must be an integer, not {env['REDIS_JOB_DB']!r}"
                ) from None
            if not 0 <= values["db"] <= 65_535:
                raise ConfigurationError(f"REDIS_JOB_DB must be 0 to 65535, not {env['REDIS_JOB_DB']!r}")
        if "JOB_SYNC_RAISE_ON_FAILURE" in env:
            values["sync_raise_on_failure"] = _env_flag("JOB_SYNC_RAISE_ON_FAILURE", env)
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigurationError(f"unknown settings: {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as exc:  # a setting of the wrong type, e.g. max_payload_bytes="x"
            raise ConfigurationError(f"invalid settings: {exc}") from None

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def __repr__(self) -> str:
        return (
            f"Settings(engine={self.engine!r}, url={redact_url(self.url)!r}, "
            f"prefix={self.prefix!r}, db={self.db!r})"
        )


def _env_flag(name: str, env: Mapping[str, str]) -> bool:
    value = env[name].strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be 1/true/yes/on or 0/false/no/off, not {env[name]!r}")


# redis-py also takes a password as a query parameter (?password=..., ?ssl_password=...);
# a Sentinel URL may carry Sentinel's own (?sentinel_password=...).
_SECRET_PARAM = re.compile(r"([?&](?:ssl_|sentinel_)?password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password (in the user part or the query) replaced, safe for logs."""
    parts = urlsplit(url)
    if parts.password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        url = urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hostport}"))
    return _SECRET_PARAM.sub(r"\1***", url)


def check_prefix(prefix: str) -> None:
    """The key prefix: not empty, and nothing that would break a key or a hash tag.

    It is put in front of the key names as it is: "shop" gives "shopqueues", "shop:" gives
    "shop:queues". Adding a separator would move existing deployments' keys.
    """
    if prefix == "":
        raise ConfigurationError(
            "the key prefix (REDIS_JOB_PREFIX) may not be empty: every key would sit at the top "
            "level of the database, among the application's own; use e.g. 'jobs:'"
        )
    validate_prefix(prefix)
    if "{" in prefix or "}" in prefix:
        raise ConfigurationError("the key prefix may not contain '{' or '}'")


def unsupported_url(url: str) -> str:
    """Why `url` is not a Redis URL, and the likely fix."""
    if "://" not in url:  # host:port, the commonest slip
        guess = redact_url("redis://" + url)
        return f"unsupported Redis URL {guess.removeprefix('redis://')!r}: did you mean {guess!r}?"
    schemes = ", ".join(SCHEMES[:-1])
    return f"unsupported Redis URL {redact_url(url)!r}: a Redis URL starts with {schemes} or {SCHEMES[-1]}"


def url_database(url: str) -> int | None:
    """The database a one-server URL selects (its path, or ?db=), None when it names none.

    Also checks the URL the way redis-py will read it, so that a bad one is a
    ConfigurationError now rather than a ValueError when the engine opens.
    """
    try:
        options = parse_url(url)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None
    path = urlsplit(url).path.strip("/")
    if url.startswith(SINGLE_SCHEMES[:2]) and path and not (path.isascii() and path.isdigit()):
        raise ConfigurationError(
            f"invalid Redis URL {redact_url(url)!r}: its path is the database number, not {path!r}"
        )
    db = options.get("db")
    return None if db is None else int(db)
