"""Dispatch preparation: a job validated and encoded before any I/O, and dispatches grouped
into dispatch.lua calls with their arguments.

`DispatchArgs` is mixed into RedisEngine (a method of the engine's own class, so the
dispatch path costs no extra frame); engine.py sends what it builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .batching import PendingDispatch
from .errors import DuplicateJob, InvalidGroupKey
from .groups import group_of
from .ids import new_job_id
from .typed_payloads import encode_job_payload
from .unique import lock_suffix

if TYPE_CHECKING:
    from .config import Settings
    from .job import Job
    from .keys import QueueKeys
    from .scripts import ScriptCall, Scripts
    from .sharding import Router


def group(
    items: list[PendingDispatch],
) -> dict[tuple[str, tuple[str, int, int, int, str], bool], list[PendingDispatch]]:
    """Dispatches by queue, kind and script (plain or with options), in order: each group is
    one script call."""
    groups: dict[tuple[str, tuple[str, int, int, int, str], bool], list[PendingDispatch]] = {}
    for pending in items:
        groups.setdefault((pending.queue, pending.kind, pending.unique is None), []).append(pending)
    return groups


class DispatchArgs:
    """The dispatch-argument building of RedisEngine."""

    settings: Settings
    scripts: Scripts
    _router: Router

    if TYPE_CHECKING:

        def keys(self, queue: str) -> QueueKeys: ...

        def _now_arg(self) -> int | str: ...

    def _prepare(self, job: Job) -> PendingDispatch:
        """Validate and encode before any I/O: bad input costs nothing."""
        payload = encode_job_payload(job, self.settings.max_payload_bytes)
        unique = unique_options(job, payload) if job.unique else None
        # Most jobs have neither a group nor a priority: two attribute reads tell.
        rate_group = "" if job._group is None and job.group is None else group_of(job, payload)
        level = job.priority if job._priority is None else job._priority
        # Validates the name (it may be set on the instance); a sharded queue's next shard
        # (a unique job's: the one its key hashes to; a grouped job's: its group's, so that
        # per-group limits hold on one shard).
        shard_key = unique[0] if unique else f"g:{rate_group}" if rate_group else ""
        queue = self.keys(self._router.route(job, shard_key)).queue
        if rate_group and level:
            raise InvalidGroupKey(f"{type(job).__qualname__}: a job has a priority or a rate group, not both")
        return PendingDispatch(
            queue=queue,
            kind=(job.name, job.attempts, job.effective_delay_ms, level, rate_group),
            job_id=new_job_id(),
            payload=payload,
            unique=unique,
        )

    def _dispatch_calls(self, batches: list[list[PendingDispatch]], deadline_ms: int) -> list[ScriptCall]:
        """One dispatch.lua call per batch (each of one queue and kind), or a dispatch_ex.lua
        call for a batch of jobs with options (their first ten arguments are alike)."""
        calls: list[ScriptCall] = []
        for batch in batches:
            keys = self.keys(batch[0].queue)
            name, attempts, delay_ms, level, rate_group = batch[0].kind
            args: list[Any] = [
                keys.base,
                keys.queue,
                self.settings.max_payload_bytes,
                self._now_arg(),
                name,
                attempts,
                delay_ms,
                deadline_ms,
            ]
            if batch[0].unique is not None:
                args += (level, rate_group)
                for pending in batch:
                    assert pending.unique is not None  # a batch is all plain or all with options
                    args += (pending.job_id, pending.payload, *pending.unique)
                calls.append((self.scripts.dispatch_ex, [keys.ready, keys.delayed, keys.wake], args))
                continue
            args += (self.settings.replay_guard_ms, level, rate_group)
            for pending in batch:
                args += (pending.job_id, pending.payload)
            calls.append((self.scripts.dispatch, [keys.ready, keys.delayed, keys.wake], args))
        return calls


def unique_options(job: Job, payload: bytes) -> tuple[str, str, str]:
    """dispatch_ex.lua's lock suffix, flags and on_duplicate for a unique job."""
    flags = "s" if job.unique_until == "start" else "u"
    return (lock_suffix(job, payload), flags, job.on_duplicate)


def settle_dispatch_ex(batch: list[PendingDispatch], reply: list[Any]) -> None:
    """Take dispatch_ex.lua's answer (an id and an outcome per job) into the batch's items."""
    for index, pending in enumerate(batch):
        job_id, outcome = reply[2 * index], reply[2 * index + 1]
        pending.job_id = job_id.decode() if isinstance(job_id, bytes) else str(job_id)
        pending.outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        if pending.outcome != "stored" and pending.unique is not None and pending.unique[2] == "error":
            pending.error = DuplicateJob(pending.job_id, pending.unique[0])
