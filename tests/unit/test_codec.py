"""codec: JSON payloads in, JSON payloads out; what cannot be encoded is named precisely."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import math
import uuid
from decimal import Decimal
from typing import Any, NamedTuple

import orjson
import pytest

from aiojobs_redis.codec import DEFAULT_MAX_PAYLOAD_BYTES, decode_payload, encode_payload
from aiojobs_redis.errors import (
    MalformedJob,
    PayloadError,
    PayloadNotSerializable,
    PayloadTooLarge,
)


class Opaque:
    pass


@pytest.mark.parametrize(
    "payload",
    [
        {},
        [],
        {"a": 1, "b": [1, 2.5, "x", None, True, False], "c": {"d": {"e": []}}},
        [1, "two", {"three": 3}, [4, [5]]],
        {"unicode": "caf\u00e9 \u2713 \U0001f600", "empty": ""},
        {"big": 2**63 - 1, "small": -(2**63), "float": 0.1},
        "just a string",
        42,
        None,
    ],
    ids=repr,
)
def test_round_trip(payload: Any) -> None:
    data = encode_payload(payload)
    assert isinstance(data, bytes)
    assert decode_payload(data) == payload


class Colour(enum.Enum):
    RED = "red"


class Priority(enum.IntEnum):
    HIGH = 2


class Size(enum.StrEnum):
    SMALL = "s"


class Tag(str):
    pass


class Ratio(float):
    pass


@dataclasses.dataclass
class Point:
    x: int


class Pair(NamedTuple):
    a: int
    b: int


_MOMENT = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (_MOMENT, "datetime.datetime"),
        (_MOMENT.replace(tzinfo=None), "datetime.datetime"),
        (_MOMENT.date(), "datetime.date"),
        (_MOMENT.time(), "datetime.time"),
        (uuid.UUID(int=1), "uuid.UUID"),
        ((1, 2), "builtins.tuple"),
        (Pair(1, 2), f"{__name__}.Pair"),
        (Point(1), f"{__name__}.Point"),
        (Colour.RED, f"{__name__}.Colour"),
        (Priority.HIGH, f"{__name__}.Priority"),
        (Size.SMALL, f"{__name__}.Size"),
        (Tag("x"), f"{__name__}.Tag"),
        (Ratio(0.5), f"{__name__}.Ratio"),
        (collections.OrderedDict(a=1), "collections.OrderedDict"),
        (collections.defaultdict(list), "collections.defaultdict"),
        (collections.UserList([1]), "collections.UserList"),
        (orjson.Fragment(b"[1]"), "orjson.Fragment"),
    ],
    ids=repr,
)
def test_value_json_would_change_is_refused_with_its_path(value: Any, type_name: str) -> None:
    # Each would otherwise reach handle() as something else (a string, a list, a plain dict).
    with pytest.raises(PayloadNotSerializable) as info:
        encode_payload({"ok": [1, "a", None], "deep": [{"v": value}]})
    assert f"{type_name} at ['deep'][0]['v']" in str(info.value)


def test_refused_at_the_top_level() -> None:
    with pytest.raises(PayloadNotSerializable, match=r"builtins\.tuple at the top level"):
        encode_payload((1, 2))


@pytest.mark.parametrize(
    ("payload", "type_name", "path"),
    [
        ({"a": {"b": {1, 2}}}, "builtins.set", "['a']['b']"),
        ({"x": Decimal("1.5")}, "decimal.Decimal", "['x']"),
        ({"items": [1, 2, Opaque()]}, f"{__name__}.Opaque", "['items'][2]"),
        ([0, {"k": frozenset()}], "builtins.frozenset", "[1]['k']"),
        ({"b": b"bytes"}, "builtins.bytes", "['b']"),
        ({"n": 2**64}, "builtins.int", "['n']"),
    ],
    ids=repr,
)
def test_unencodable_value_is_named_with_its_path(payload: Any, type_name: str, path: str) -> None:
    with pytest.raises(PayloadNotSerializable) as info:
        encode_payload(payload)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, PayloadError)
    message = str(info.value)
    assert type_name in message
    assert f" at {path}" in message


def test_unencodable_top_level_value_is_named() -> None:
    with pytest.raises(PayloadNotSerializable, match=r"builtins\.set"):
        encode_payload({1, 2})


@pytest.mark.parametrize(
    ("payload", "type_name", "where"),
    [
        ({1: "x"}, "builtins.int", "(dict key 1)"),
        ({"a": {1: "x"}}, "builtins.int", "['a'] (dict key 1)"),
        ([{"ok": 1}, {None: 2}], "builtins.NoneType", "[1] (dict key None)"),
        ({"a": {Tag("k"): 1}}, f"{__name__}.Tag", "['a'] (dict key 'k')"),
    ],
    ids=repr,
)
def test_non_string_dict_key_is_named_with_its_path(payload: Any, type_name: str, where: str) -> None:
    with pytest.raises(PayloadNotSerializable) as info:
        encode_payload(payload)
    message = str(info.value)
    assert type_name in message
    assert where in message


def test_first_offender_is_reported() -> None:
    with pytest.raises(PayloadNotSerializable) as info:
        encode_payload({"ok": 1, "first": {1}, "second": Decimal(1)})
    assert "builtins.set at ['first']" in str(info.value)
    assert "Decimal" not in str(info.value)


def test_self_referencing_payload_is_not_serializable() -> None:
    # A cycle cannot be JSON; it must be refused as such, not blow the Python stack.
    payload: dict[str, Any] = {"a": 1}
    payload["self"] = payload
    with pytest.raises(PayloadNotSerializable):
        encode_payload(payload)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=repr)
def test_non_finite_float_is_refused_not_turned_into_null(value: float) -> None:
    # JSON cannot hold NaN or Infinity; the module promises to refuse what JSON cannot hold.
    # orjson silently writes them as null, so the handler would see None instead.
    with pytest.raises(PayloadNotSerializable):
        encode_payload({"x": value})


def test_size_limit_is_inclusive() -> None:
    # '"xxxxxxxx"' is 10 bytes encoded.
    assert encode_payload("x" * 8, max_bytes=10) == b'"xxxxxxxx"'
    with pytest.raises(PayloadTooLarge) as info:
        encode_payload("x" * 9, max_bytes=10)
    assert isinstance(info.value, PayloadError)
    assert "11 bytes" in str(info.value)
    assert "10 bytes" in str(info.value)


def test_size_limit_counts_encoded_bytes_not_characters() -> None:
    # Four characters of two bytes each plus two quotes: 10 bytes.
    assert len(encode_payload("\u00e9" * 4, max_bytes=10)) == 10
    with pytest.raises(PayloadTooLarge):
        encode_payload("\u00e9" * 5, max_bytes=11)


def test_default_size_limit() -> None:
    assert DEFAULT_MAX_PAYLOAD_BYTES == 1024 * 1024
    fits = "x" * (DEFAULT_MAX_PAYLOAD_BYTES - 2)
    assert len(encode_payload(fits)) == DEFAULT_MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadTooLarge):
        encode_payload(fits + "x")


@pytest.mark.parametrize("data", [b"{not json", b"", b"\xff\xfe", b"{'a': 1}", b"[1,", b"NaN"])
def test_decode_bad_json_is_malformed_job(data: bytes) -> None:
    with pytest.raises(MalformedJob, match="not valid JSON"):
        decode_payload(data)
