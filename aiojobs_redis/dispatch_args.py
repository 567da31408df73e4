"""Dispatch preparation: a job validated and encoded before any I/O, and dispatches grouped
into dispatch.lua calls with their arguments.

`DispatchArgs` is mixed into RedisEngine (a method of the engine's own class, so the
dispatch path costs no extra frame); engine.py sends what it builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .batching import PendingDispatch
from .ids import new_job_id
from .typed_payloads import encode_job_payload

if TYPE_CHECKING:
    from .config import Settings
    from .job import Job
    from .keys import QueueKeys
    from .scripts import ScriptCall, Scripts
    from .sharding import Router


def group(items: list[PendingDispatch]) -> dict[tuple[str, tuple[str, int, int]], list[PendingDispatch]]:
    """Dispatches by queue and kind, in order: each group is one script call."""
    groups: dict[tuple[str, tuple[str, int, int]], list[PendingDispatch]] = {}
    for pending in items:
        groups.setdefault((pending.queue, pending.kind), []).append(pending)
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
        # Validates the name (it may be set on the instance); a sharded queue's next shard.
        queue = self.keys(self._router.route(job)).queue
        payload = encode_job_payload(job, self.settings.max_payload_bytes)
        return PendingDispatch(
            queue=queue,
            kind=(job.name, job.attempts, job.effective_delay_ms),
            job_id=new_job_id(),
            payload=payload,
        )

    def _dispatch_calls(self, batches: list[list[PendingDispatch]], deadline_ms: int) -> list[ScriptCall]:
        """One dispatch.lua call per batch (each of one queue and kind)."""
        calls: list[ScriptCall] = []
        for batch in batches:
            keys = self.keys(batch[0].queue)
            name, attempts, delay_ms = batch[0].kind
            args: list[Any] = [
                keys.base,
                keys.queue,
                self.settings.max_payload_bytes,
                self._now_arg(),
                name,
                attempts,
                delay_ms,
                deadline_ms,
                self.settings.replay_guard_ms,
            ]
            for pending in batch:
                args += (pending.job_id, pending.payload)
            calls.append((self.scripts.dispatch, [keys.ready, keys.delayed, keys.wake], args))
        return calls
