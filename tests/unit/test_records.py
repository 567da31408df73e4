"""Inline records: the queue list entry of a job waiting to run now (see keys.py)."""

from __future__ import annotations

import pytest

from aiojobs_redis.errors import MalformedJob
from aiojobs_redis.records import JobInfo, inline_prefix, parse_inline


def test_an_inline_record_parses_with_the_payload_raw_to_the_end() -> None:
    entry = b'!0lq3z1y7a0000abcde shop.Send<1> 3 1800000000000 {"a": "b c", "d": [1, 2]}'
    assert parse_inline(entry) == (
        "0lq3z1y7a0000abcde",
        "shop.Send<1>",
        3,
        1_800_000_000_000,
        b'{"a": "b c", "d": [1, 2]}',
    )
    assert entry.startswith(inline_prefix("0lq3z1y7a0000abcde"))
    assert not entry.startswith(inline_prefix("0lq3z1y7a0000abcd"))  # a prefix of the id


@pytest.mark.parametrize(
    "entry",
    [
        b"0lq3z1y7a0000abcde",  # a job id, not a record
        b"!id name 3 1800000000000",  # no payload
        b"!id name x 1800000000000 {}",
        b"!id name 3 -5 {}",
        b"!\xff name 3 5 {}",
        b"",
    ],
)
def test_anything_else_is_not_an_inline_record(entry: bytes) -> None:
    assert parse_inline(entry) is None


def test_job_info_of_an_inline_record() -> None:
    info = JobInfo.from_inline("q", b'!abc shop.Send 2 1000 {"x":1}', with_payload=True)
    assert info is not None
    assert (info.id, info.queue, info.name, info.state) == ("abc", "q", "shop.Send", "ready")
    assert (info.attempts, info.max_attempts, info.runs, info.stalls) == (0, 2, 0, 0)
    assert (info.created_ms, info.scheduled_ms, info.finished_ms) == (1000, 1000, None)
    assert (info.worker, info.error, info.payload) == (None, None, {"x": 1})
    assert JobInfo.from_inline("q", b'!abc shop.Send 2 1000 {"x":1}').payload is None  # type: ignore[union-attr]
    with pytest.raises(MalformedJob):
        JobInfo.from_inline("q", b"!abc shop.Send 2 1000 {not json", with_payload=True)
    assert JobInfo.from_inline("q", b"abc") is None


def test_a_flow_jobs_fields_are_read_from_its_hash() -> None:
    raw = {b"n": b"x", b"s": b"failed", b"P": b"a b", b"D": b"1", b"B": b"b1", b"W": b"a", b"M": b"r"}
    info = JobInfo.from_hash("q", "c", raw)
    assert (info.prerequisites, info.prerequisites_pending, info.batch, info.failed_by) == (
        ("a", "b"),
        1,
        "b1",
        "a",
    )
    assert info.run_on_dependency_failure is True
    plain = JobInfo.from_hash("q", "d", {b"n": b"x", b"s": b"ready"})
    assert (plain.prerequisites, plain.prerequisites_pending, plain.batch, plain.failed_by) == (
        (),
        0,
        None,
        None,
    )
    assert plain.run_on_dependency_failure is False
