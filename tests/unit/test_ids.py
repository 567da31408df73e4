"""ids.new_job_id: short, unique, and sortable in creation order."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator

import pytest

from aiojobs_redis import ids
from aiojobs_redis.ids import new_job_id
from aiojobs_redis.keys import validate_job_id

ID_RE = re.compile(r"[0-9a-z]{18}")
N = 100_000


@pytest.fixture(autouse=True)
def restore_id_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests below move the id clock; put it back so later ids are made from real time."""
    monkeypatch.setattr(ids, "_last_ms", ids._last_ms)
    monkeypatch.setattr(ids, "_seq", ids._seq)
    monkeypatch.setattr(ids, "_ms_text", ids._ms_text)


def test_shape() -> None:
    for _ in range(1_000):
        job_id = new_job_id()
        assert ID_RE.fullmatch(job_id), job_id
        assert validate_job_id(job_id) == job_id


@pytest.fixture(scope="module")
def made_in_sequence() -> Iterator[list[str]]:
    """100k ids made one after the other."""
    yield [new_job_id() for _ in range(N)]


def test_unique_over_100k_calls(made_in_sequence: list[str]) -> None:
    assert len(made_in_sequence) == N
    assert len(set(made_in_sequence)) == N


def test_sequence_sorts_in_creation_order(made_in_sequence: list[str]) -> None:
    assert made_in_sequence == sorted(made_in_sequence)


def test_unique_without_pinning_the_counter() -> None:
    made = [new_job_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)


def test_ids_in_one_millisecond_sort_by_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids, "time", types.SimpleNamespace(time_ns=lambda: 1_800_000_000_000_000))
    made = [new_job_id() for _ in range(1_000)]
    assert made == sorted(made)
    assert len({m[:8] for m in made}) == 1  # all in the same millisecond


def test_later_millisecond_sorts_after(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_800_000_000_000_000_000]
    monkeypatch.setattr(ids, "time", types.SimpleNamespace(time_ns=lambda: now[0]))
    first = new_job_id()
    now[0] += 1_000_000  # one millisecond later
    second = new_job_id()
    assert first < second


def test_sequence_overflow_within_one_millisecond_keeps_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # More ids in one millisecond than the 4-character sequence holds: the next id borrows
    # the following millisecond instead of wrapping, so it still sorts after the first.
    monkeypatch.setattr(ids, "time", types.SimpleNamespace(time_ns=lambda: 1_800_000_000_000_000))
    first = new_job_id()
    monkeypatch.setattr(ids, "_seq", 36**4 - 1)
    second = new_job_id()
    third = new_job_id()
    assert first < second < third, (first, second, third)


def test_clock_stepping_back_keeps_order(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_900_000_000_000_000_000]
    monkeypatch.setattr(ids, "time", types.SimpleNamespace(time_ns=lambda: now[0]))
    first = new_job_id()
    now[0] -= 5_000_000_000  # the wall clock steps back five seconds
    second = new_job_id()
    assert first < second
