"""Middleware: your code around each job's handle(), able to change what happens to the job.

    current_tenant: ContextVar[str] = ContextVar("current_tenant")

    async def tenant(ctx: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        token = current_tenant.set(ctx.job.payload["tenant"])
        try:
            return await call_next()
        finally:
            current_tenant.reset(token)

    await Worker(engine, ["default"], middleware=[tenant, db_session]).run()

    class ImportFeed(Job):
        middleware = (idempotency_guard,)        # runs inside the worker's middleware

A middleware takes the run's `JobContext` (`ctx.job` is the Job, with its payload) and
`call_next`, which runs the rest of the chain and returns what it returned. Order: the
worker's middleware outermost, in list order, then the class's (inherited like any class
attribute), then handle(). `before` hooks run before the chain; `after` and `on_failure`
hooks once its outcome is recorded.

What a middleware raises is the job's outcome, as if handle() had raised it (PermanentFailure
fails it now, RetryLater retries it after its delay, anything else follows the retry policy);
catching what call_next() raised and returning makes the run a success. Returning without
calling call_next() skips handle(): the job is done, and what the middleware returned is its
result (kept for a class with keep_result). call_next() may be called once; a second call
raises RuntimeError. The job's `timeout` covers the whole chain, and a cancellation (timeout,
abort, a stopping worker) reaches the middleware as one. Context variables set by a middleware
are seen by handle(): they run in the same task.

Unlike hooks, a middleware runs on every job's hot path: each costs one coroutine frame.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import InvalidMiddleware
from .lifecycle import JobContext, now_ms

if TYPE_CHECKING:
    from .job import Job

__all__ = ["Chain", "Chains", "Middleware", "context_of", "load", "middleware_tuple", "run_chain"]

Middleware: TypeAlias = Callable[[JobContext, Callable[[], Awaitable[Any]]], Awaitable[Any]]
Chain: TypeAlias = tuple[Middleware, ...]


def middleware_tuple(given: Iterable[Middleware] | None, what: str) -> Chain:
    """`given` as a tuple, each checked to be usable as a middleware (else InvalidMiddleware)."""
    if given is None:
        return ()
    if isinstance(given, str) or not isinstance(given, Iterable) or callable(given):
        raise InvalidMiddleware(f"{what} must be a list or tuple of middleware, not {given!r}")
    chain = tuple(given)
    for middleware in chain:
        if not callable(middleware):
            raise InvalidMiddleware(f"{what}: {middleware!r} is not callable; {InvalidMiddleware.__doc__}")
        if inspect.isasyncgenfunction(middleware) or inspect.isgeneratorfunction(middleware):
            raise InvalidMiddleware(
                f"{what}: {getattr(middleware, '__qualname__', middleware)!r} is a generator; write "
                "`async def mw(ctx, call_next)` with `return await call_next()`, not a yield"
            )
    return chain


class Chains(dict["type[Job]", Chain]):
    """One worker's (or SyncEngine's) middleware followed by each job class's, composed on a
    class's first job and kept: the lookup per job is a dict's."""

    def __init__(self, outer: Chain = ()) -> None:
        super().__init__()
        self.outer = outer

    def __missing__(self, cls: type[Job]) -> Chain:
        chain = self[cls] = self.outer + cls.middleware
        return chain


def run_chain(chain: Chain, ctx: JobContext, job: Job) -> Awaitable[Any]:
    """The run of `chain` (not empty) around `job.handle()`: await it for what it returns.

    Each middleware's call_next starts the next one directly: no frame of ours in between.
    """
    return chain[0](ctx, _call_next(chain, 1, ctx, job))


def context_of(job: Job, worker_id: str = "") -> JobContext:
    """A run's context made of the job alone (SyncEngine's runs: no worker, no claim)."""
    return JobContext(
        worker_id=worker_id,
        queue=job.queue,
        job_id=job.id or "",
        name=job.name,
        attempt=job.attempt,
        max_attempts=job.attempts,
        job=job,
        started_ms=now_ms(),
    )


def _call_next(chain: Chain, index: int, ctx: JobContext, job: Job) -> Callable[[], Awaitable[Any]]:
    called = False

    def call_next() -> Awaitable[Any]:
        nonlocal called
        if called:
            raise RuntimeError(f"call_next() was called twice by middleware {_name(chain[index - 1])}")
        called = True
        if index == len(chain):
            return job.handle()
        return chain[index](ctx, _call_next(chain, index + 1, ctx, job))

    return call_next


def _name(middleware: Middleware) -> str:
    return getattr(middleware, "__qualname__", None) or repr(middleware)


def load(spec: str) -> Middleware:
    """The middleware named by "module:attribute" (the worker command's --middleware)."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise InvalidMiddleware(f"--middleware takes module:attribute, e.g. app.mw:tenant, not {spec!r}")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidMiddleware(f"cannot import {module_name!r} for --middleware {spec}: {exc}") from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise InvalidMiddleware(f"--middleware {spec}: {module_name} has no {attribute!r}") from None
    (middleware,) = middleware_tuple([found], f"--middleware {spec}")
    return middleware
