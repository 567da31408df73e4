"""Error replies a pipeline returns in place, in the inspection calls: WRONGTYPE is data to
show; anything else goes through boundary.map_reply, so a dropped connection is an outage."""

from __future__ import annotations

from typing import Any

import pytest
from redis import exceptions as rex

from aiojobs_redis import RedisEngine, Settings
from aiojobs_redis.admin import Refused, _config
from aiojobs_redis.errors import EngineError, EngineUnavailable

pytestmark = pytest.mark.anyio

WRONGTYPE = rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")


class _Pipeline:
    """Queues nothing; each execute() answers with the next canned reply list."""

    def __init__(self, replies: list[list[Any]]) -> None:
        self._replies = replies

    async def __aenter__(self) -> _Pipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def __getattr__(self, command: str) -> Any:
        return lambda *args, **kwargs: self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return self._replies.pop(0)


class _Redis:
    def __init__(self, *replies: list[Any]) -> None:
        self._replies = list(replies)

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        return _Pipeline(self._replies)

    async def smembers(self, key: str) -> set[bytes]:
        return {b"q"}  # the known queues: no shards of "q"


def engine_on(redis: _Redis) -> RedisEngine:
    engine = RedisEngine(Settings(url="redis://127.0.0.1:1", prefix="replies:"))
    engine.redis = redis  # type: ignore[assignment]
    return engine


def test_a_dropped_connection_in_config_replies_is_an_outage() -> None:
    with pytest.raises(EngineUnavailable, match="doctor: CONFIG GET: Redis unavailable"):
        _config([{b"maxmemory": b"0"}, rex.ConnectionError("Connection reset by peer")])


def test_a_refusal_in_config_replies_stays_a_refusal() -> None:
    with pytest.raises(Refused, match="NOPERM"):
        _config([rex.ResponseError("NOPERM this user has no permissions to run the 'config' command")])
    with pytest.raises(EngineError, match="Redis refused the command"):
        _config([rex.DataError("bad reply")])


async def test_running_jobs_maps_an_error_reply_in_place() -> None:
    engine = engine_on(_Redis([[(b"j1", 5.0)]], [rex.ConnectionError("reset")]))
    with pytest.raises(EngineUnavailable, match="list running jobs: Redis unavailable"):
        await engine.running_jobs(["q"])


async def test_running_jobs_lists_a_record_of_another_type_with_what_the_set_says() -> None:
    engine = engine_on(_Redis([[(b"j1", 5.0)]], [WRONGTYPE]))
    [job] = await engine.running_jobs(["q"])
    assert (job.id, job.name, job.lease_deadline_ms) == ("j1", None, 5)


async def test_failed_list_maps_an_error_reply_in_place() -> None:
    engine = engine_on(_Redis([[(b"j1", 5.0)]], [rex.TimeoutError("timed out")]))
    with pytest.raises(EngineUnavailable, match="list failed jobs: Redis unavailable"):
        await engine.failed_list("q")


async def test_failed_list_shows_a_record_of_another_type_as_malformed() -> None:
    engine = engine_on(_Redis([[(b"j1", 5.0)]], [WRONGTYPE]))
    [job] = await engine.failed_list("q")
    assert job.id == "j1"
    assert job.error is not None and job.error["reason"] == "wrong_type"
