"""Payload encoding: JSON through orjson, never pickle."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import MalformedJob, PayloadNotSerializable, PayloadTooLarge

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


def encode_payload(payload: Any, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """Encode `payload` as JSON, refusing what JSON cannot hold and what is too large."""
    try:
        data = orjson.dumps(payload)
    except TypeError as exc:
        raise PayloadNotSerializable(
            f"payload is not JSON serialisable: {_describe_unencodable(payload, exc)}"
        ) from exc
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"payload is {len(data)} bytes encoded, over the limit of {max_bytes} bytes")
    return data


def decode_payload(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedJob(f"payload is not valid JSON: {exc}") from None


def _describe_unencodable(payload: Any, exc: TypeError) -> str:
    """Name the offending type and where it is, e.g. "datetime.date at ['when']"."""
    found = _find_unencodable(payload, "")
    if found is None:
        return str(exc)
    path, value = found
    kind = type(value)
    where = f" at {path}" if path else ""
    return f"{kind.__module__}.{kind.__qualname__}{where}"


def _find_unencodable(value: Any, path: str) -> tuple[str, Any] | None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} (dict key {key!r})", key
            found = _find_unencodable(item, f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_unencodable(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    try:
        orjson.dumps(value)
    except TypeError:
        return path, value
    return None
