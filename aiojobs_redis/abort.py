"""Aborting a job: the engine's side (abort.lua), mixed into RedisEngine.

`abort()` ends a job that has not ended yet as aborted, whatever it is doing:

* waiting (inline in a ready list of any priority level, by id, delayed, or waiting for a
  retry): it never runs;
* running in any worker: its lease is revoked at once, so its late ack, retry or fail is
  refused, and its worker, which looks for aborted runs once a second while it runs jobs
  (`aborted_runs`), cancels handle().

An aborted job uses no attempt and is not retried. It lands in the failed set with reason
"aborted" (kept for `failed_ttl_ms`), so `failed list` shows it and `failed retry` runs it
again with fresh attempts. A job already done, failed or aborted, or unknown, is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import ResponseError

from .boundary import redis_errors, text
from .context import current_engine
from .errors import ConfigurationError
from .ids import new_job_id
from .keys import validate_job_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .config import Settings
    from .keys import QueueKeys
    from .scripts import Scripts

ABORT_MARK_MS = 600_000  # how long a running job's abort mark waits for its worker to see it
ABORTED_REASON = "aborted"


@dataclass(frozen=True, slots=True)
class AbortOutcome:
    """What abort did: `aborted` and the state the job was in (ready, delayed, running, or
    replayed), or not, and why (already_final, not_found, too_new). `abort_id` names the
    call (the job's field x keeps "abort <abort_id>", so a replayed call is told apart)."""

    aborted: bool
    state: str
    queue: str | None = None
    abort_id: str = ""


def abort_error(reason: str | None) -> dict[str, Any]:
    """The error record of an aborted job (shown by `failed list` and the dashboard)."""
    return {"reason": ABORTED_REASON, "type": "JobAborted", "message": reason or "aborted"}


async def abort(job_id: str, queue: str | None = None, *, reason: str | None = None) -> bool:
    """Abort a job through the current engine (the one `Job.dispatch()` uses): see
    RedisEngine.abort. True when this call aborted it."""
    engine = current_engine()
    method = getattr(engine, "abort", None)
    if method is None:
        raise ConfigurationError(f"{type(engine).__name__} cannot abort jobs")
    return bool(await method(job_id, queue, reason=reason))


class Abort:
    """RedisEngine's abort methods."""

    settings: Settings
    redis: Redis
    scripts: Scripts

    if TYPE_CHECKING:

        def keys(self, queue: str) -> QueueKeys: ...

        def _now_arg(self) -> int | str: ...

        async def _queues(self, queue: str | None) -> list[str]: ...

        async def _inline_entry_at(self, queue: str, job_id: str) -> tuple[bytes, int] | None: ...

        async def _inline_in_groups(self, queue: str, job_id: str) -> tuple[str, bytes | None]: ...

    async def abort(self, job_id: str, queue: str | None = None, *, reason: str | None = None) -> bool:
        """Abort the job: True when this call ended it as aborted, False when it had ended
        already (done, failed, aborted) or is not found. `queue=None` looks in every queue."""
        return (await self.abort_job(job_id, queue, reason=reason)).aborted

    async def abort_job(
        self, job_id: str, queue: str | None = None, *, reason: str | None = None
    ) -> AbortOutcome:
        """As abort(), with what happened (AbortOutcome)."""
        validate_job_id(job_id)
        queues = await self._queues(queue)
        abort_id = new_job_id()  # a replay of one call is told apart from a second abort
        error = orjson.dumps(abort_error(reason))
        outcome = AbortOutcome(False, "not_found", abort_id=abort_id)
        # By key first (one EXISTS per queue), then the queue lists for a job waiting inline.
        async with redis_errors(f"abort {job_id}"), self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.exists(self.keys(q).job(job_id))
            present: list[int] = await pipe.execute()
        for q, exists in zip(queues, present, strict=True):
            if exists:
                outcome = await self._abort_in(q, job_id, abort_id, error, b"")
                if outcome.state != "not_found":
                    return outcome
        for q in queues:
            found = await self._inline_entry_at(q, job_id)
            if found is not None:
                outcome = await self._abort_in(q, job_id, abort_id, error, *found)
                if outcome.state != "not_found":
                    return outcome
        for q in queues:  # waiting inline in a rate group's list
            key, entry = await self._inline_in_groups(q, job_id)
            if entry is not None:
                outcome = await self._abort_in(q, job_id, abort_id, error, entry, in_list=key)
                if outcome.state != "not_found":
                    return outcome
        return outcome

    async def _abort_in(
        self,
        queue: str,
        job_id: str,
        abort_id: str,
        error: bytes,
        entry: bytes,
        level: int = 0,
        in_list: str = "",
    ) -> AbortOutcome:
        """abort.lua on one queue; `entry` is the job's inline record as found in the ready
        list of priority `level`, or in the list `in_list` (a rate group's) when given (b"":
        none found)."""
        keys = self.keys(queue)
        async with redis_errors(f"abort {job_id}"):
            done, state = await self.scripts.abort(
                keys=[in_list or keys.ready, keys.delayed, keys.running, keys.failed, keys.aborted],
                args=[
                    keys.base,
                    job_id,
                    abort_id,
                    error,
                    self.settings.failed_ttl_ms,
                    self._now_arg(),
                    entry,
                    queue,
                    ABORT_MARK_MS,
                    level,
                ],
            )
        return AbortOutcome(bool(done), text(state), queue, abort_id)

    _no_zmscore = False  # Redis 6.0 lacks ZMSCORE: one ZSCORE per run instead, pipelined

    async def aborted_runs(self, queue: str, held: Sequence[tuple[str, str]]) -> list[str]:
        """The ids of `held` (id, token) runs of `queue` that were aborted: one ZMSCORE."""
        key = self.keys(queue).aborted
        members = [f"{job_id} {token}" for job_id, token in held]
        async with redis_errors(f"look for aborted jobs in {queue}"):
            if not self._no_zmscore:
                try:
                    scores = await self.redis.zmscore(key, members)
                except ResponseError as exc:
                    if "unknown command" not in str(exc).lower():
                        raise
                    self._no_zmscore = True
            if self._no_zmscore:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for member in members:
                        pipe.zscore(key, member)
                    scores = await pipe.execute()
        return [job_id for (job_id, _), score in zip(held, scores, strict=True) if score is not None]
