"""A worker's Prometheus metrics, scraped over HTTP and read by prometheus_client's own parser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support.dashjobs import Tick
from support.dashkit import running_worker
from support.engine_calls import claim_from
from support.redis_server import free_port
from support.wait import eventually
from support.worker_procs import TESTS

from aiojobs_redis import Job, RedisEngine
from aiojobs_redis.cli import main
from aiojobs_redis.errors import ConfigurationError
from aiojobs_redis.metrics import PrometheusMetrics

pytestmark = pytest.mark.anyio

QUEUE = "metered"


class Quick(Job):
    queue = QUEUE

    async def handle(self) -> None:
        await anyio.sleep(0.02)


class RetriedOnce(Job):
    queue = QUEUE
    attempts = 2

    async def handle(self) -> None:
        if self.attempt == 1:
            raise ValueError("once")


class Broken(Job):
    name = "prometheus_metrics.Broken"  # another test module has a job Broken
    queue = QUEUE

    async def handle(self) -> None:
        raise RuntimeError("always")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(text: str) -> Samples:
    """Every sample by (name, sorted labels), as the real parser reads the exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def metrics() -> Iterator[PrometheusMetrics]:
    served = PrometheusMetrics(CollectorRegistry(), port=0, depth_interval=0.1)
    yield served
    served.close()


async def test_a_workers_metrics_over_http(engine: RedisEngine, metrics: PrometheusMetrics) -> None:
    for _ in range(5):
        await Quick().dispatch({})
    await RetriedOnce().dispatch({})
    await Broken().dispatch({})
    later = await Quick().dispatch({}, delay="+1 hour")
    await Quick().dispatch({}, depends_on=[later])  # waits for it: the waiting gauge
    url = f"http://127.0.0.1:{metrics.http_port}/metrics"
    async with running_worker(engine, [QUEUE], metrics=metrics) as worker, httpx.AsyncClient() as http:

        async def settled() -> bool:
            return worker.counters.succeeded == 6 and worker.counters.failed == 1

        await eventually(settled, what="seven jobs to end")

        async def depth_read() -> bool:  # the depth poller runs on its own clock
            samples = scrape((await http.get(url)).text)
            return (
                value(samples, "aiojobs_redis_queue_jobs", queue=QUEUE, state="failed") == 1
                and value(samples, "aiojobs_redis_queue_jobs", queue=QUEUE, state="ready") == 0
            )

        await eventually(depth_read, what="the queue depth gauges")
        response = await http.get(url)
    assert response.status_code == 200
    samples = scrape(response.text)
    quick, retried, broken = (cls.name for cls in (Quick, RetriedOnce, Broken))
    assert value(samples, "aiojobs_redis_jobs_started_total", queue=QUEUE, job=quick) == 5
    assert value(samples, "aiojobs_redis_jobs_started_total", queue=QUEUE, job=retried) == 2
    assert value(samples, "aiojobs_redis_jobs_succeeded_total", queue=QUEUE, job=quick) == 5
    assert value(samples, "aiojobs_redis_jobs_succeeded_total", queue=QUEUE, job=retried) == 1
    assert value(samples, "aiojobs_redis_jobs_retried_total", queue=QUEUE, job=retried) == 1
    assert value(samples, "aiojobs_redis_jobs_failed_total", queue=QUEUE, job=broken) == 1
    assert value(samples, "aiojobs_redis_jobs_failed_total", queue=QUEUE, job=quick) == 0
    assert value(samples, "aiojobs_redis_job_duration_seconds_count", queue=QUEUE, job=quick) == 5
    assert value(samples, "aiojobs_redis_job_duration_seconds_sum", queue=QUEUE, job=quick) >= 0.1
    fast = value(samples, "aiojobs_redis_job_duration_seconds_bucket", queue=QUEUE, job=quick, le="0.01")
    assert fast == 0, "each Quick run sleeps 20 ms"
    assert value(samples, "aiojobs_redis_job_duration_seconds_bucket", queue=QUEUE, job=quick, le="+Inf") == 5
    assert value(samples, "aiojobs_redis_jobs_running", queue=QUEUE) == 0
    assert value(samples, "aiojobs_redis_queue_jobs", queue=QUEUE, state="delayed") == 1
    assert value(samples, "aiojobs_redis_queue_jobs", queue=QUEUE, state="ready") == 0
    assert value(samples, "aiojobs_redis_queue_jobs", queue=QUEUE, state="waiting") == 1


async def test_running_and_reclaimed_jobs(engine: RedisEngine, metrics: PrometheusMetrics) -> None:
    # A "dead worker" claims a job and never renews: its lease lapses and the reaper takes it back.
    await Quick().dispatch({})
    claim = await claim_from(engine, QUEUE, 1, worker_id="dead-worker", request_id="1", lease_ms=100)
    assert len(claim.jobs) == 1
    gate = anyio.Event()

    class Held(Job):
        queue = QUEUE

        async def handle(self) -> None:
            await gate.wait()

    await Held().dispatch({})
    async with (
        running_worker(engine, [QUEUE], metrics=metrics, reap_interval=0.05) as worker,
        httpx.AsyncClient() as http,
    ):

        async def reclaimed_and_held() -> bool:
            running = metrics.registry.get_sample_value("aiojobs_redis_jobs_running", {"queue": QUEUE})
            return worker.counters.succeeded >= 1 and running == 1

        await eventually(reclaimed_and_held, what="the lapsed job to rerun while Held runs")
        text = (await http.get(f"http://127.0.0.1:{metrics.http_port}/")).text
        gate.set()
    samples = scrape(text)
    assert value(samples, "aiojobs_redis_jobs_reclaimed_total", queue=QUEUE, result="requeued") == 1
    assert value(samples, "aiojobs_redis_jobs_running", queue=QUEUE) == 1


def test_a_clear_error_without_prometheus_client(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'aiojobs-redis\[metrics\]'"):
        PrometheusMetrics()
    monkeypatch.setenv("REDIS_JOB_PREFIX", f"test-metrics-{os.getpid()}:")
    assert main(["work", "--queue", QUEUE, "--metrics-port", str(free_port()), "--burst"]) == 1
    assert "Prometheus metrics need the 'metrics' extra" in capsys.readouterr().err


def test_a_busy_port_is_a_clear_error() -> None:
    first = PrometheusMetrics(CollectorRegistry(), port=0)
    try:
        with pytest.raises(ConfigurationError, match=r"cannot serve metrics on 127\.0\.0\.1"):
            PrometheusMetrics(CollectorRegistry(), port=first.http_port)
    finally:
        first.close()


@pytest.mark.slow
async def test_the_cli_worker_serves_metrics(engine: RedisEngine, redis_url: str, prefix: str) -> None:
    """`aiojobs-redis work --metrics-port` in its own process, scraped while it runs."""
    assert len(await engine.dispatch_many([Tick({"n": n}) for n in range(3)])) == 3
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_url, REDIS_JOB_PREFIX=prefix)
    env.pop("JOB_ENGINE", None)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "aiojobs_redis", "work", "--import", "support.dashjobs"),
            *("--queue", QUEUE),
            *("--metrics-port", str(port), "--log-level", "WARNING"),
        ],
        cwd=TESTS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient() as http:

            async def all_done() -> bool:
                try:
                    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                except httpx.TransportError:
                    return False
                samples = scrape(text)
                succeeded = "aiojobs_redis_jobs_succeeded_total"
                return value(samples, succeeded, queue=QUEUE, job="dashjobs.Tick") == 3

            await eventually(all_done, timeout=20, what="the CLI worker's metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


async def test_an_aborted_run_is_counted_aborted(engine: RedisEngine, metrics: PrometheusMetrics) -> None:
    started = anyio.Event()

    class Aborted(Job):
        name = "prometheus_metrics.Aborted"
        queue = QUEUE

        async def handle(self) -> None:
            started.set()
            await anyio.sleep(3600)

    job_id = await Aborted().dispatch({})
    async with running_worker(engine, [QUEUE], metrics=metrics, abort_check=0.05) as worker:
        await started.wait()
        assert await engine.abort(job_id) is True
        await eventually(lambda: worker.counters.aborted == 1, what="the run to be cancelled")
    labels = {"queue": QUEUE, "job": "prometheus_metrics.Aborted"}
    assert metrics.registry.get_sample_value("aiojobs_redis_jobs_aborted_total", labels) == 1
    assert metrics.registry.get_sample_value("aiojobs_redis_jobs_lost_total", labels) == 0
