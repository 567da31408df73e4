"""QueueLimits: rates read, bad declarations refused by name, the fields written, shards' parts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiojobs_redis import ConfigurationError, InvalidLimit, QueueLimits, ShardedQueue
from aiojobs_redis import limits as limits_module
from aiojobs_redis.limits import Limits, controls_to_write, effective, parse_rate


@pytest.fixture(autouse=True)
def forget_declarations() -> Iterator[None]:
    before = set(limits_module._declared)
    yield
    for queue in set(limits_module._declared) - before:
        limits_module.forget(queue)


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("100/second", 100.0),
        ("100/seconds", 100.0),
        ("100/s", 100.0),
        ("7.5/sec", 7.5),
        (" 30 / Minute ", 0.5),
        ("30/min", 0.5),
        ("7200/hour", 2.0),
        ("7200/h", 2.0),
        (25, 25.0),
        (0.5, 0.5),
    ],
)
def test_rates_are_read_as_starts_per_second(text: str | float, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(
    "bad",
    ["100", "100/day", "ten/second", "100/ms", "", "1e3/s", "0/second", "-5/s", "1/week", "1/", "/s"],
)
def test_a_bad_rate_is_refused_by_name(bad: str) -> None:
    with pytest.raises(InvalidLimit, match="invalid rate"):
        parse_rate(bad)
    assert issubclass(InvalidLimit, ConfigurationError)


@pytest.mark.parametrize("bad", [0, -1.0, True, None, float("nan"), float("inf"), 2e6, b"1/s"])
def test_a_bad_rate_number_is_refused_by_name(bad: object) -> None:
    with pytest.raises(InvalidLimit, match="invalid group_rate"):
        parse_rate(bad, what="group_rate")


def test_a_declaration_stores_the_control_fields_with_their_version() -> None:
    QueueLimits(
        "lim-unit-emails",
        rate="100/second",
        burst=20,
        max_running=50,
        group_rate="5/second",
        group_burst=2,
        group_max_running=1,
    )
    [(queue, (part, fields))] = controls_to_write(["lim-unit-emails", "lim-unit-other"]).items()
    assert queue == "lim-unit-emails"
    assert part == Limits(10_000, 20, 50, 200_000, 2, 1)
    assert {k: v for k, v in fields.items() if k != "v"} == {
        "rate": "10000",
        "burst": "20",
        "maxrun": "50",
        "grate": "200000",
        "gburst": "2",
        "gmaxrun": "1",
    }
    assert fields["v"] == limits_module.version(fields) and len(fields["v"] or "") == 40


def test_limits_left_out_are_cleared_and_change_the_version() -> None:
    QueueLimits("lim-unit-a", max_running=3)
    QueueLimits("lim-unit-b", max_running=4)
    written = controls_to_write(["lim-unit-a", "lim-unit-b"])
    a, b = written["lim-unit-a"][1], written["lim-unit-b"][1]
    assert a["maxrun"] == "3" and a["rate"] is None and a["burst"] is None and a["grate"] is None
    assert a["v"] != b["v"]


def test_no_limits_is_a_declaration_too_which_clears_them() -> None:
    QueueLimits("lim-unit-none")
    fields = controls_to_write(["lim-unit-none"])["lim-unit-none"][1]
    assert {k for k, v in fields.items() if v is not None} == {"v"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"burst": 5}, "burst=5 needs a rate"),
        ({"rate": "5/s", "burst": 0}, "invalid burst 0"),
        ({"rate": "5/s", "burst": 2.5}, "invalid burst 2.5"),
        ({"max_running": 0}, "invalid max_running 0"),
        ({"max_running": True}, "invalid max_running True"),
        ({"group_rate": "5/fortnight"}, "invalid group_rate"),
        ({"group_burst": 2}, "group_burst=2 needs a group_rate"),
        ({"group_max_running": -1}, "invalid group_max_running -1"),
    ],
)
def test_a_bad_declaration_is_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidLimit, match=message):
        QueueLimits("lim-unit-bad", **kwargs)  # type: ignore[arg-type]
    assert limits_module.declared("lim-unit-bad") is None


def test_one_queue_has_one_declaration() -> None:
    QueueLimits("lim-unit-once", rate="10/second")
    QueueLimits("lim-unit-once", rate=10)  # the same limits again (a module imported twice)
    with pytest.raises(ConfigurationError, match="already has limits declared"):
        QueueLimits("lim-unit-once", rate="20/second")
    with pytest.raises(InvalidLimit, match="not of a shard"):
        QueueLimits("lim-unit-once#1", rate="10/second")


def test_a_sharded_queue_divides_its_limits_among_the_queue_and_its_shards() -> None:
    ShardedQueue("lim-unit-sharded", shards=3)
    QueueLimits("lim-unit-sharded", rate="100/second", burst=10, max_running=10, group_rate="5/s")
    members = ["lim-unit-sharded", *(f"lim-unit-sharded#{i}" for i in range(3))]
    written = controls_to_write(members)
    assert list(written) == members
    parts = [part for part, _ in written.values()]
    assert {p.rate_us for p in parts} == {40_000}  # 25/s each, 100/s in all
    assert sum(p.max_running or 0 for p in parts) == 10
    assert sum(p.burst or 0 for p in parts) == 10
    assert {p.group_rate_us for p in parts} == {200_000}  # a group is on one shard: whole
    assert "divided among it and its 3 shards" in limits_module.describe_part(members[1], parts[1])


def test_max_running_below_the_number_of_shards_is_refused() -> None:
    ShardedQueue("lim-unit-narrow", shards=4)
    QueueLimits("lim-unit-narrow", max_running=3)
    with pytest.raises(InvalidLimit, match="must be at least 5"):
        controls_to_write(["lim-unit-narrow", "lim-unit-narrow#0"])


def test_the_override_wins_and_zero_lifts_a_limit() -> None:
    meta = {"rate": "10000", "burst": "20", "maxrun": "50", "o:rate": "100000", "o:maxrun": "0"}
    assert effective(meta) == Limits(rate_us=100_000, burst=20, max_running=None)
    assert effective({"rate": "10000"}).burst == 1
    assert effective({"rate": "10000", "o:rate": "0", "burst": "5"}) == Limits()
    assert limits_module.describe(effective(meta)) == "rate 10/second, burst 20"
    assert limits_module.describe(Limits(rate_us=120_000_000)) == "rate 30/hour"
    assert limits_module.describe(Limits()) == "no limits"
