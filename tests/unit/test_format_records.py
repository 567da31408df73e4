"""The data format version in records and scripts, and how a newer one is reported (no Redis)."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, cast

import orjson
import pytest

from aiojobs_redis.keys import FORMAT_VERSION, JOB_FIELDS
from aiojobs_redis.records import JobInfo, inline_prefix, inline_version, parse_inline
from aiojobs_redis.scripts import SCRIPT_NAMES, source
from aiojobs_redis.telemetry_store import _worker_of
from aiojobs_redis.versioning import UNREADABLE, FormatGuard, describe_format, stored_version

if TYPE_CHECKING:
    from redis.asyncio import Redis

NEWER = FORMAT_VERSION + 1
RECORD = b' shop.Send 3 1800000000000 {"a": "b c"}'
FIELDS = ("0lq3z1y7a0000abcde", "shop.Send", 3, 1_800_000_000_000, b'{"a": "b c"}')


def test_records_of_this_version_and_of_0_1_read_alike() -> None:
    current = f"!{FORMAT_VERSION}:0lq3z1y7a0000abcde".encode() + RECORD
    of_0_1 = b"!0lq3z1y7a0000abcde" + RECORD
    assert inline_version(current) == (FORMAT_VERSION, len(f"!{FORMAT_VERSION}:"))
    assert inline_version(of_0_1) == (1, 1)
    assert parse_inline(current) == parse_inline(of_0_1) == FIELDS
    for entry in (current, of_0_1):
        assert entry.startswith(inline_prefix("0lq3z1y7a0000abcde"))
        assert not entry.startswith(inline_prefix("0lq3z1y7a0000abcd"))
        info = JobInfo.from_inline("q", entry)
        assert info is not None and info.id == "0lq3z1y7a0000abcde"
    assert JobInfo.from_inline("q", current).format_version == FORMAT_VERSION  # type: ignore[union-attr]
    assert JobInfo.from_inline("q", of_0_1).format_version == 1  # type: ignore[union-attr]


def test_a_newer_record_is_not_read() -> None:
    newer = f"!{NEWER}:0lq3z1y7a0000abcde".encode() + RECORD
    assert inline_version(newer)[0] == NEWER
    assert parse_inline(newer) is None
    assert not newer.startswith(inline_prefix("0lq3z1y7a0000abcde"))


def test_job_info_reads_the_version_of_a_hash() -> None:
    assert JOB_FIELDS["v"] == "format_version"
    assert JobInfo.from_hash("q", "a", {b"n": b"x", b"v": b"2"}).format_version == 2
    assert JobInfo.from_hash("q", "a", {b"n": b"x"}).format_version == 1  # written by 0.1


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_knows_the_version_it_writes(name: str) -> None:
    assert source(name).startswith(f"local FORMAT_VERSION = {FORMAT_VERSION}\n")


def test_a_newer_format_key_refuses_the_prefix_and_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    guard = FormatGuard("unit-format-once:")
    for version in (1, FORMAT_VERSION):
        guard.met_key(version)
    assert not guard.refused and caplog.records == []
    for _ in range(3):
        guard.met_key(NEWER)
    assert guard.refused and guard.newest == NEWER
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            f"unit-format-once:format holds format version {NEWER}, newer than the {FORMAT_VERSION} "
            "this version of aiojobs-redis reads: nothing more is claimed, promoted or reaped under "
            "prefix 'unit-format-once:' by this process",
        )
    ]
    # Once per process: another engine on the same prefix says nothing more.
    FormatGuard("unit-format-once:").met_key(NEWER)
    assert len(caplog.records) == 1


def test_a_newer_record_refuses_its_queue_only_said_once_per_queue(caplog: pytest.LogCaptureFixture) -> None:
    guard = FormatGuard("unit-format-queue:")
    for version in (0, 1, FORMAT_VERSION):
        guard.met(version, "a", "queue a")
    assert guard.queues == {} and caplog.records == []
    for _ in range(3):
        guard.met(NEWER, "a", "queue a")
    assert not guard.refused and guard.queues == {"a": NEWER}
    guard.met(NEWER, "b", "delayed jobs of b")
    assert not guard.refused and guard.queues == {"a": NEWER, "b": NEWER}
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            f"{where}: data of format version {NEWER}, newer than the {FORMAT_VERSION} this version "
            "of aiojobs-redis reads: left untouched for a newer worker; nothing more is claimed, "
            f"promoted or reaped in queue {queue!r} under prefix 'unit-format-queue:' by this process",
        )
        for where, queue in (("queue a", "a"), ("delayed jobs of b", "b"))
    ]


def test_refused_is_a_plain_attribute() -> None:
    """Read on every claim round: a slot, not a property."""
    assert "refused" in FormatGuard.__slots__
    assert not isinstance(inspect.getattr_static(FormatGuard, "refused"), property)


def test_an_unreadable_format_key_refuses_the_prefix(caplog: pytest.LogCaptureFixture) -> None:
    guard = FormatGuard("unit-format-junk:")
    guard.met_key(UNREADABLE)
    assert guard.refused
    [record] = caplog.records
    assert (
        record.levelno == logging.ERROR
        and "unit-format-junk:format holds no format version" in record.getMessage()
    )


class _StoredKey:
    """Just what stored_version reads of a client: TYPE and GET of one string key."""

    def __init__(self, value: bytes) -> None:
        self.value = value

    async def type(self, key: str) -> bytes:
        return b"string"

    async def get(self, key: str) -> bytes:
        return self.value


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stored", "version"),
    [
        (b"2", 2),
        (b"17", 17),
        ("\u00b2".encode(), UNREADABLE),  # a superscript two: str.isdigit() says yes, int() no
        ("\u0663".encode(), UNREADABLE),  # an Arabic-Indic three: int() reads it, Lua does not
        (b"", UNREADABLE),
        (b"1234", UNREADABLE),
        (b"2 ", UNREADABLE),
    ],
)
async def test_the_stored_version_is_ascii_digits_only(stored: bytes, version: int) -> None:
    assert await stored_version(cast("Redis", _StoredKey(stored)), "p:") == version


def test_an_inline_version_is_any_run_of_digits() -> None:
    """A tag of a far newer version reads as newer (capped as the scripts cap it), not as 0.1."""
    assert inline_version(b"!12:x a 1 1 {}") == (12, 4)
    assert inline_version(b"!12345:x a 1 1 {}") == (999, 7)
    assert inline_version(b"!x:y a 1 1 {}") == (1, 1)


def test_a_heartbeat_says_its_format_and_0_1_heartbeats_read_as_none() -> None:
    current = {
        "id": "w1",
        "host": "h",
        "pid": 1,
        "queues": ["q"],
        "concurrency": 1,
        "started_ms": 1,
        "seen_ms": 2,
        "counters": {},
        "running": [],
        "format": FORMAT_VERSION,
    }
    of_0_1 = {k: v for k, v in current.items() if k != "format"}
    assert _worker_of(orjson.loads(orjson.dumps(current))).format_version == FORMAT_VERSION
    assert _worker_of(of_0_1).format_version is None


@pytest.mark.parametrize(
    ("version", "words"),
    [
        (None, "none recorded"),
        (1, f"version 1 (this release reads up to {FORMAT_VERSION})"),
        (FORMAT_VERSION, f"version {FORMAT_VERSION} (this release"),
        (NEWER, f"version {NEWER}, newer than this release reads"),
        (UNREADABLE, "holds no version"),
    ],
)
def test_stats_describes_the_version(version: int | None, words: str) -> None:
    assert words in describe_format(version)
