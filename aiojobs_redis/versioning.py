"""The data format's version under a prefix: recorded by the engine, respected by its scripts.

`keys.FORMAT_VERSION` is the version this code writes; it reads every version up to it (0.1's
records carry none and read as version 1). The prefix's ``format`` key holds the newest
version any engine has written there and is never lowered.

An engine that finds a newer version in the format key (read when it first registers its
queues, and again at most every FORMAT_RECHECK_MS from promote) leaves the whole prefix to a
newer worker: from then on it claims, promotes and reaps nothing there. A record of a newer
version met in one queue refuses that queue only: the scripts put the record back untouched,
and the engine claims, promotes and reaps nothing more in that queue. Its dispatches are still
stored (a newer version reads older records). It says so once per process, queue and version,
not once per job.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .keys import FORMAT_VERSION, format_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

UNREADABLE = -1  # the format key holds something else than a version number
FORMAT_RECHECK_MS = 10_000  # how often a running engine reads the format key again

_said: set[tuple[str, str, int]] = set()  # (prefix, queue or "", version) reported by this process


class FormatGuard:
    """Whether an engine may still claim, promote and reap under its prefix, and in which queues."""

    __slots__ = ("newest", "prefix", "queues", "read_ms", "refused")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        # The whole prefix: its format key is newer than this release, or unreadable. A plain
        # attribute, not a property: it is read on every claim round.
        self.refused = False
        self.newest: int | None = None  # the format key's version when refused, or UNREADABLE
        self.queues: dict[str, int] = {}  # queue -> the newest too-new version met in it
        self.read_ms: float | None = None  # when this engine last wrote or read the format key

    def recheck_due(self, now_ms: float) -> bool:
        """Whether to read the format key again: a newer worker may have raised it since."""
        if self.read_ms is None or now_ms - self.read_ms < FORMAT_RECHECK_MS:
            return False
        self.read_ms = now_ms
        return True

    def met_key(self, version: int) -> None:
        """Note the version read from the prefix's format key; a newer one refuses the prefix."""
        if 0 <= version <= FORMAT_VERSION:
            return
        self.refused = True
        if self.newest is None or version > self.newest:
            self.newest = version
        if not _first_time(self.prefix, "", version):
            return
        if version == UNREADABLE:
            log.error(
                "%s holds no format version this version of aiojobs-redis can read: it claims, "
                "promotes and reaps nothing under prefix %r (see `aiojobs-redis doctor`)",
                format_key(self.prefix),
                self.prefix,
            )
        else:
            log.warning(
                "%s holds format version %d, newer than the %d this version of aiojobs-redis "
                "reads: nothing more is claimed, promoted or reaped under prefix %r by this process",
                format_key(self.prefix),
                version,
                FORMAT_VERSION,
                self.prefix,
            )

    def met(self, version: int, queue: str, where: str) -> None:
        """Note the version of a record met in `queue` (0: none); a newer one refuses the queue."""
        if version <= FORMAT_VERSION:
            return
        if version > self.queues.get(queue, 0):
            self.queues[queue] = version
        if _first_time(self.prefix, queue, version):
            log.warning(
                "%s: data of format version %d, newer than the %d this version of aiojobs-redis "
                "reads: left untouched for a newer worker; nothing more is claimed, promoted or "
                "reaped in queue %r under prefix %r by this process",
                where,
                version,
                FORMAT_VERSION,
                queue,
                self.prefix,
            )


def _first_time(prefix: str, queue: str, version: int) -> bool:
    if (prefix, queue, version) in _said:
        return False
    _said.add((prefix, queue, version))
    return True


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
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    return int(text) if 1 <= len(text) <= 3 and text.isascii() and text.isdigit() else UNREADABLE


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
