"""Rate groups (per-key limits): the group a job belongs to, from its class's `group`.

A job of a group waits in its group's list; claim.lua takes one job per group per turn
(round-robin across groups) and applies the queue's per-group limits (`grate`, `gburst`,
`gmaxrun` in its control hash) to each group alike. See lua/claim.lua.

A class names its group with `group = "{tenant_id}"` (str.format over the payload mapping)
or a method `def group(self) -> str`; `dispatch(..., group="acme")` overrides it for one
job. A group key is 1-200 characters of letters, digits and `_.:@+-` (it becomes part of
Redis key names); anything else raises InvalidGroupKey at dispatch, before any I/O.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .errors import InvalidGroupKey

if TYPE_CHECKING:
    from .job import Job

MAX_GROUP_CHARS = 200
_GROUP_RE = re.compile(r"[A-Za-z0-9_.:@+\-]{1,200}")


def check_option(cls: type[Job]) -> None:
    """Raise ValueError naming a bad `group` (or one set with a priority) or `max_throttles`."""
    spec = cls.group
    where = cls.__qualname__
    throttles = cls.max_throttles
    if not isinstance(throttles, int) or isinstance(throttles, bool) or throttles < 0:
        raise ValueError(f"{where}.max_throttles must be an int >= 0, not {throttles!r}")
    if spec is not None and not isinstance(spec, str) and not callable(spec):
        raise ValueError(f"{where}.group must be a format string over the payload, a method, or None")
    if isinstance(spec, str):
        _check_template(spec, where)
    if spec is not None and cls.priority != 0:
        raise ValueError(
            f"{where} sets both priority and group: a job has one or the other (a rate group's "
            "jobs run in turn with the other groups, not by priority)"
        )


def _check_template(spec: str, where: str) -> None:
    """A `group` string must format (balanced braces) and, without fields, be a key itself."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(spec) if name is not None]
    except ValueError as exc:
        raise ValueError(f"{where}.group {spec!r} is not a format string: {exc}") from None
    if not fields:
        try:
            validate_group(spec, f"{where}.group")
        except InvalidGroupKey as exc:
            raise ValueError(str(exc)) from None


def validate_group(key: object, what: str = "group key") -> str:
    """A group key as stored: 1-200 letters, digits and '_.:@+-'."""
    if not isinstance(key, str) or _GROUP_RE.fullmatch(key) is None:
        raise InvalidGroupKey(
            f"invalid {what} {key!r}: 1-{MAX_GROUP_CHARS} letters, digits and '_.:@+-' "
            "(it becomes part of key names)"
        )
    return key


def group_of(job: Job, payload: bytes) -> str:
    """The group of `job` (stored payload `payload`, JSON bytes), or "" for none."""
    override: str | None = getattr(job, "_group", None)
    if override is not None:
        return override
    spec: Any = type(job).group
    if spec is None:
        return ""
    if callable(spec):
        return _method_group(job, spec)
    data = orjson.loads(payload)
    if not isinstance(data, dict):
        raise InvalidGroupKey(
            f"{type(job).__qualname__}.group {spec!r} needs a payload mapping, not {type(data).__name__}"
        )
    try:
        key = spec.format_map(data)
    except KeyError as exc:
        raise InvalidGroupKey(
            f"{type(job).__qualname__}.group {spec!r}: the payload has no field {exc.args[0]!r}"
        ) from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise InvalidGroupKey(f"{type(job).__qualname__}.group {spec!r} cannot be formatted: {exc}") from None
    return validate_group(key, f"group key of {type(job).__qualname__}")


def _method_group(job: Job, method: Callable[[Job], object]) -> str:
    return validate_group(method(job), f"group key {type(job).__qualname__}.group() returned")
