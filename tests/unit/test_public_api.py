"""The public names of aiojobs_redis, pinned."""

from __future__ import annotations

import importlib

import pytest

import aiojobs_redis
from aiojobs_redis import errors


def test_all_contains_the_core_names() -> None:
    assert {"Job", "PermanentFailure", "RetryLater", "connect", "Settings", "use_engine"} <= set(
        aiojobs_redis.__all__
    )


def test_all_has_no_duplicates() -> None:
    assert len(aiojobs_redis.__all__) == len(set(aiojobs_redis.__all__))


@pytest.mark.parametrize("name", aiojobs_redis.__all__)
def test_every_name_in_all_is_importable(name: str) -> None:
    module = importlib.import_module("aiojobs_redis")
    assert getattr(module, name) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from aiojobs_redis import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(aiojobs_redis.__all__)
    assert namespace["Job"] is aiojobs_redis.Job


def test_every_public_error_is_exported() -> None:
    public = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception) and not name.startswith("_")
    }
    assert public <= set(aiojobs_redis.__all__)


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (aiojobs_redis.ConfigurationError, (aiojobs_redis.AiojobsRedisError, ValueError)),
        (aiojobs_redis.InvalidDelay, (aiojobs_redis.AiojobsRedisError, ValueError)),
        (aiojobs_redis.InvalidQueueName, (aiojobs_redis.AiojobsRedisError, ValueError)),
        (aiojobs_redis.InvalidJobId, (aiojobs_redis.AiojobsRedisError, ValueError)),
        (aiojobs_redis.PayloadNotSerializable, (aiojobs_redis.PayloadError, TypeError)),
        (aiojobs_redis.PayloadTooLarge, (aiojobs_redis.PayloadError,)),
        (aiojobs_redis.EngineNotConnected, (aiojobs_redis.AiojobsRedisError, RuntimeError)),
        (aiojobs_redis.EngineUnavailable, (aiojobs_redis.EngineError, ConnectionError)),
        (aiojobs_redis.UnknownJob, (aiojobs_redis.AiojobsRedisError, LookupError)),
        (aiojobs_redis.MalformedJob, (aiojobs_redis.AiojobsRedisError,)),
    ],
)
def test_error_hierarchy(error: type[Exception], bases: tuple[type[Exception], ...]) -> None:
    for base in bases:
        assert issubclass(error, base)


def test_handler_exceptions_are_not_engine_errors() -> None:
    # PermanentFailure and RetryLater are raised by user code, not by the library.
    assert not issubclass(aiojobs_redis.PermanentFailure, aiojobs_redis.AiojobsRedisError)
    assert not issubclass(aiojobs_redis.RetryLater, aiojobs_redis.AiojobsRedisError)


def test_errors_have_a_helpful_default_message() -> None:
    assert "connect()" in str(aiojobs_redis.EngineNotConnected())
    assert str(aiojobs_redis.InvalidJobId()).startswith("A job id must be")
