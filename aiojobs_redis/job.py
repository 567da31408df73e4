"""The Job base class: what a job is, where it goes and how it is retried."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import MethodType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, cast

from . import groups, registry, schedules, unique, workflows
from .codec import encode_payload
from .context import current_engine
from .errors import AiojobsRedisError, InvalidJobClass, InvalidPriority, RateLimited, RetryLater
from .keys import MAX_PRIORITY, MIN_PRIORITY, validate_queue
from .middleware import Middleware, middleware_tuple
from .retry import RetryPolicy
from .timeparse import Delay, to_ms
from .typed_payloads import check_payload_type

if TYPE_CHECKING:
    from .engine_base import WorkerEngine
    from .records import ClaimedJob
    from .results import JobRef

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:<>\-]{0,199}")
_UNSET: Any = object()


class _DispatchCall(Protocol):
    def __call__(
        self,
        payload: Any = ...,
        *,
        delay: Delay | None = None,
        priority: int | None = None,
        group: str | None = None,
        durable: bool | None = None,
        depends_on: Iterable[str] | None = None,
        on_dependency_failure: str = "fail",
    ) -> Coroutine[Any, Any, str]: ...


class _Dispatch:
    """`Job.dispatch`: read from a job, that job's method; read from a class, a function that
    dispatches a new job of the class (made when called, so reading it has no side effect)."""

    def __init__(self, method: Callable[..., Coroutine[Any, Any, str]]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    def __get__(self, job: Job | None, cls: type[Job]) -> _DispatchCall:
        if job is not None:
            return cast(_DispatchCall, MethodType(self._method, job))
        method = self._method

        @functools.wraps(method)
        def dispatch_new(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, str]:
            return method(cls(), *args, **kwargs)

        return cast(_DispatchCall, dispatch_new)


class RunHolder(Protocol):
    """What runs a job (a Worker): its engine, and whom to tell that the lease is gone."""

    @property
    def engine(self) -> WorkerEngine: ...

    def lease_refused(self, claimed: ClaimedJob) -> None: ...


class Job:
    """Subclass, set the class attributes you need, and write `async def handle(self)`.

    Class attributes (all optional):
      queue        queue name, default "default"
      delay        "now" (default), "+N unit", seconds or a timedelta
      attempts     total tries, default 1
      retry_after  wait before a retry: "now" (default), "+N unit", seconds or a timedelta
      backoff      multiply the wait by this for each further retry (2.0 = exponential)
      max_retry_delay  cap on the wait, default "+1 hour"
      jitter       spread retries over [wait/2, wait]
      timeout      cancel handle() after this long; None (default) means no limit
      retry_on     exception types that are retried (None, the default: every exception);
                   any other exception fails the job for good at once
      fail_on      exception types that fail the job for good at once, attempts or not
      shards       split the queue into this many sub-queues (see sharding.py), default 1
      payload_type a pydantic model or a dataclass: the payload is validated at dispatch and
                   handle() gets an instance of it (needs pydantic; see typed_payloads.py)
      name         the name stored in Redis, by which a worker finds the class; default the
                   class's __qualname__ ("SendEmail"), whatever module it is imported as
      schedule     run the job periodically: Every("+5 minutes") or Cron("0 3 * * *",
                   tz="Europe/Paris"), or a tuple of them (each with its own payload and id);
                   see schedules.py. Fired by the workers serving the queue; not inherited
      aliases      more names the class answers to, e.g. ("OldName",) after a rename, so
                   that jobs stored under the old name still run; not inherited
      unique       True: at most one live job of this class per unique key (see unique.py)
      unique_key   the key: a payload field name, a tuple of them, or a method
                   `def unique_key(self) -> str`; default None: the whole payload
      unique_until "end" (default): the key is held until the job is done, failed for good
                   or aborted; "start": until a worker starts it
      on_duplicate what a dispatch does while a live job holds the key: "keep" (default)
                   returns the live job's id and sets `job.duplicate`; "error" raises
                   DuplicateJob; "replace" gives a job not yet started this payload (and
                   a delayed one this delay), or a running one a single pending successor,
                   stored when it ends
      group        the job's rate group (per-key limits, round-robin across groups; see
                   groups.py): a format string over the payload mapping, e.g.
                   "{tenant_id}", or a method `def group(self) -> str`; None (default):
                   none. Not with a priority other than 0
      max_throttles  times handle() may raise RateLimited without using an attempt
                   (default 25); after that each one counts as a failed attempt
      keep_result  keep what handle() returns (JSON) this long after the job is done,
                   e.g. "+1 hour"; None (default) keeps nothing. Read it with
                   `await SendEmail.ref(job_id).result(timeout=30)` (see results.py)
      middleware   coroutine functions `(ctx, call_next)` run around handle(), inside the
                   worker's middleware, in order (see middleware.py); default ()

    Two different classes may not claim one name (or alias): defining the second raises
    DuplicateJobName; give one of them its own `name`. A class also answers to 0.1's default
    name, "module.QualName" (unless its module is __main__), so jobs stored by 0.1 still run.

    `dispatch` works on the class too: `await SendEmail.dispatch(payload)` is
    `await SendEmail().dispatch(payload)`.

    Inside handle(), `await self.set_progress(value)` records how far the job has got.

    Methods you may override: `retry_delay(exc, attempt)` (the wait before the next try)
    and `on_exhausted(exc)` (called once when the job fails for good).
    """

    queue: ClassVar[str] = "default"
    delay: ClassVar[Delay] = "now"
    attempts: ClassVar[int] = 1
    retry_after: ClassVar[Delay] = "now"
    backoff: ClassVar[float] = 1.0
    max_retry_delay: ClassVar[Delay] = "+1 hours"
    jitter: ClassVar[bool] = False
    timeout: ClassVar[Delay | None] = None
    retry_on: ClassVar[tuple[type[BaseException], ...] | None] = None
    fail_on: ClassVar[tuple[type[BaseException], ...]] = ()
    shards: ClassVar[int] = 1
    payload_type: ClassVar[type[Any] | None] = None
    name: ClassVar[str] = "Job"
    aliases: ClassVar[tuple[str, ...]] = ()
    schedule: ClassVar[Any] = None  # Every | Cron | a tuple of them (schedules.py)
    unique: ClassVar[bool] = False
    unique_key: ClassVar[str | tuple[str, ...] | Callable[..., str] | None] = None
    unique_until: ClassVar[str] = "end"
    on_duplicate: ClassVar[str] = "keep"
    keep_result: ClassVar[Delay | None] = None
    priority: ClassVar[int] = 0  # -10..10; higher runs sooner
    middleware: ClassVar[tuple[Middleware, ...]] = ()
    group: ClassVar[str | Callable[..., str] | None] = None  # rate group (groups.py)
    max_throttles: ClassVar[int] = 25  # RateLimited raised this often uses no attempt

    # Per-dispatch overrides (set_priority, set_group): read from the class until set, so a
    # plain job's constructor does not write them.
    _priority: int | None = None
    _group: str | None = None

    # Parsed once per class by __init_subclass__.
    delay_ms: ClassVar[int] = 0
    keep_result_ms: ClassVar[int] = 0
    timeout_ms: ClassVar[int | None] = None
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__qualname__
        _check_name(cls.name)
        cls.aliases = _aliases(cls)
        _check_handle(cls)
        validate_queue(cls.queue)
        if not isinstance(cls.attempts, int) or isinstance(cls.attempts, bool) or cls.attempts < 1:
            raise ValueError(f"{cls.__qualname__}.attempts must be an int >= 1, not {cls.attempts!r}")
        if not isinstance(cls.backoff, int | float) or cls.backoff < 1:
            raise ValueError(f"{cls.__qualname__}.backoff must be a number >= 1")
        cls.delay_ms = to_ms(cls.delay, what=f"{cls.__qualname__}.delay")
        cls.timeout_ms = (
            None if cls.timeout is None else to_ms(cls.timeout, what=f"{cls.__qualname__}.timeout")
        )
        cls.retry_policy = RetryPolicy(
            retry_after_ms=to_ms(cls.retry_after, what=f"{cls.__qualname__}.retry_after"),
            backoff=float(cls.backoff),
            max_delay_ms=to_ms(cls.max_retry_delay, what=f"{cls.__qualname__}.max_retry_delay"),
            jitter=bool(cls.jitter),
        )
        for attr in ("retry_on", "fail_on"):
            types = getattr(cls, attr)
            if types is None and attr == "retry_on":
                continue
            if not isinstance(types, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                raise ValueError(f"{cls.__qualname__}.{attr} must be a tuple of exception types")
        cls.keep_result_ms = 0
        if cls.keep_result is not None:
            cls.keep_result_ms = to_ms(cls.keep_result, what=f"{cls.__qualname__}.keep_result")
            if cls.keep_result_ms <= 0:
                raise ValueError(f"{cls.__qualname__}.keep_result must be a positive time, or None")
        check_priority(cls.priority, f"{cls.__qualname__}.priority")
        cls.middleware = middleware_tuple(cls.middleware, f"{cls.__qualname__}.middleware")
        groups.check_option(cls)
        check_payload_type(cls.__qualname__, cls.payload_type)
        schedules.of_class(cls)  # a bad schedule fails at import, not in a worker
        unique.check_options(cls)
        _register(cls)

    def __init__(self, payload: Any = None) -> None:
        self.payload: Any = {} if payload is None else payload
        self.id: str | None = None
        self.attempt: int = 0  # 1 on the first try; set by the worker
        self._delay_ms: int | None = None
        self.duplicate = False  # set by dispatch: a unique job whose key a live job held
        self._lease: tuple[RunHolder, ClaimedJob] | None = None  # set by the worker running it

    def set_payload(self, payload: Any) -> Self:
        self.payload = payload
        return self

    def set_delay(self, delay: Delay) -> Self:
        """Override the class's delay for this dispatch."""
        self._delay_ms = to_ms(delay)
        return self

    @property
    def effective_delay_ms(self) -> int:
        return self.delay_ms if self._delay_ms is None else self._delay_ms

    def set_priority(self, priority: int) -> Self:
        """Override the class's priority level for this dispatch (-10..10; higher runs sooner)."""
        self._priority = check_priority(priority)
        return self

    @property
    def effective_priority(self) -> int:
        return self.priority if self._priority is None else self._priority

    def set_group(self, group: str) -> Self:
        """Override the class's rate group for this dispatch (see groups.py for the rule)."""
        self._group = groups.validate_group(group)
        return self

    @_Dispatch
    async def dispatch(
        self,
        payload: Any = _UNSET,
        *,
        delay: Delay | None = None,
        priority: int | None = None,
        group: str | None = None,
        durable: bool | None = None,
        depends_on: Iterable[str] | None = None,
        on_dependency_failure: str = "fail",
    ) -> str:
        """Store the job and return its id once Redis has acknowledged it.

        On the class, `await SendEmail.dispatch(payload)`, it dispatches a new job of that
        class. `durable=True` returns only once `durable_replicas` replicas hold it too (else
        raises NotReplicated; the job is stored all the same); `durable=False` does not wait;
        None (the default) does as the `durable` setting says. The sync engine ignores it.

        `depends_on=[id, ...]`: the job waits until those jobs (of its queue) are done;
        if one fails for good or is aborted, this one ends failed (reason
        dependency_failed or dependency_aborted), unless `on_dependency_failure="run"`
        (then it runs once they have all ended). UnknownDependency for an id with no job
        on record; see workflows.py.
        """
        if payload is not _UNSET:
            self.payload = payload
        if delay is not None:
            self.set_delay(delay)
        if priority is not None:
            self.set_priority(priority)
        if group is not None:
            self.set_group(group)
        if depends_on is not None:
            return await workflows.dispatch_after(self, depends_on, on_dependency_failure, durable)
        return await current_engine().dispatch(self, durable=durable)

    @classmethod
    async def dispatch_many(
        cls,
        payloads: Iterable[Any],
        *,
        delay: Delay | None = None,
        priority: int | None = None,
        durable: bool | None = None,
    ) -> list[str]:
        """Store one job of this class per payload, in as few round trips as possible.

        `durable` as for dispatch().
        """
        jobs = [cls(payload) for payload in payloads]
        if delay is not None:
            delay_ms = to_ms(delay)
            for job in jobs:
                job._delay_ms = delay_ms
        if priority is not None:
            level = check_priority(priority)
            for job in jobs:
                job._priority = level
        engine = current_engine()
        return await engine.dispatch_many(jobs, durable=durable)

    @classmethod
    def ref(cls, job_id: str) -> JobRef:
        """A handle on the job `job_id` of this class, to wait for its result or read its
        progress (no I/O until used; the engine is the current one, the queue the class's)."""
        from .results import JobRef  # results imports this module's neighbours

        return JobRef(job_id, cls.queue)

    async def set_progress(self, progress: Any) -> bool:
        """Record how far this run has got (a small JSON value), for `ref().progress()`, the
        CLI and the dashboard. One round trip per call.

        False when this run no longer holds the job (its lease lapsed and another run took
        over): nothing is recorded, and the worker cancels the run as it does when a renewal
        finds the lease lost (its outcome is discarded). Outside a worker (the sync
        engine, a test calling handle() itself) it records nothing and returns True.
        PayloadNotSerializable or PayloadTooLarge (max_payload_bytes) for a bad value.
        """
        # getattr: a subclass's __init__ may not call Job's.
        lease: tuple[RunHolder, ClaimedJob] | None = getattr(self, "_lease", None)
        if lease is None:
            return True
        holder, claimed = lease
        engine = holder.engine
        recorded = await engine.set_progress(
            claimed, encode_payload(progress, engine.settings.max_payload_bytes)
        )
        if not recorded:
            holder.lease_refused(claimed)
        return recorded

    async def dependency_result(self, job_id: str | None = None) -> Any:
        """While this job runs: the result its prerequisite `job_id` kept (its class has
        keep_result); None: its only prerequisite's (the step before it in a chain).
        JobNotFound when that job kept none."""
        return await workflows.dependency_result(self, job_id)

    async def batch_result(self) -> workflows.BatchResult:
        """While this job runs as a batch's callback (or member): the batch's counts and
        ids (BatchResult)."""
        return await workflows.batch_result_of(self)

    async def handle(self) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} must define async def handle(self)")

    def retries(self, exc: BaseException) -> bool:
        """Whether `exc`, raised by handle(), may be retried (`retry_on` and `fail_on` decide)."""
        if isinstance(exc, RetryLater | RateLimited):
            return True  # asked for in so many words
        if self.fail_on and isinstance(exc, self.fail_on):
            return False
        return self.retry_on is None or isinstance(exc, self.retry_on)

    def retry_delay(self, exc: BaseException, attempt: int) -> Delay:
        """The wait before retrying after try `attempt` (1-based) raised `exc`.

        Override for per-exception waits; the default follows retry_after, backoff,
        max_retry_delay and jitter. RetryLater's own delay, when given, wins over this.
        """
        return self.retry_policy.delay_ms(attempt) / 1000

    def retry_delay_ms(self, exc: BaseException, attempt: int) -> int:
        if type(self).retry_delay is Job.retry_delay:
            return self.retry_policy.delay_ms(attempt)  # no float round trip
        return to_ms(self.retry_delay(exc, attempt), what=f"{type(self).__qualname__}.retry_delay()")

    def on_exhausted(self, exc: BaseException) -> Awaitable[None] | None:
        """Called once when this job fails for good, with what its last try raised.

        May be a coroutine function. An error in it is logged and changes nothing.
        """
        return None

    def __repr__(self) -> str:
        # Never the payload: it may hold secrets.
        return f"<{type(self).__qualname__} id={self.id} queue={self.queue} attempt={self.attempt}>"


def check_priority(level: object, what: str = "priority") -> int:
    """A priority level: an int from MIN_PRIORITY to MAX_PRIORITY (higher runs sooner)."""
    if not isinstance(level, int) or isinstance(level, bool) or not MIN_PRIORITY <= level <= MAX_PRIORITY:
        raise InvalidPriority(f"{what} must be an int from {MIN_PRIORITY} to {MAX_PRIORITY}, not {level!r}")
    return level


def _check_name(name: object, what: str = "job name") -> str:
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise AiojobsRedisError(
            f"invalid {what} {name!r}: 1-200 letters, digits and '_.:<>-', not starting with a digit"
        )
    return name


def _aliases(cls: type[Job]) -> tuple[str, ...]:
    """The class's own aliases (an alias is not inherited: a subclass is another job)."""
    aliases = cls.__dict__.get("aliases", ())
    if isinstance(aliases, str) or not isinstance(aliases, tuple | list | frozenset | set):
        raise AiojobsRedisError(
            f'{cls.__qualname__}.aliases must be a tuple of job names, e.g. ("OldName",), not {aliases!r}'
        )
    return tuple(dict.fromkeys(_check_name(a, "job alias") for a in aliases if a != cls.name))


def _check_handle(cls: type[Job]) -> None:
    """handle() must be a coroutine function; a plain def would run and only then fail."""
    handle = cls.__dict__.get("handle")
    if handle is None:
        return
    inner = inspect.unwrap(handle) if callable(handle) else handle
    if inspect.isasyncgenfunction(inner) or inspect.isgeneratorfunction(inner):
        raise InvalidJobClass(
            f"{cls.__qualname__}.handle is a generator: write `async def handle(self)` with no yield "
            "(a job returns no results)"
        )
    if not (inspect.iscoroutinefunction(handle) or inspect.iscoroutinefunction(inner)):
        raise InvalidJobClass(
            f"{cls.__qualname__}.handle must be a coroutine function: write `async def handle(self)`, "
            "not `def handle(self)`"
        )


def _register(cls: type[Job]) -> None:
    """Register the class under its name and aliases, and 0.1's default name as a weak alias.

    A class with no handle() of its own (an abstract base) claims its names weakly: it
    cannot run a job, so another class may take them.
    """
    names = (cls.name, *cls.aliases)
    legacy = f"{cls.__module__}.{cls.__qualname__}"
    weak = () if cls.__module__ == "__main__" or legacy in names else (legacy,)
    if cls.handle is Job.handle:
        registry.register(cls, (), weak=names + weak)
    else:
        registry.register(cls, names, weak=weak)
