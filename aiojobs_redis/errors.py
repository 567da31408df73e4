"""The exceptions aiojobs-redis raises, and the ones a job's ``handle()`` may raise.

Each class's docstring is its default message, so ``raise EngineNotConnected()``
already says what to do.
"""

from __future__ import annotations

from datetime import timedelta


class AiojobsRedisError(Exception):
    """Base class of every error raised by aiojobs-redis."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(AiojobsRedisError, ValueError):
    """A setting is invalid; fix it in the environment or the connect() arguments."""


class EmbeddedServerError(AiojobsRedisError, RuntimeError):
    """The embedded development server could not start."""


class InvalidDelay(AiojobsRedisError, ValueError):
    """A delay must be "now", "+N unit" (second/minute/hour/day/week), seconds or a timedelta."""


class InvalidPriority(AiojobsRedisError, ValueError):
    """A priority level must be an int from -10 to 10 (higher runs sooner); not a bool."""


class InvalidQueueName(AiojobsRedisError, ValueError):
    """A queue name must be 1-64 characters of letters, digits, '_', '-' and '.'."""


class InvalidJobId(AiojobsRedisError, ValueError):
    """A job id must be 1-64 characters of letters, digits, '_' and '-'."""


class PayloadError(AiojobsRedisError):
    """The payload cannot be stored."""


class PayloadNotSerializable(PayloadError, TypeError):
    """The payload holds a value JSON cannot represent, or one it would turn into another type."""


class PayloadTooLarge(PayloadError):
    """The encoded payload is larger than the engine's max_payload_bytes."""


class EngineNotConnected(AiojobsRedisError, RuntimeError):
    """No engine is open: wrap the code in `async with aiojobs_redis.connect():` first."""


class EngineError(AiojobsRedisError):
    """Redis refused a command (out of memory, a read-only replica, an ACL rule...)."""


class EngineUnavailable(EngineError, ConnectionError):
    """Redis could not be reached or did not answer in time; nothing was acknowledged."""


class RedisAuthError(ConfigurationError, EngineError):
    """Redis refused the credentials in the URL: give them as redis://USER:PASSWORD@host.

    Not an EngineUnavailable: waiting cannot fix it, so code that retries while Redis is
    unavailable (a starting worker, a web app) stops at once on this. An EngineError all the
    same: a running worker whose credentials stop working backs off and logs it, as for any
    other refusal, rather than dropping the jobs it runs.
    """


class RedisTLSError(ConfigurationError, EngineError):
    """The Redis server's TLS certificate did not verify: give its CA with ?ssl_ca_certs=.

    Not an EngineUnavailable, for the same reasons as RedisAuthError.
    """


class NotReplicated(EngineError):
    """A durable dispatch stored the job, but fewer replicas than asked acknowledged it in time.

    The job will run, unless the primary fails before replicating it. `job_ids` are the jobs
    stored but not confirmed.
    """

    def __init__(self, message: str | None = None, *, job_ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.job_ids = job_ids or []


class MalformedJob(AiojobsRedisError):
    """A job record found in Redis is not in the expected shape."""


class UnknownJob(AiojobsRedisError, LookupError):
    """No Job class is registered under this name; import the module that defines it."""


class DuplicateJobName(AiojobsRedisError, ValueError):
    """Two Job classes claim one job name; give one of them its own `name = "..."`."""


class InvalidJobClass(AiojobsRedisError, TypeError):
    """A Job subclass is not usable as written (its handle() must be `async def`)."""


class InvalidMiddleware(AiojobsRedisError, TypeError):
    """A middleware must be a callable taking (ctx, call_next) and returning an awaitable: an `async def`."""


class PermanentFailure(Exception):
    """Raise inside handle() to fail the job now, without using its remaining attempts."""


class RetryLater(Exception):
    """Raise inside handle() to retry the job after `delay`, using one attempt.

    `delay` is checked here, so a bad one is an InvalidDelay raised where it is written;
    None leaves the wait to the job's retry policy.
    """

    def __init__(self, delay: float | str | timedelta | None = None, message: str = "") -> None:
        from .timeparse import to_ms  # timeparse imports this module

        self.delay_ms = None if delay is None else to_ms(delay, what="RetryLater delay")
        super().__init__(message or "retry requested")
        self.delay = delay


class InvalidGroupKey(AiojobsRedisError, ValueError):
    """A rate group key must be 1-200 letters, digits and '_.:@+-', from a payload that has its fields."""


class RateLimited(Exception):
    """Raise inside handle() when a partner says "too many requests" (an HTTP 429).

    The job goes back to the head of its group (or queue), using no attempt, and no worker
    starts a job of its group (a job without a group: of its queue) until `retry_after`
    has passed. After the class's `max_throttles` throttles, a further one counts as a
    failed attempt (reason "rate_limited"), so a job throttled for ever still ends.
    `retry_after`: seconds (a number, or digits as an HTTP Retry-After header gives them),
    "+N unit" or a timedelta; default 1 second. It is checked here: a bad one is an
    InvalidDelay raised where it is written.
    """

    def __init__(self, retry_after: float | str | timedelta = "+1 second", message: str = "") -> None:
        from .timeparse import to_ms  # timeparse imports this module

        if isinstance(retry_after, str) and retry_after.strip().isdigit():
            retry_after = int(retry_after)  # Retry-After: 30
        self.retry_after_ms = to_ms(retry_after, what="RateLimited retry_after")
        super().__init__(message or f"rate limited, retry after {self.retry_after_ms / 1000:g} s")
        self.retry_after = retry_after


class InvalidPayload(PayloadError, ValueError):
    """The payload does not validate as its job class's payload_type."""


class InvalidSchedule(AiojobsRedisError, ValueError):
    """A schedule is not usable as written (its expression, time zone, id or grace)."""


class DuplicateJob(AiojobsRedisError):
    """A unique job with `on_duplicate = "error"` was dispatched while a live job holds its key.

    Nothing was stored; `existing_id` is the id of the live job.
    """

    def __init__(self, existing_id: str, lock: str) -> None:
        super().__init__(f"a job with unique key {lock!r} is live: {existing_id}")
        self.existing_id = existing_id
        self.lock = lock


class JobFailed(AiojobsRedisError):
    """The job ended in the failed set; `reason`, `type` and `message` say why.

    `error` is the whole error record (with the traceback). reason "bad_result": handle()
    returned a value that could not be kept (not JSON, or larger than max_payload_bytes).
    """

    def __init__(self, job_id: str, error: dict[str, object] | None = None) -> None:
        self.job_id = job_id
        self.error: dict[str, object] = dict(error or {})
        self.reason = str(self.error.get("reason") or "error")
        self.type = str(self.error.get("type") or "")
        self.message = str(self.error.get("message") or "")
        detail = f"{self.type}: {self.message}" if self.type else self.message
        super().__init__(f"job {job_id} failed ({self.reason})" + (f": {detail}" if detail else ""))


class JobAborted(AiojobsRedisError):
    """The job was aborted before it could end; `reason` says why, when one was given."""

    def __init__(self, job_id: str, reason: str | None = None) -> None:
        self.job_id, self.reason = job_id, reason
        super().__init__(f"job {job_id} was aborted" + (f": {reason}" if reason else ""))


class JobNotFound(AiojobsRedisError, LookupError):
    """No such job: the id is unknown, or the job ended and its result was not kept or has expired."""


class BadResult(AiojobsRedisError, TypeError):
    """handle() returned a value that cannot be kept: not JSON, or over max_payload_bytes."""


class InvalidFlow(AiojobsRedisError, ValueError):
    """A chain, batch or depends_on that cannot be stored as given; nothing was stored."""


class UnknownDependency(AiojobsRedisError, LookupError):
    """A depends_on id names no job of the queue (unknown, of another queue, or ended and no
    longer on record); no job was stored. `job_id` is that id."""

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class DependencyFailed(AiojobsRedisError):
    """A job of a flow was not run: its prerequisite `job_id` failed (or was aborted). The
    error type recorded for such a job; the sync engine raises it (raise_on_failure)."""

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id
