"""Payload encoding: JSON through orjson, never pickle."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson

from .errors import MalformedJob, PayloadNotSerializable, PayloadTooLarge

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
_MAX_DEPTH = 254  # orjson's own nesting limit


def encode_payload(payload: Any, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """Encode `payload` as JSON, refusing what JSON cannot hold and what is too large."""
    try:
        data = orjson.dumps(payload)
    except TypeError as exc:
        raise PayloadNotSerializable(
            f"payload is not JSON serialisable: {_describe(_find_unencodable(payload), exc)}"
        ) from exc
    # orjson writes NaN and infinities as null; refuse them rather than change the data.
    # Only a payload whose JSON has a null can hold one, so most payloads skip the walk.
    if b"null" in data and (found := _find_non_finite(payload)) is not None:
        raise PayloadNotSerializable(f"payload is not JSON serialisable: {_describe(found, None)}")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"payload is {len(data)} bytes encoded, over the limit of {max_bytes} bytes")
    return data


def decode_payload(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedJob(f"payload is not valid JSON: {exc}") from None


def _describe(found: tuple[str, Any] | None, exc: TypeError | None) -> str:
    """Name the offending value's type and where it is, e.g. "decimal.Decimal at ['price']"."""
    if found is None:
        return str(exc)
    path, value = found
    if isinstance(value, _Problem):
        return f"{value} at {path or 'the top level'}"
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__} at {path or 'the top level'}"


class _Problem(str):
    """A finding that is not a value's type (a cycle, too deep, a non-finite float)."""


Finding = tuple[str, Any] | None


def _walk(value: Any, path: str, check: Callable[[Any, str], Finding], seen: set[int], depth: int) -> Finding:
    if depth > _MAX_DEPTH:
        return path, _Problem("nesting deeper than 254 levels")
    if isinstance(value, dict | list | tuple):
        if id(value) in seen:
            return path, _Problem("a reference cycle")
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict) and not isinstance(key, str):
                return f"{path} (dict key {key!r})".lstrip(), key
            found = _walk(item, f"{path}[{key!r}]", check, seen, depth + 1)
            if found is not None:
                return found
        seen.discard(id(value))
        return None
    return check(value, path)


def _find_unencodable(payload: Any) -> tuple[str, Any] | None:
    def check(value: Any, path: str) -> tuple[str, Any] | None:
        try:
            orjson.dumps(value)
        except TypeError:
            return path, value
        return None

    return _walk(payload, "", check, set(), 0)


def _find_non_finite(payload: Any) -> tuple[str, Any] | None:
    def check(value: Any, path: str) -> tuple[str, Any] | None:
        if isinstance(value, float) and not math.isfinite(value):
            return path, _Problem(f"the float {value!r}")
        return None

    return _walk(payload, "", check, set(), 0)
