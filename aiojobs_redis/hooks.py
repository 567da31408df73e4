"""Lifecycle hooks: your code before and after each job, and when one fails.

    from aiojobs_redis.hooks import Hooks, JobContext

    hooks = Hooks()

    @hooks.before
    async def note_start(ctx: JobContext) -> None:
        ctx.state["db"] = await pool.acquire()

    @hooks.after
    async def note_end(ctx: JobContext) -> None:
        await pool.release(ctx.state.pop("db"))

    @hooks.on_failure
    def alert(ctx: JobContext) -> None:
        if ctx.result == "failed":          # no attempts left ("retried" when one is)
            page_someone(ctx.name, ctx.job_id, ctx.error)

    await Worker(engine, ["payments"], hooks=hooks).run()
    # or: Hooks(before=[note_start], after=[note_end], on_failure=[alert])

Hooks are plain functions or coroutine functions taking a `JobContext`. `before` hooks run
before `handle()`; `after` hooks once the run's end is known, whatever it was (`ctx.result`,
see `Result`); `on_failure` hooks (before the `after` ones) when `handle()` raised or timed out. A hook
that raises, or runs past `timeout`, is logged with the job's id and skipped: it never
changes what happens to the job (code that should change it is middleware, see middleware.py:
`before` hooks run before the middleware, `after` ones once the chain's outcome is recorded).
Hooks run where the job runs, so a slow hook holds one of
the worker's `concurrency` slots while it runs.

The worker reports the same moments to its observers (Prometheus metrics, the event stream
the dashboard reads) through `lifecycle.Lifecycle`; `JobContext`, `Result` and `Observer`
are defined there and importable from here.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import anyio

from .lifecycle import JobContext, Observer, Result

__all__ = ["Hook", "Hooks", "JobContext", "Observer", "Result"]

log = logging.getLogger(__name__)

Hook = Callable[["JobContext"], Awaitable[None] | None]
H = TypeVar("H", bound=Hook)


class Hooks:
    """Your callbacks around each job. See the module docstring."""

    def __init__(
        self,
        *,
        before: Iterable[Hook] = (),
        after: Iterable[Hook] = (),
        on_failure: Iterable[Hook] = (),
        timeout: float | None = 30.0,
    ) -> None:
        self._before = list(before)
        self._after = list(after)
        self._on_failure = list(on_failure)
        self.timeout = timeout

    def __repr__(self) -> str:
        return (
            f"<Hooks before={len(self._before)} after={len(self._after)} "
            f"on_failure={len(self._on_failure)} timeout={self.timeout}>"
        )

    def before(self, hook: H) -> H:
        """Register `hook` to run before each job's handle() (usable as a decorator)."""
        self._before.append(hook)
        return hook

    def after(self, hook: H) -> H:
        """Register `hook` to run after each job's result is recorded (usable as a decorator)."""
        self._after.append(hook)
        return hook

    def on_failure(self, hook: H) -> H:
        """Register `hook` to run when a job's handle() fails (usable as a decorator)."""
        self._on_failure.append(hook)
        return hook

    async def run_before(self, ctx: JobContext) -> None:
        await self._run_all("before", self._before, ctx)

    async def run_after(self, ctx: JobContext) -> None:
        if ctx.failed:
            await self._run_all("on_failure", self._on_failure, ctx)
        await self._run_all("after", self._after, ctx)

    async def _run_all(self, kind: str, hooks: Sequence[Hook], ctx: JobContext) -> None:
        for hook in hooks:
            await self._call(kind, hook, ctx)

    async def _call(self, kind: str, hook: Hook, ctx: JobContext) -> None:
        name = getattr(hook, "__qualname__", repr(hook))
        try:
            with anyio.move_on_after(self.timeout if self.timeout is not None else float("inf")) as scope:
                returned = hook(ctx)
                if inspect.isawaitable(returned):
                    await returned
        except Exception:
            log.exception(
                "%s hook %s raised for job %s %s (queue %s, attempt %d); the job is unaffected",
                kind,
                name,
                ctx.job_id,
                ctx.name,
                ctx.queue,
                ctx.attempt,
            )
            return
        if scope.cancelled_caught:
            log.error(
                "%s hook %s ran past %s s for job %s %s (queue %s, attempt %d); cancelled",
                kind,
                name,
                self.timeout,
                ctx.job_id,
                ctx.name,
                ctx.queue,
                ctx.attempt,
            )
