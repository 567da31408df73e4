"""Schedules in Redis: declaring them, firing their ticks (lua/fire.lua), and reading them back.

`ScheduleStore` is mixed into RedisEngine. Everything of a schedule lives under its job's
queue (one hash tag): the definitions (`QueueKeys.schedule_defs`) and the state of every
schedule of the queue with the time a scheduler last called (`QueueKeys.schedule_state`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .boundary import redis_errors, text
from .scripts import ScriptCall, run_pipelined

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .config import Settings
    from .keys import QueueKeys
    from .schedules import Schedule
    from .scripts import Scripts


@dataclass(frozen=True, slots=True)
class Fire:
    """One call of fire.lua: a schedule's tick as the worker reckons it, or (schedule None)
    a note that a scheduler looked at `queue`."""

    queue: str
    schedule: Schedule | None = None
    tick_ms: int = 0
    next_ms: int = 0


@dataclass(frozen=True, slots=True)
class Fired:
    outcome: str  # seen, early, stale, already, armed, late, overlap, fired (see fire.lua)
    redis_now_ms: int
    job_id: str


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule as Redis knows it, for `schedules list`, doctor and the dashboard."""

    queue: str
    id: str
    definition: dict[str, Any]
    last_tick_ms: int | None
    next_tick_ms: int | None
    last_run_ms: int | None
    last_job_id: str | None
    skipped: int
    missed: int
    seen_ms: int | None  # when a scheduler last called for this queue (Redis ms)

    @property
    def rule(self) -> str:
        d = self.definition
        if "error" in d:
            return f"({d['error']})"
        if "every_ms" in d:
            return f"every {int(d['every_ms']) / 1000:g} s"
        return f"cron {d.get('cron')} ({d.get('tz', 'UTC')})"


# The fields fire.lua keeps per schedule in the queue's state hash: "<id>:<name>".
STATE_FIELDS = ("last", "next", "job", "ran", "skipped", "missed")


class ScheduleStore:
    """The schedule methods of RedisEngine."""

    settings: Settings
    redis: Redis
    scripts: Scripts

    if TYPE_CHECKING:

        def keys(self, queue: str) -> QueueKeys: ...

        def _now_arg(self) -> int | str: ...

    async def declare_schedules(self, schedules: Iterable[Schedule]) -> None:
        """Write the definitions (idempotent), so that they can be listed without the code."""
        by_queue: dict[str, dict[str, bytes]] = {}
        for schedule in schedules:
            by_queue.setdefault(schedule.queue, {})[schedule.id] = orjson.dumps(schedule.definition)
        if not by_queue:
            return
        async with redis_errors("declare schedules"), self.redis.pipeline(transaction=False) as pipe:
            for queue, fields in by_queue.items():
                pipe.hset(self.keys(queue).schedule_defs, mapping=fields)  # type: ignore[arg-type]
            await pipe.execute()

    async def fire_schedules(self, calls: Sequence[Fire]) -> list[Fired]:
        """Send the calls in one round trip; each answers with Redis's time."""
        if not calls:
            return []
        script_calls: list[ScriptCall] = []
        for call in calls:
            keys = self.keys(call.queue)
            args: list[Any] = [keys.base, call.queue, self._now_arg()]
            schedule = call.schedule
            if schedule is None:
                args.append("")
            else:
                args += [
                    schedule.id,
                    call.tick_ms,
                    call.next_ms,
                    schedule.grace_for(call.tick_ms, call.next_ms),
                    "1" if schedule.overlap else "0",
                    schedule.job_name,
                    schedule.attempts,
                    schedule.payload_json,
                    schedule.job_id(call.tick_ms),
                    schedule.priority,
                ]
            script_calls.append((self.scripts.fire, [keys.schedule_state, keys.ready, keys.wake], args))
        async with redis_errors("fire schedules"):
            replies = await run_pipelined(self.redis, script_calls)
        return [Fired(text(r[0]), int(r[1]), text(r[2])) for r in replies]

    async def remove_schedule(self, queue: str, schedule_id: str) -> bool:
        """Forget a schedule's definition and state (one no longer in the code); False when
        unknown. A worker that still declares it declares it again when it starts."""
        keys = self.keys(queue)
        fields = [f"{schedule_id}:{name}" for name in STATE_FIELDS]
        async with (
            redis_errors(f"remove schedule {schedule_id}"),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            pipe.hdel(keys.schedule_defs, schedule_id)
            pipe.hdel(keys.schedule_state, *fields)
            removed = await pipe.execute()
        return any(int(n) for n in removed)

    async def schedule_rows(self, queues: Sequence[str]) -> list[ScheduleRow]:
        """Every schedule declared in `queues`, with its state, sorted by queue and id."""
        async with redis_errors("read schedules"), self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                keys = self.keys(queue)
                pipe.hgetall(keys.schedule_defs)
                pipe.hgetall(keys.schedule_state)
            replies = await pipe.execute()
        rows: list[ScheduleRow] = []
        for index, queue in enumerate(queues):
            defs, state = replies[2 * index], replies[2 * index + 1]
            fields = {text(k): text(v) for k, v in state.items()}
            seen = _int(fields.get("_seen"))
            raw_defs = {text(k): v for k, v in defs.items()}
            # A schedule with state and no definition (deleted since) is listed too.
            stateful = {f[: -len(":last")] for f in fields if f.endswith(":last")}
            for schedule_id in sorted(raw_defs.keys() | stateful):
                definition = _definition(raw_defs.get(schedule_id))
                rows.append(
                    ScheduleRow(
                        queue=queue,
                        id=schedule_id,
                        definition=definition,
                        last_tick_ms=_int(fields.get(f"{schedule_id}:last")),
                        next_tick_ms=_int(fields.get(f"{schedule_id}:next")),
                        last_run_ms=_int(fields.get(f"{schedule_id}:ran")),
                        last_job_id=fields.get(f"{schedule_id}:job"),
                        skipped=_int(fields.get(f"{schedule_id}:skipped")) or 0,
                        missed=_int(fields.get(f"{schedule_id}:missed")) or 0,
                        seen_ms=seen,
                    )
                )
        return rows


def _definition(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {"error": "no definition"}
    try:
        definition = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"error": "unreadable definition"}
    return definition if isinstance(definition, dict) else {"error": "unreadable definition"}


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
