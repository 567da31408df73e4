"""Unique options are checked when the class is defined; the lock key comes from the payload."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from aiojobs_redis import InvalidPayload, Job
from aiojobs_redis.unique import lock_suffix


def make(**attrs: Any) -> type[Job]:
    async def handle(self: Job) -> None:
        return None

    return type("UniqueOptionsJob", (Job,), {"handle": handle, "name": "u.Opts", **attrs})


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"unique": "yes"}, "unique must be True or False"),
        ({"unique": True, "unique_until": "finish"}, 'unique_until must be "end" or "start"'),
        ({"unique": True, "on_duplicate": "skip"}, 'on_duplicate must be "keep", "error" or "replace"'),
        ({"unique": True, "unique_key": ["a"]}, "unique_key must be a payload field name"),
        ({"unique": True, "unique_key": ()}, "unique_key must be a payload field name"),
    ],
)
def test_a_bad_unique_option_is_named_when_the_class_is_defined(attrs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**attrs)


def suffix(cls: type[Job], payload: Any) -> str:
    return lock_suffix(cls(payload), orjson.dumps(payload))


def test_the_key_from_fields_a_method_or_the_whole_payload() -> None:
    assert suffix(make(unique=True, unique_key="id"), {"id": "a7", "x": 1}) == "u.Opts:a7"
    assert suffix(make(unique=True, unique_key="id"), {"id": 7}) == "u.Opts:7"
    assert suffix(make(unique=True, unique_key=("id", "r")), {"id": 7, "r": "eu"}) == 'u.Opts:[7,"eu"]'
    whole = suffix(make(unique=True), {"b": 1, "a": 2})
    assert whole == "u.Opts:" + hashlib.sha1(b'{"a":2,"b":1}').hexdigest()

    def unique_key(self: Job) -> str:
        return f"k{self.payload['n'] // 10}"

    assert suffix(make(unique=True, unique_key=unique_key), {"n": 42}) == "u.Opts:k4"


def test_a_long_key_is_hashed_and_a_missing_field_is_a_named_error() -> None:
    long = "x" * 101
    assert suffix(make(unique=True, unique_key="id"), {"id": long}) == (
        "u.Opts:" + hashlib.sha1(long.encode()).hexdigest()
    )
    with pytest.raises(InvalidPayload, match="the unique key needs the payload field"):
        suffix(make(unique=True, unique_key="id"), {"other": 1})
    with pytest.raises(ValueError, match=r"unique_key\(\) must return a non-empty str"):
        suffix(make(unique=True, unique_key=lambda self: 5), {})
