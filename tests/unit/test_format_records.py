"""The data format version in records and scripts, and how a newer one is reported (no Redis)."""

from __future__ import annotations

import logging

import pytest

from aiojobs_redis.keys import FORMAT_VERSION, JOB_FIELDS
from aiojobs_redis.records import JobInfo, inline_prefix, inline_version, parse_inline
from aiojobs_redis.scripts import SCRIPT_NAMES, source
from aiojobs_redis.versioning import UNREADABLE, FormatGuard, describe_format

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


def test_a_newer_version_refuses_the_prefix_and_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    guard = FormatGuard("unit-format-once:")
    for version in (1, FORMAT_VERSION):
        guard.met(version, "queue q")
    assert not guard.refused and caplog.records == []
    for _ in range(3):
        guard.met(NEWER, "queue q")
    assert guard.refused and guard.newest == NEWER
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            f"queue q: data of format version {NEWER}, newer than the {FORMAT_VERSION} this version "
            "of aiojobs-redis reads: left untouched for a newer worker; nothing more is claimed, "
            "promoted or reaped under prefix 'unit-format-once:' by this process",
        )
    ]
    # Once per process: another engine on the same prefix says nothing more.
    FormatGuard("unit-format-once:").met(NEWER, "queue q")
    assert len(caplog.records) == 1


def test_an_unreadable_format_key_refuses_the_prefix(caplog: pytest.LogCaptureFixture) -> None:
    guard = FormatGuard("unit-format-junk:")
    guard.met(UNREADABLE, "unit-format-junk:format")
    assert guard.refused
    [record] = caplog.records
    assert (
        record.levelno == logging.ERROR
        and "unit-format-junk:format holds no format version" in record.getMessage()
    )


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
