"""The examples, run as a user runs them: real processes on free loopback ports, real Redis.

Every process starts in the repository root with REDIS_JOB_PREFIX set to the test's own
prefix. The example handlers record what they did under that prefix (see examples/jobs.py),
so each assertion is about an effect a job really had.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from redis.asyncio import Redis
from support.redis_server import RedisServer
from support.wait import eventually

from aiojobs_redis import RedisEngine
from examples.jobs import (
    IssueRefund,
    NotifyWarehouse,
    ProcessPayment,
    SendReceipt,
    ledger_key,
)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(40)]

PACKAGE_ENV = ("JOB_ENGINE", "REDIS_URL", "REDIS_JOB_PREFIX", "REDIS_JOB_DB")
JOB_ID = re.compile(r"[0-9a-z]{18}")
FIVE_MINUTES_MS = 300_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def env(redis_url: str, prefix: str) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if k not in PACKAGE_ENV}
    values.update(REDIS_URL=redis_url, REDIS_JOB_PREFIX=prefix, PYTHONUNBUFFERED="1")
    return values


@dataclass
class Process:
    """A started example, its stdout and stderr going to `log`."""

    popen: subprocess.Popen[bytes]
    args: tuple[str, ...]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit code (the process must exit by itself within `timeout`)."""
        self.popen.send_signal(signal.SIGTERM)
        with anyio.fail_after(timeout):
            while self.popen.poll() is None:
                await anyio.sleep(0.05)
        return self.popen.returncode

    @contextmanager
    def explained(self) -> Iterator[None]:
        """On a failure inside the block, show what the process logged."""
        try:
            yield
        except BaseException as exc:
            exc.add_note(f"--- output of python {' '.join(self.args)}\n{self.output()}")
            raise


@pytest.fixture
def start(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start `python <args>` in the repository root; every process is killed at the end."""
    started: list[Process] = []

    def launch(*args: str) -> Process:
        log = tmp_path / f"process-{len(started)}.log"
        with log.open("wb") as sink:  # the child keeps its own copy of the descriptor
            popen = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=sink, stderr=sink)
        started.append(Process(popen, args, log))
        return started[-1]

    yield launch
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
        process.popen.wait(timeout=10)


async def wait_until_serving(base_url: str, path: str, app: Process) -> None:
    with anyio.fail_after(15):
        async with httpx.AsyncClient(base_url=base_url, timeout=2, trust_env=False) as client:
            while True:
                assert app.popen.poll() is None, "the app exited during start-up"
                try:
                    if (await client.get(path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)


@pytest.fixture
async def ledger(redis_url: str, prefix: str) -> AsyncIterator[Ledger]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield Ledger(client, prefix)
    await client.aclose()


class Ledger:
    """What the example handlers recorded under the test's prefix."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    async def receipts(self) -> int:
        return int(await self.client.get(ledger_key("receipts", self.prefix)) or 0)

    async def hash(self, name: str) -> dict[str, str]:
        found: dict[str, str] = await self.client.hgetall(ledger_key(name, self.prefix))  # type: ignore[assignment]
        return found


async def run_to_end(args: Sequence[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str, str]:
    with anyio.fail_after(timeout):
        done = await anyio.run_process([sys.executable, *args], cwd=ROOT, env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_fastapi_example_dispatches_and_a_cli_worker_sends_the_receipt(
    engine: RedisEngine,
    ledger: Ledger,
    env: dict[str, str],
    start: Callable[..., Process],
) -> None:
    port = free_port()
    app = start("-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", str(port))
    base_url = f"http://127.0.0.1:{port}"
    with app.explained():
        await wait_until_serving(base_url, "/openapi.json", app)
        async with httpx.AsyncClient(base_url=base_url, timeout=10, trust_env=False) as client:
            response = await client.post("/orders", json={"order_id": "o-1", "email": "ada@example.com"})
            assert response.status_code == 202, response.text
            job_id = response.json()["job"]
            assert (await client.post("/orders", json={"order_id": "o-2"})).status_code == 422
        assert JOB_ID.fullmatch(job_id)
        queued = await engine.get_job("default", job_id)
        assert queued is not None and (queued.name, queued.state) == ("shop.SendReceipt", "ready")
        assert await ledger.receipts() == 0, "nothing runs in the web process"

        code, _, err = await run_to_end(
            ["-m", "aiojobs_redis", "work", "--import", "examples.jobs", "--queue", "default", "--burst"], env
        )
        assert code == 0, err
        assert await ledger.receipts() == 1
        assert await ledger.hash("sent") == {"o-1": "ada@example.com"}
        done = await engine.get_job("default", job_id)
        assert done is None or done.state == "done"
        # uvicorn shuts down gracefully, then re-raises the signal it caught (older versions exit 0).
        assert await app.terminate() in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in app.output()


async def test_fastapi_example_answers_503_with_retry_after_when_redis_is_down(
    env: dict[str, str], start: Callable[..., Process], tmp_path: Path
) -> None:
    with RedisServer(tmp_path / "redis", aof=False) as server:
        env["REDIS_URL"] = server.url
        port = free_port()
        app = start("-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", str(port))
        base_url = f"http://127.0.0.1:{port}"
        order = {"order_id": "o-1", "email": "ada@example.com"}
        with app.explained():
            await wait_until_serving(base_url, "/openapi.json", app)
            async with httpx.AsyncClient(base_url=base_url, timeout=30, trust_env=False) as client:
                assert (await client.post("/orders", json=order)).status_code == 202
                server.kill()
                response = await client.post("/orders", json=order)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "5"
            assert response.json() == {"detail": "job queue unavailable, try again"}
            assert "Traceback" not in app.output()


async def test_aiohttp_example_runs_the_jobs_in_process_and_drains_on_sigterm(
    engine: RedisEngine,
    ledger: Ledger,
    start: Callable[..., Process],
) -> None:
    port = free_port()
    app = start("-m", "examples.aiohttp_app", "--port", str(port))
    base_url = f"http://127.0.0.1:{port}"
    with app.explained():
        await wait_until_serving(base_url, "/stats", app)
        async with httpx.AsyncClient(base_url=base_url, timeout=10, trust_env=False) as client:
            order = {"order_id": "o-7", "email": "grace@example.com", "items": ["teapot"]}
            response = await client.post("/orders", json=order)
            assert response.status_code == 202, response.text
            assert all(JOB_ID.fullmatch(response.json()[k]) for k in ("receipt_job", "shipping_job"))
            assert (await client.post("/orders", json={"email": "x"})).status_code == 400
            not_json = await client.post("/orders", content=b"garbage")
            assert not_json.status_code == 400, not_json.text
            assert "Traceback" not in app.output(), "a bad request is no server error"
            await SendReceipt().dispatch({"order_id": "o-8"})  # no email: fails for good

            await eventually(ledger.receipts)
            await eventually(lambda: ledger.hash("warehouse"))
            await eventually(lambda: engine.failed_list("default"))
            stats = {row["queue"]: row for row in (await client.get("/stats")).json()}
        assert await ledger.hash("sent") == {"o-7": "grace@example.com"}
        assert await ledger.hash("warehouse") == {"o-7": "1"}
        assert stats["default"] == {
            "queue": "default",
            "ready": 0,
            "delayed": 0,
            "running": 0,
            "failed": 1,
            "failed_dropped": 0,
            "paused": False,
            "waiting": 0,
        }
        assert await app.terminate() == 0
        assert re.search(r"worker \S+ stopped after [0-9.]+ s: .*\b2 succeeded", app.output()), "it drained"


async def test_worker_example_runs_every_kind_of_job_and_exits_0_on_sigterm(
    engine: RedisEngine,
    ledger: Ledger,
    start: Callable[..., Process],
) -> None:
    worker = start("-m", "examples.worker")
    with worker.explained():
        await SendReceipt().dispatch({"order_id": "o-1", "email": "ada@example.com"})
        await NotifyWarehouse().dispatch({"order_id": "o-1", "items": ["kettle"], "flaky_attempts": 2})
        await ProcessPayment().dispatch(
            {"payment": {"id": "p-1", "amount_cents": 900, "card": "4242"}}, delay="now"
        )
        stolen = await ProcessPayment().dispatch(
            {"payment": {"id": "p-2", "amount_cents": 500, "card": "stolen"}}, delay="now"
        )
        await IssueRefund().dispatch({"payment_id": "p-1", "amount_cents": 300, "charged_cents": 900})
        too_much = await IssueRefund().dispatch(
            {"payment_id": "p-1", "amount_cents": 1000, "charged_cents": 900}
        )

        await eventually(lambda: ledger.hash("warehouse"))  # after two retries, a second apart
        await eventually(ledger.receipts)
        assert await ledger.hash("warehouse") == {"o-1": "3"}, "succeeded on the third attempt"
        assert await ledger.hash("payments") == {"p-1": "900"}
        assert await ledger.hash("refunds") == {"p-1": "300"}
        failed = {job.id: job for job in await engine.failed_list("payments")}
        assert set(failed) == {stolen, too_much}
        for job in failed.values():
            assert job.attempts == 1 and job.max_attempts == 3, "a PermanentFailure uses no more attempts"
            assert job.error is not None and job.error["reason"] == "permanent"
        assert "card reported stolen" in str(failed[stolen].error)
        stats = {row.queue: row for row in await engine.stats()}
        assert all((row.ready, row.delayed, row.running) == (0, 0, 0) for row in stats.values())
        assert await worker.terminate() == 0


async def test_dispatch_payment_prints_an_id_and_the_payment_waits_five_minutes(
    engine: RedisEngine, env: dict[str, str]
) -> None:
    code, out, err = await run_to_end(["-m", "examples.dispatch_payment"], env)
    assert code == 0, err
    job_id = out.strip()
    assert JOB_ID.fullmatch(job_id), out
    info = await engine.get_job("payments", job_id, with_payload=True)
    assert info is not None
    assert (info.name, info.state, info.max_attempts) == ("shop.ProcessPayment", "delayed", 3)
    assert info.payload["payment"]["card"] == "4242"
    due = await engine.redis.zscore(engine.keys("payments").delayed, job_id)
    assert due is not None and info.created_ms is not None
    assert abs(due - info.created_ms - FIVE_MINUTES_MS) < 1000
    assert (await engine.stats("payments"))[0].delayed == 1


async def test_workflows_example_runs_a_chain_a_batch_and_a_join(env: dict[str, str]) -> None:
    code, out, err = await run_to_end(["-m", "examples.workflows"], env)
    assert code == 0, err
    lines = out.splitlines()
    assert "published thumb of https://example.com/cat.jpg (27000 bytes)" in lines
    assert "album: 5 of 6 resized, 1 failed" in lines
    assert "report for 2026-12-01 after both exports" in lines
    assert lines[-1] == "12 jobs done, 1 failed"
