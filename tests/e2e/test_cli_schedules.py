"""`aiojobs-redis schedules list`, doctor's scheduler check and the dashboard's schedules, on what
workers declared in Redis."""

from __future__ import annotations

import httpx
import pytest
from support.dashkit import dashboard
from test_cli import inspect, json_lines

from aiojobs_redis import Every, Job, RedisEngine
from aiojobs_redis.doctor import SCHEDULER_SILENT_MS, check_schedules, schedule_findings
from aiojobs_redis.schedule_store import Fire, ScheduleRow
from aiojobs_redis.schedules import of_class

pytestmark = pytest.mark.anyio
QUEUE = "sched-cli"


class Report(Job):
    name = "sched_cli.Report"
    queue = QUEUE
    schedule = Every("+1 hour", payload={"kind": "hourly"})

    async def handle(self) -> None:  # pragma: no cover - never run here
        ...


async def declare_and_arm(engine: RedisEngine) -> int:
    [schedule] = of_class(Report)
    await engine.register_queues([QUEUE])
    await engine.declare_schedules([schedule])
    tick, next_tick = schedule.ticks(await engine.redis_time_ms(max_age_ms=0))
    [fired] = await engine.fire_schedules([Fire(QUEUE, schedule, tick, next_tick)])
    assert fired.outcome == "armed"
    return next_tick


async def test_schedules_list_shows_rule_next_run_and_skipped(engine: RedisEngine, redis_url: str) -> None:
    next_tick = await declare_and_arm(engine)
    listed = await inspect(engine.settings.prefix, redis_url, "schedules", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json_lines(listed.stdout)
    assert row["id"] == "sched_cli.Report" and row["queue"] == QUEUE
    assert row["definition"]["every_ms"] == 3_600_000 and row["definition"]["job"] == Report.name
    assert (row["next_tick_ms"], row["last_run_ms"], row["skipped"], row["missed"]) == (next_tick, None, 0, 0)
    table = await inspect(engine.settings.prefix, redis_url, "schedules", "list", "--queue", QUEUE)
    header, line = table.stdout.splitlines()
    assert header.split()[:4] == ["QUEUE", "SCHEDULE", "RULE", "LAST"]
    assert "sched_cli.Report" in line and "every 3600 s" in line and "s ago" in line


async def test_schedules_list_with_none(engine: RedisEngine, redis_url: str) -> None:
    listed = await inspect(engine.settings.prefix, redis_url, "schedules", "list")
    assert listed.returncode == 0 and "no schedules" in listed.stdout


async def test_doctor_passes_while_a_scheduler_runs(engine: RedisEngine) -> None:
    await declare_and_arm(engine)
    [finding] = await check_schedules(engine)
    assert (finding.severity, finding.code) == ("ok", "scheduler")


def row(seen_ms: int | None, next_tick_ms: int | None = None, every_ms: int = 60_000) -> ScheduleRow:
    return ScheduleRow(QUEUE, "s", {"every_ms": every_ms}, None, next_tick_ms, None, None, 0, 0, seen_ms)


def test_doctor_warns_when_no_scheduler_was_seen_lately() -> None:
    now = 10**12
    for seen in (None, now - SCHEDULER_SILENT_MS - 1):
        [finding] = schedule_findings([row(seen)], now)
        assert finding.severity == "warning" and "no worker fires" in finding.message
    [finding] = schedule_findings([row(now - 1_000, next_tick_ms=now - 5 * 60_000)], now)
    assert finding.severity == "warning" and "overdue" in finding.message
    [finding] = schedule_findings([row(now - 1_000, next_tick_ms=now + 1_000)], now)
    assert finding.severity == "ok"
    assert schedule_findings([], now) == []


async def test_the_dashboard_lists_schedules_and_says_when_no_scheduler_runs(engine: RedisEngine) -> None:
    [schedule] = of_class(Report)
    await engine.register_queues([QUEUE])
    await engine.declare_schedules([schedule])  # declared, but no worker fires it
    async with dashboard(engine) as url, httpx.AsyncClient() as http:
        state = (await http.get(url + "api/state")).json()
        html = (await http.get(url)).text
    [listed] = state["schedules"]
    assert (listed["id"], listed["rule"]) == ("sched_cli.Report", "every 3600 s")
    [problem] = state["schedule_problems"]
    assert "no worker fires" in problem and "scheduler seen never" in problem
    assert problem.replace("'", "&#x27;") in html and "sched_cli.Report" in html
    await declare_and_arm(engine)  # a scheduler called
    async with dashboard(engine) as url, httpx.AsyncClient() as http:
        state = (await http.get(url + "api/state")).json()
    assert state["schedule_problems"] == []


async def test_schedules_remove_forgets_a_schedule_gone_from_the_code(
    engine: RedisEngine, redis_url: str
) -> None:
    await declare_and_arm(engine)
    removed = await inspect(engine.settings.prefix, redis_url, "schedules", "remove", "sched_cli.Report")
    assert removed.returncode == 0 and f"queue {QUEUE}" in removed.stdout, removed.stderr
    assert await engine.schedule_rows([QUEUE]) == []
    again = await inspect(engine.settings.prefix, redis_url, "schedules", "remove", "sched_cli.Report")
    assert again.returncode == 1 and "no schedule" in again.stderr
