"""Periodic jobs: `schedule = Every("+30 seconds")` or `Cron("*/5 * * * *", tz=...)` on a Job class.

A schedule's ticks are instants in time (ms since the epoch):
  Every  multiples of the interval since the epoch (UTC), so every worker agrees on them
         without any stored anchor: "+1 hour" ticks on the hour, "+30 seconds" at :00 and :30
  Cron   the times the expression matches in its time zone, as cronsim computes them (it
         follows Debian cron across DST changes)

Which tick is due is decided by Redis's clock inside lua/fire.lua: a tick is fired by the
first call that moves the schedule's last tick forward, so each tick runs at most once
whatever the number of workers. The math here is pure (no I/O, no clock of its own), so it
is tested with any "now".
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from .errors import InvalidDelay, InvalidSchedule
from .timeparse import Delay, to_ms

if TYPE_CHECKING:
    from .job import Job

# The default catch-up grace: one period of the schedule, at most this.
MAX_DEFAULT_GRACE_MS = 86_400_000
MIN_INTERVAL_MS = 1_000
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:<>-")


@dataclass(frozen=True, slots=True)
class Every:
    """A tick every `interval` ("+30 seconds", seconds or a timedelta), on multiples of it."""

    interval: Delay
    payload: Any = None
    id: str | None = None
    grace: Delay | None = None  # None: one period, at most 24 h
    overlap: bool = False  # False: skip a tick while the last run is queued or running

    def describe(self) -> str:
        return f"every {self.interval}"


@dataclass(frozen=True, slots=True)
class Cron:
    """A tick at each time `expression` matches in time zone `tz` (a zoneinfo name).

    Five fields, or six with seconds first; @hourly, @daily and the like (cronsim's syntax).
    """

    expression: str
    tz: str = "UTC"
    payload: Any = None
    id: str | None = None
    grace: Delay | None = None
    overlap: bool = False

    def describe(self) -> str:
        return f"cron {self.expression} ({self.tz})"


Rule = Every | Cron


@dataclass(frozen=True)
class Schedule:
    """One declared schedule of a job class, resolved and checked."""

    id: str
    job_name: str
    queue: str
    rule: Rule
    payload_json: str
    attempts: int
    grace_ms: int | None = None
    interval_ms: int = 0  # Every only
    zone: ZoneInfo = field(default=ZoneInfo("UTC"))
    priority: int = 0  # the class's level: each run waits in that level's list (fire.lua)

    @property
    def overlap(self) -> bool:
        return self.rule.overlap

    def ticks(self, now_ms: int) -> tuple[int, int]:
        """(the latest tick at or before now_ms, the first tick after it)."""
        if isinstance(self.rule, Every):
            prev = now_ms - now_ms % self.interval_ms
            return prev, prev + self.interval_ms
        return _cron_ticks(self.rule.expression, self.zone, now_ms)

    def grace_for(self, tick_ms: int, next_ms: int) -> int:
        """How late `tick_ms` may still run: the declared grace, else its period (<= 24 h)."""
        if self.grace_ms is not None:
            return self.grace_ms
        return min(next_ms - tick_ms, MAX_DEFAULT_GRACE_MS)

    def job_id(self, tick_ms: int) -> str:
        """The run of one tick: the same id from every worker, so a tick is one job."""
        return f"c-{hashlib.sha1(self.id.encode()).hexdigest()[:10]}-{_base36(tick_ms)}"

    @cached_property
    def definition(self) -> dict[str, Any]:
        """What Redis keeps of it, for `schedules list` and doctor (no code needed to read it)."""
        rule: dict[str, Any]
        if isinstance(self.rule, Every):
            rule = {"every_ms": self.interval_ms}
        else:
            rule = {"cron": self.rule.expression, "tz": self.rule.tz}
        body = {
            "job": self.job_name,
            **rule,
            "grace_ms": self.grace_ms,
            "overlap": self.overlap,
            "payload": self.payload_json,
        }
        body["hash"] = hashlib.sha1(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
        return body

    def describe(self) -> str:
        return self.rule.describe()


def tick_of_job_id(job_id: str) -> int | None:
    """The tick a scheduled run's id names, or None for any other id."""
    parts = job_id.split("-")
    if len(parts) != 3 or parts[0] != "c":
        return None
    try:
        return int(parts[2], 36)
    except ValueError:
        return None


def of_class(cls: type[Job]) -> list[Schedule]:
    """The schedules declared on a class (its `schedule` attribute: one rule or a tuple)."""
    declared = cls.__dict__.get("schedule")
    if declared is None:
        return []
    rules: Sequence[object] = declared if isinstance(declared, list | tuple) else [declared]
    schedules: list[Schedule] = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, Every | Cron):
            raise InvalidSchedule(
                f"{cls.__qualname__}.schedule must be Every(...), Cron(...) or a tuple of them, not {rule!r}"
            )
        default_id = cls.name if index == 0 else f"{cls.name}#{index}"
        schedules.append(_resolve(cls, rule, rule.id or default_id))
    ids = [s.id for s in schedules]
    if len(set(ids)) != len(ids):
        raise InvalidSchedule(f"{cls.__qualname__}.schedule: two schedules share an id ({ids})")
    return schedules


def declared(classes: Sequence[type[Job]], queues: Sequence[str]) -> list[Schedule]:
    """The schedules of `classes` whose jobs go to one of `queues`."""
    served = set(queues)
    found = [s for cls in classes for s in of_class(cls) if s.queue in served]
    seen: dict[tuple[str, str], Schedule] = {}
    for schedule in found:
        key = (schedule.queue, schedule.id)
        if key in seen:
            raise InvalidSchedule(
                f"schedule id {schedule.id!r} in queue {schedule.queue!r} is declared twice "
                f"({seen[key].job_name} and {schedule.job_name}); give one an id=..."
            )
        seen[key] = schedule
    return found


def _resolve(cls: type[Job], rule: Rule, schedule_id: str) -> Schedule:
    what = f"{cls.__qualname__}.schedule"
    if not isinstance(schedule_id, str) or not 0 < len(schedule_id) <= 100 or set(schedule_id) - _ID_CHARS:
        raise InvalidSchedule(f"{what}: invalid id {schedule_id!r} (1-100 letters, digits and '_.:<>-')")
    if cls.shards != 1:
        raise InvalidSchedule(f"{what}: a sharded job class cannot be scheduled")
    try:
        payload_json = orjson.dumps({} if rule.payload is None else rule.payload).decode()
        grace_ms = None if rule.grace is None else to_ms(rule.grace, what=f"{what} grace")
    except (TypeError, orjson.JSONEncodeError, InvalidDelay) as exc:
        raise InvalidSchedule(f"{what}: {exc}") from None
    common: dict[str, Any] = {
        "id": schedule_id,
        "job_name": cls.name,
        "queue": cls.queue,
        "rule": rule,
        "payload_json": payload_json,
        "attempts": cls.attempts,
        "grace_ms": grace_ms,
        "priority": cls.priority,
    }
    if isinstance(rule, Every):
        try:
            interval_ms = to_ms(rule.interval, what=f"{what} interval")
        except InvalidDelay as exc:
            raise InvalidSchedule(str(exc)) from None
        if interval_ms < MIN_INTERVAL_MS:
            raise InvalidSchedule(f"{what}: an interval must be at least 1 second, not {rule.interval!r}")
        return Schedule(**common, interval_ms=interval_ms)
    zone = _zone(rule.tz, what)
    _cron_ticks(rule.expression, zone, 0, what=what)  # a bad expression fails at import
    return Schedule(**common, zone=zone)


def _zone(name: object, what: str) -> ZoneInfo:
    if not isinstance(name, str):
        raise InvalidSchedule(f"{what}: tz must be a zoneinfo name such as 'Europe/Paris', not {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"{what}: unknown time zone {name!r} (a zoneinfo name; install tzdata where the system has none)"
        ) from None


def _cron_ticks(expression: str, zone: ZoneInfo, now_ms: int, *, what: str = "cron") -> tuple[int, int]:
    try:
        from cronsim import CronSim, CronSimError
    except ImportError:
        raise InvalidSchedule(
            f"{what}: Cron schedules need the cronsim package (pip install cronsim)"
        ) from None
    # cronsim works in whole seconds and never returns its starting point: start one second
    # past now (truncated) going back for the latest tick at or before now.
    start = datetime.fromtimestamp(now_ms // 1000, UTC).astimezone(zone)
    try:
        prev = next(CronSim(expression, start + timedelta(seconds=1), reverse=True))
        after = next(CronSim(expression, start))
    except (CronSimError, StopIteration) as exc:
        raise InvalidSchedule(f"{what}: invalid cron expression {expression!r}: {exc}") from None
    return int(prev.timestamp() * 1000), int(after.timestamp() * 1000)


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
