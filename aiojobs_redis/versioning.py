"""The data format's version under a prefix: recorded by the engine, respected by its scripts.

`keys.FORMAT_VERSION` is the version this code writes; it reads every version up to it (0.1's
records carry none and read as version 1). The prefix's ``format`` key holds the newest
version any engine has written there and is never lowered.

An engine that finds a newer version, in the format key when it first registers its queues
or in a record a script met, leaves that data to a newer worker: the scripts put the record
back untouched, and from then on the engine claims, promotes and reaps nothing under the
prefix (its dispatches are still stored: a newer version reads older records). It says so
once per process and version, not once per job.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .keys import FORMAT_VERSION, format_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

UNREADABLE = -1  # the format key holds something else than a version number

_said: set[tuple[str, int]] = set()  # (prefix, version) already reported by this process


class FormatGuard:
    """Whether an engine may still claim, promote and reap under its prefix."""

    __slots__ = ("newest", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.newest: int | None = None  # the newest version met that is too new, or UNREADABLE

    @property
    def refused(self) -> bool:
        return self.newest is not None

    def met(self, version: int, where: str) -> None:
        """Note the version of data met `where`; a newer one than ours refuses the prefix."""
        if 0 <= version <= FORMAT_VERSION:
            return
        if self.newest is None or version > self.newest:
            self.newest = version
        if (self.prefix, version) in _said:
            return
        _said.add((self.prefix, version))
        if version == UNREADABLE:
            log.error(
                "%s holds no format version this version of aiojobs-redis can read: it claims, "
                "promotes and reaps nothing under prefix %r (see `aiojobs-redis doctor`)",
                format_key(self.prefix),
                self.prefix,
            )
        else:
            log.warning(
                "%s: data of format version %d, newer than the %d this version of aiojobs-redis "
                "reads: left untouched for a newer worker; nothing more is claimed, promoted or "
                "reaped under prefix %r by this process",
                where,
                version,
                FORMAT_VERSION,
                self.prefix,
            )


async def stored_version(redis: Redis, prefix: str) -> int | None:
    """The version in the prefix's format key: None when there is none (nothing written there
    since 0.1, or nothing at all), UNREADABLE when it holds something else.
    """
    key = format_key(prefix)
    kind = await redis.type(key)
    if kind == b"none":
        return None
    if kind != b"string":
        return UNREADABLE
    value = await redis.get(key)
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return int(text) if text.isdigit() and len(text) <= 3 else UNREADABLE


def describe_format(version: int | None) -> str:
    """One line on a prefix's format version, as `aiojobs-redis stats` prints it."""
    if version is None:
        return (
            "data format: none recorded (0.1's, version 1, or no data yet); "
            f"this release writes {FORMAT_VERSION}"
        )
    if version == UNREADABLE:
        return "data format: the format key holds no version (see `aiojobs-redis doctor`)"
    if version > FORMAT_VERSION:
        return f"data format: version {version}, newer than this release reads ({FORMAT_VERSION})"
    return f"data format: version {version} (this release reads up to {FORMAT_VERSION})"
