"""Prometheus metrics from a worker, and an OpenTelemetry span per job run.

    aiojobs-redis work --import app.jobs --metrics-port 9100      # the CLI

    metrics = PrometheusMetrics(port=9100)                         # or in Python
    await Worker(engine, ["payments"], metrics=metrics).run()

Both are optional: metrics need the `metrics` extra (`prometheus-client`); spans are made
when `opentelemetry-api` is importable (the `otel` extra) and cost almost nothing until an
OpenTelemetry SDK is configured. Exposed (all but the last two labelled queue and job):

    aiojobs_redis_jobs_started_total      handle() runs started
    aiojobs_redis_jobs_succeeded_total    runs that succeeded
    aiojobs_redis_jobs_retried_total      runs that failed with attempts left
    aiojobs_redis_jobs_failed_total       jobs failed for good (no attempts left, or unrunnable)
    aiojobs_redis_jobs_released_total     runs handed back to their queue unfinished: the worker
                                          stopped, or no class here has the job's name (deferred)
    aiojobs_redis_jobs_lost_total         runs whose lease was lost (outcome discarded)
    aiojobs_redis_jobs_abandoned_total    runs whose outcome was not recorded: the engine was
                                          unreachable until the lease ran out (a reaper
                                          returns the job to its queue)
    aiojobs_redis_jobs_aborted_total      runs cancelled because the job was aborted
    aiojobs_redis_job_duration_seconds    histogram of handle() run time
    aiojobs_redis_jobs_running            jobs running on this worker (labelled queue)
    aiojobs_redis_jobs_reclaimed_total    lapsed leases this worker's reaper took back
                                          (labelled queue, result = requeued | failed)
    aiojobs_redis_queue_jobs              jobs per queue and state (ready, delayed, running,
                                          failed), read from Redis every `depth_interval` s
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio

from .errors import ConfigurationError, EngineError
from .lifecycle import JobContext, Observer, WorkerView
from .records import QueueStats

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer
    from prometheus_client import CollectorRegistry

    from .runner import Outcome

log = logging.getLogger(__name__)

NAMESPACE = "aiojobs_redis"
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
UNRUNNABLE = "<unrunnable>"  # the job label of records that never became a Job (bounded labels)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            "Prometheus metrics need the 'metrics' extra: pip install 'aiojobs-redis[metrics]'"
        ) from None
    return prometheus_client


class _JobSeries:
    """The labelled children of one (queue, job) pair, looked up once."""

    __slots__ = (
        "abandoned",
        "aborted",
        "duration",
        "failed",
        "lost",
        "released",
        "retried",
        "running",
        "started",
        "succeeded",
    )

    def __init__(self, metrics: PrometheusMetrics, queue: str, job: str) -> None:
        self.started = metrics.started.labels(queue, job)
        self.succeeded = metrics.succeeded.labels(queue, job)
        self.retried = metrics.retried.labels(queue, job)
        self.failed = metrics.failed.labels(queue, job)
        self.released = metrics.released.labels(queue, job)
        self.lost = metrics.lost.labels(queue, job)
        self.abandoned = metrics.abandoned.labels(queue, job)
        self.aborted = metrics.aborted.labels(queue, job)
        self.duration = metrics.duration.labels(queue, job)
        self.running = metrics.running.labels(queue)


class PrometheusMetrics(Observer):
    """A worker's metrics in a prometheus_client registry (the default one unless given).

    With `port`, serves them over HTTP on `addr:port` (`port=0` picks a free port; see
    `http_port`) until `close()`. Without it, expose `registry` as you already do (e.g.
    `prometheus_client.make_asgi_app(registry)` in your web app). Two instances need two
    registries.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        port: int | None = None,
        addr: str = "127.0.0.1",
        depth_interval: float = 5.0,
    ) -> None:
        prom = _prometheus()
        self.registry = registry if registry is not None else prom.REGISTRY
        self.depth_interval = depth_interval
        job_labels = ("queue", "job")

        def counter(name: str, doc: str, labels: Sequence[str] = job_labels) -> Any:
            return prom.Counter(name, doc, labels, namespace=NAMESPACE, registry=self.registry)

        self.started = counter("jobs_started", "handle() runs started")
        self.succeeded = counter("jobs_succeeded", "runs that succeeded")
        self.retried = counter("jobs_retried", "runs that failed with attempts left (retried)")
        self.failed = counter("jobs_failed", "jobs failed for good")
        self.released = counter(
            "jobs_released", "runs handed back unfinished (the worker stopped, or the job name is unknown)"
        )
        self.lost = counter("jobs_lost", "runs whose lease was lost; the outcome was discarded")
        self.abandoned = counter(
            "jobs_abandoned", "runs whose outcome was not recorded: the engine was unreachable"
        )
        self.aborted = counter("jobs_aborted", "runs cancelled because the job was aborted")
        self.reclaimed = counter(
            "jobs_reclaimed", "lapsed leases taken back by this worker's reaper", ("queue", "result")
        )
        self.duration = prom.Histogram(
            "job_duration_seconds",
            "handle() run time",
            job_labels,
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=DURATION_BUCKETS,
        )
        self.running = prom.Gauge(
            "jobs_running",
            "jobs running on this worker",
            ("queue",),
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.depth = prom.Gauge(
            "queue_jobs",
            "jobs per queue and state, as last read from Redis",
            ("queue", "state"),
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self._series: dict[tuple[str, str], _JobSeries] = {}
        self._server: Any = None
        self._thread: Any = None
        self.http_port: int | None = None
        if port is not None:
            self.start_http_server(port, addr)

    def __repr__(self) -> str:
        where = f" on :{self.http_port}" if self.http_port is not None else ""
        return f"<PrometheusMetrics{where}>"

    # -- HTTP -------------------------------------------------------------------------------

    def start_http_server(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve the registry at http://addr:port/ in a thread; return the port."""
        if self._server is not None:
            raise ConfigurationError(f"metrics are already served on port {self.http_port}")
        try:
            self._server, self._thread = _prometheus().start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {addr}:{port}: {exc}") from exc
        self.http_port = int(self._server.server_port)
        log.info("serving Prometheus metrics on http://%s:%d/metrics", addr, self.http_port)
        return self.http_port

    def close(self) -> None:
        """Stop the HTTP server, if one runs."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(timeout=5)
            self.http_port = None

    # -- the observer -----------------------------------------------------------------------

    def _of(self, ctx: JobContext) -> _JobSeries:
        key = (ctx.queue, ctx.name if ctx.job is not None else UNRUNNABLE)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _JobSeries(self, *key)
        return series

    def job_started(self, ctx: JobContext) -> None:
        series = self._of(ctx)
        series.started.inc()
        series.running.inc()

    def job_ended(self, ctx: JobContext) -> None:
        series = self._of(ctx)
        result = ctx.result
        if ctx.started_ms:  # started (else the record never became a job)
            series.running.dec()
        if ctx.duration is not None and result in ("succeeded", "retried", "failed"):
            series.duration.observe(ctx.duration)
        if result == "succeeded":
            series.succeeded.inc()
        elif result == "retried":
            series.retried.inc()
        elif result == "failed":
            series.failed.inc()
        elif result == "released":
            series.released.inc()
        elif result == "lost":
            series.lost.inc()
        elif result == "abandoned":
            series.abandoned.inc()
        elif result == "aborted":
            series.aborted.inc()

    def jobs_reclaimed(self, queue: str, requeued: Sequence[str], failed: Sequence[str]) -> None:
        if requeued:
            self.reclaimed.labels(queue, "requeued").inc(len(requeued))
        if failed:
            self.reclaimed.labels(queue, "failed").inc(len(failed))

    async def serve(self, worker: WorkerView) -> None:
        """Keep the queue depth gauges fresh while the worker runs (if its engine counts them)."""
        engine = worker.engine
        if not isinstance(engine, _CountsJobs):
            return
        warned = False
        while True:
            try:
                for queue in worker.queues:
                    for stats in await engine.stats(queue):
                        for state in ("waiting", "ready", "delayed", "running", "failed"):
                            self.depth.labels(stats.queue, state).set(getattr(stats, state))
                warned = False
            except EngineError as exc:
                if not warned:
                    log.warning("reading queue depths for metrics failed: %s", type(exc).__name__)
                warned = True
            await anyio.sleep(self.depth_interval)


@runtime_checkable
class _CountsJobs(Protocol):
    async def stats(self, queue: str | None = None) -> list[QueueStats]: ...


class JobTracer:
    """An OpenTelemetry CONSUMER span around each handle() run.

    The span is named after the job and carries the queue, id and attempt; a failure is
    recorded on it with status ERROR. Spans your handler starts are its children.
    """

    def __init__(self, tracer: Tracer, *, only_when_configured: bool = False) -> None:
        from opentelemetry import trace

        self._tracer = tracer
        self._kind = trace.SpanKind.CONSUMER
        self._status, self._error = trace.Status, trace.StatusCode.ERROR
        self._provider = trace.get_tracer_provider
        self._unconfigured = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self._only_when_configured = only_when_configured
        self._active, self._recheck_at = False, 0.0

    @classmethod
    def if_available(cls) -> JobTracer | None:
        """A tracer when opentelemetry-api is installed, else None (no spans, no cost).

        Until an OpenTelemetry SDK sets a tracer provider, every span would be a no-op:
        the tracer then skips making them, which saves a few microseconds per job.
        """
        try:
            from opentelemetry import trace
        except ImportError:
            return None
        return cls(trace.get_tracer("aiojobs_redis"), only_when_configured=True)

    @property
    def active(self) -> bool:
        """Whether spans are made now (an SDK's provider is set, or a tracer was given).

        Looked up at most once a second: the lookup reads the environment.
        """
        if not self._only_when_configured:
            return True
        now = time.monotonic()
        if now >= self._recheck_at:
            self._recheck_at = now + 1.0
            self._active = not isinstance(self._provider(), self._unconfigured)
        return self._active

    async def trace(self, ctx: JobContext, call: Callable[[], Awaitable[Outcome]]) -> Outcome:
        if not self.active:
            return await call()
        attributes: dict[str, str | int] = {
            "messaging.system": "aiojobs-redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": ctx.queue,
            "messaging.message.id": ctx.job_id,
            "aiojobs_redis.job.name": ctx.name,
            "aiojobs_redis.job.attempt": ctx.attempt,
            "aiojobs_redis.worker.id": ctx.worker_id,
        }
        with self._tracer.start_as_current_span(
            ctx.name,
            kind=self._kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                outcome = await call()
            except BaseException:  # cancelled: the worker stops, or the lease was lost
                span.set_attribute("aiojobs_redis.cancelled", True)
                raise
            if outcome.error is not None:
                span.record_exception(outcome.error)
                span.set_status(self._status(self._error, outcome.summary))
        return outcome
