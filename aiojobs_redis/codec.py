"""Payload encoding: JSON through orjson, never pickle.

A payload reaches handle() exactly as it was dispatched, or is refused: only dict (with str
keys), list, str, int, float (finite), bool and None are accepted, and nothing that JSON
would turn into something else (a tuple into a list, a datetime, UUID or enum into a string,
a dataclass into a dict, a str or dict subclass into the plain type).
"""

from __future__ import annotations

import math
from typing import Any, Final

import orjson

from .errors import MalformedJob, PayloadNotSerializable, PayloadTooLarge

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
_MAX_DEPTH = 254  # orjson's own nesting limit

# Hand these to _refuse instead of converting them: datetime/date/time, dataclasses, and
# subclasses of str, int, dict and list.
_STRICT: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_EXACT_SCALARS: Final = frozenset({str, int, bool, type(None)})


def _refuse(value: Any) -> Any:
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def encode_payload(payload: Any, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """Encode `payload` as JSON, refusing what would not come back the same, or is too large."""
    try:
        data = orjson.dumps(payload, option=_STRICT, default=_refuse)
    except TypeError as exc:
        raise _not_serializable(payload, exc) from exc
    # orjson still converts tuples, UUIDs, enums and NaN/infinities (to null) on its own,
    # with no option to refuse them: check the types. This tight walk measured cheaper than
    # decoding and comparing (~0.5 us on a small dict); the path is looked for only on error.
    if not _exact(payload):
        raise _not_serializable(payload, None)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"payload is {len(data)} bytes encoded, over the limit of {max_bytes} bytes")
    return data


def decode_payload(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedJob(f"payload is not valid JSON: {exc}") from None


def _exact(value: Any) -> bool:
    """Only exact dict (str keys), list, str, int, bool, None and finite float, all the way down.

    orjson has already refused keys that are not exactly str, cycles and nesting deeper
    than 254 (so the recursion ends).
    """
    kind = type(value)
    if kind is dict:
        items = value.values()
    elif kind is list:
        items = value
    else:
        return kind in _EXACT_SCALARS or (kind is float and value - value == 0)  # not NaN or inf
    for item in items:
        kind = type(item)
        if kind in _EXACT_SCALARS:
            continue
        if kind is float:
            if item - item != 0:
                return False
        elif not _exact(item):
            return False
    return True


def _not_serializable(payload: Any, exc: TypeError | None) -> PayloadNotSerializable:
    """Name the offending value's type and where it is, e.g. "decimal.Decimal at ['price']"."""
    found = _find_unfaithful(payload)
    if found is None:
        where = str(exc) if exc is not None else "a value JSON would change"
    else:
        path, value = found
        at = f"at {path or 'the top level'}"
        if isinstance(value, _Problem):
            where = f"{value} {at}"
        else:
            kind = type(value)
            where = f"{kind.__module__}.{kind.__qualname__} {at}"
    return PayloadNotSerializable(
        f"payload is not JSON serialisable: {where} (payloads hold dict, list, str, int, "
        "finite float, bool and None, which handle() gets back unchanged; see Job.payload_type)"
    )


class _Problem(str):
    """A finding that is not a value's type (a cycle, too deep, a non-finite float)."""


Finding = tuple[str, Any] | None


def _find_unfaithful(payload: Any) -> Finding:
    return _walk(payload, "", set(), 0)


def _walk(value: Any, path: str, seen: set[int], depth: int) -> Finding:
    if depth > _MAX_DEPTH:
        return path, _Problem("nesting deeper than 254 levels")
    kind = type(value)
    if kind is dict or kind is list:
        if id(value) in seen:
            return path, _Problem("a reference cycle")
        seen.add(id(value))
        items = value.items() if kind is dict else enumerate(value)
        for key, item in items:
            if kind is dict and type(key) is not str:
                return f"{path} (dict key {key!r})".lstrip(), key
            found = _walk(item, f"{path}[{key!r}]", seen, depth + 1)
            if found is not None:
                return found
        seen.discard(id(value))
        return None
    return _check_leaf(value, path)


def _check_leaf(value: Any, path: str) -> Finding:
    kind = type(value)
    if kind is float:
        return None if math.isfinite(value) else (path, _Problem(f"the float {value!r}"))
    if kind not in _EXACT_SCALARS:
        return path, value
    try:
        orjson.dumps(value)
    except TypeError as exc:  # an int past 64 bits, a str with lone surrogates
        return path, _Problem(f"{kind.__module__}.{kind.__qualname__} ({exc})")
    return None
