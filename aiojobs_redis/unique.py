"""Unique jobs: the options a Job class declares, checked when the class is defined, and the
lock key a job's payload gives.

A unique job holds the lock <base>:u:<job name>:<key> (the queue's hash tag, so one slot)
from dispatch until its final state; the scripts that end a job let it go (finish() in
lua/_prelude.lua). The lock's value is the id of the job that holds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .errors import InvalidPayload

if TYPE_CHECKING:
    from .job import Job

UNTIL = ("end", "start")
ON_DUPLICATE = ("keep", "error", "replace")
MAX_KEY_CHARS = 100  # a longer key is stored as its sha1


def check_options(cls: type[Job]) -> None:
    """Raise ValueError naming a bad unique option of `cls`."""
    where = cls.__qualname__
    if not isinstance(cls.unique, bool):
        raise ValueError(f"{where}.unique must be True or False, not {cls.unique!r}")
    if cls.unique_until not in UNTIL:
        raise ValueError(f'{where}.unique_until must be "end" or "start", not {cls.unique_until!r}')
    if cls.on_duplicate not in ON_DUPLICATE:
        raise ValueError(
            f'{where}.on_duplicate must be "keep", "error" or "replace", not {cls.on_duplicate!r}'
        )
    key = cls.unique_key
    if key is None or callable(key) or isinstance(key, str):
        return
    if not isinstance(key, tuple) or not key or not all(isinstance(k, str) for k in key):
        raise ValueError(
            f"{where}.unique_key must be a payload field name, a tuple of them, or a method, not {key!r}"
        )


def lock_suffix(job: Job, payload: bytes) -> str:
    """'<job name>:<key>' for `job`, whose stored payload is `payload` (JSON bytes)."""
    spec: Any = type(job).unique_key
    if spec is None:
        key = orjson.dumps(orjson.loads(payload), option=orjson.OPT_SORT_KEYS).decode()
    elif callable(spec):
        key = _method_key(job, spec)
    else:
        key = _fields_key(job, orjson.loads(payload), spec)
    if len(key) > MAX_KEY_CHARS or spec is None:
        key = hashlib.sha1(key.encode()).hexdigest()
    return f"{job.name}:{key}"


def _method_key(job: Job, method: Callable[[Job], object]) -> str:
    key = method(job)
    if not isinstance(key, str) or not key:
        raise ValueError(f"{type(job).__qualname__}.unique_key() must return a non-empty str, not {key!r}")
    return key


def _fields_key(job: Job, payload: Any, fields: str | tuple[str, ...]) -> str:
    names = (fields,) if isinstance(fields, str) else fields
    if not isinstance(payload, dict) or any(name not in payload for name in names):
        raise InvalidPayload(
            f"{type(job).__qualname__}: the unique key needs the payload field(s) {', '.join(names)}"
        )
    values = [payload[name] for name in names]
    if len(values) == 1:
        return values[0] if isinstance(values[0], str) else orjson.dumps(values[0]).decode()
    return orjson.dumps(values).decode()
