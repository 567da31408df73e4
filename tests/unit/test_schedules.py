"""Schedule math and declarations (schedules.py): pure, no Redis, any "now"."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from aiojobs_redis import Cron, Every, InvalidSchedule, Job
from aiojobs_redis.schedules import Schedule, declared, of_class, tick_of_job_id

BERLIN = ZoneInfo("Europe/Berlin")


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


# The classes here are registered like any other: a queue no worker of another test serves.
QUEUE = "sched-unit"


def one(rule: Every | Cron) -> Schedule:
    class Probe(Job):
        name = f"sched.Probe.{id(rule)}"
        queue = QUEUE
        schedule = rule

        async def handle(self) -> None: ...

    [schedule] = of_class(Probe)
    return schedule


def test_every_ticks_on_multiples_of_the_interval() -> None:
    s = one(Every("+30 seconds"))
    assert s.ticks(90_000) == (90_000, 120_000)  # a tick exactly now is the latest one
    assert s.ticks(119_999) == (90_000, 120_000)
    assert s.grace_for(90_000, 120_000) == 30_000  # default grace: one period


def test_default_grace_is_capped_at_a_day_and_a_declared_grace_wins() -> None:
    assert one(Every("+1 week")).grace_for(0, 7 * 86_400_000) == 86_400_000
    assert one(Every("+1 minute", grace="+5 seconds")).grace_for(0, 60_000) == 5_000
    assert one(Every("+1 minute", grace=0)).grace_for(0, 60_000) == 0


def test_cron_ticks_in_the_schedule_time_zone() -> None:
    s = one(Cron("0 3 * * *", tz="Europe/Berlin"))
    now = ms(datetime(2026, 7, 1, 12, 0, tzinfo=BERLIN))
    prev, nxt = s.ticks(now)
    assert prev == ms(datetime(2026, 7, 1, 3, 0, tzinfo=BERLIN))
    assert nxt == ms(datetime(2026, 7, 2, 3, 0, tzinfo=BERLIN))
    assert s.ticks(prev) == (prev, nxt)  # at the tick itself, it is the latest one


def test_cron_with_seconds_field() -> None:
    s = one(Cron("*/10 * * * * *"))
    now = ms(datetime(2026, 1, 1, 0, 0, 25, 500_000, tzinfo=UTC))
    assert s.ticks(now) == (now - 5_500, now + 4_500)


def test_dst_spring_forward_fixed_time_runs_once_right_after_the_jump() -> None:
    s = one(Cron("30 2 * * *", tz="Europe/Berlin"))
    # 2026-03-29: 02:00 -> 03:00 in Berlin; 02:30 does not exist that day.
    before = ms(datetime(2026, 3, 29, 0, 0, tzinfo=UTC))
    _, first = s.ticks(before)
    assert datetime.fromtimestamp(first / 1000, BERLIN) == datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)
    _, second = s.ticks(first)
    assert datetime.fromtimestamp(second / 1000, BERLIN) == datetime(2026, 3, 30, 2, 30, tzinfo=BERLIN)


def test_dst_fall_back_repeated_time_runs_once() -> None:
    s = one(Cron("30 2 * * *", tz="Europe/Berlin"))
    # 2026-10-25: 03:00 -> 02:00 in Berlin; 02:30 happens twice.
    _, first = s.ticks(ms(datetime(2026, 10, 24, 12, 0, tzinfo=UTC)))
    _, second = s.ticks(first)
    assert second - first > 23 * 3_600_000  # the next day, not an hour later


def test_hourly_over_both_transitions_counts_as_cronsim_gives() -> None:
    s = one(Cron("0 * * * *", tz="Europe/Berlin"))
    for start, end, expected in [
        (datetime(2026, 3, 28, 23, 0, tzinfo=UTC), datetime(2026, 3, 29, 23, 0, tzinfo=UTC), 24),
        (datetime(2026, 10, 24, 22, 0, tzinfo=UTC), datetime(2026, 10, 25, 23, 0, tzinfo=UTC), 25),
    ]:
        count, now = 0, ms(start)
        while True:
            _, now = s.ticks(now)
            if now > ms(end):
                break
            count += 1
        assert count == expected


def test_job_ids_name_their_tick_and_schedule() -> None:
    s = one(Every("+1 second"))
    job_id = s.job_id(1_800_000_000_000)
    assert tick_of_job_id(job_id) == 1_800_000_000_000
    assert job_id != one(Every("+1 second")).job_id(1_800_000_000_000)  # another schedule id
    assert tick_of_job_id("0lq3z1y7a0000abcde") is None


def test_several_schedules_of_one_class_with_their_own_payloads() -> None:
    class Sync(Job):
        name = "sched.Sync"
        queue = QUEUE
        schedule = (
            Every("+1 minute", payload={"a": 1}),
            Every("+1 hour", payload={"a": 2}, id="sync-hourly"),
        )

        async def handle(self) -> None: ...

    a, b = of_class(Sync)
    assert (a.id, a.payload_json) == ("sched.Sync", '{"a":1}')
    assert (b.id, b.payload_json) == ("sync-hourly", '{"a":2}')
    assert declared([Sync], ["other"]) == []
    assert len(declared([Sync], [QUEUE])) == 2
    assert a.definition["hash"] != b.definition["hash"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (Cron("61 * * * *"), "invalid cron expression"),
        (Cron("* * * * *", tz="Mars/Olympus"), "unknown time zone"),
        (Every("+100 ms"), "interval"),
        (Every(0.5), "at least 1 second"),
        (Every("+1 minute", id="bad id"), "invalid id"),
        (Every("+1 minute", payload={1, 2}), "schedule"),
        ("*/5 * * * *", "must be Every"),
    ],
)
def test_bad_schedules_fail_at_class_definition(rule: object, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message):

        class Bad(Job):
            name = "sched.Bad"
            schedule = rule

            async def handle(self) -> None: ...


def test_schedule_is_not_inherited() -> None:
    class Base(Job):
        name = "sched.Base"
        queue = QUEUE
        schedule = Every("+1 minute")

        async def handle(self) -> None: ...

    class Child(Base):
        name = "sched.Child"

    assert len(of_class(Base)) == 1
    assert of_class(Child) == []
