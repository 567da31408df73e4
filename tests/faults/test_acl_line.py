"""The README's least-privilege ACL line is complete: dispatch, a worker with telemetry (job
events, throughput, heartbeats), the failed-set commands, stats, the dashboard's reads and
the doctor all run under exactly that line, with no command refused, in a script or not.

The line is read from README.md (the one line starting `ACL SETUSER jobs `) and must be the
one aiojobs_redis.acl gives. Everything runs against a private redis-server on loopback.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis
from support.certs import ConfiguredServer

from aiojobs_redis import EngineError, Job, RedisEngine, Settings, Worker, acl, use_engine
from aiojobs_redis.doctor import diagnose
from aiojobs_redis.events import RedisTelemetry

pytestmark = pytest.mark.anyio

README = Path(__file__).resolve().parents[2] / "README.md"
Q = "acl"
PASSWORD = "acl-pw"
REFUSED_WORDS = ("NOPERM", "no permissions", "may not run", "can't run this command")


def readme_acl_line() -> str:
    found = [
        line.strip()
        for line in README.read_text().splitlines()
        if line.strip().startswith("ACL SETUSER jobs ")
    ]
    assert len(found) == 1, f"README.md should show one ACL SETUSER line, not {found}"
    return found[0]


def rules_of(line: str, prefix: str) -> list[str]:
    """The rules of an `ACL SETUSER jobs ...` line, for our password and prefix."""
    words = line.split()
    assert words[:3] == ["ACL", "SETUSER", "jobs"], line
    swap = {">PASSWORD": f">{PASSWORD}", "~jobs:*": f"~{prefix}*"}
    return [swap.get(word, word) for word in words[3:]]


def test_the_readme_gives_the_acl_line_of_the_code() -> None:
    assert readme_acl_line() == acl.setuser_line()


def test_the_acl_line_names_each_command_once() -> None:
    line = acl.setuser_line()
    commands = [word for word in line.split() if word.startswith("+")]
    assert len(commands) == len(set(commands)) == len(acl.COMMANDS)
    assert not set(acl.OPTIONAL) & set(acl.COMMANDS)


# -- a private server and its users ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredServer]:
    with ConfiguredServer(tmp_path_factory.mktemp("acl-redis")) as started:
        yield started


@pytest.fixture
async def admin(server: ConfiguredServer, prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


UserFactory = Callable[[list[str]], Awaitable[str]]


@pytest.fixture
async def acl_user(admin: Redis) -> AsyncIterator[UserFactory]:
    """Makes a Redis user with the given rules (password PASSWORD); deleted after the test."""
    users: list[str] = []

    async def make(rules: list[str]) -> str:
        user = f"jobs-{uuid.uuid4().hex[:8]}"
        await admin.execute_command("ACL", "SETUSER", user, "reset", *rules)  # type: ignore[no-untyped-call]
        users.append(user)
        return user

    yield make
    for user in users:
        await admin.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]


def opened(server: ConfiguredServer, user: str, prefix: str) -> RedisEngine:
    url = f"redis://{user}:{PASSWORD}@127.0.0.1:{server.port}"
    return RedisEngine(Settings(url=url, prefix=prefix, dispatch_timeout=5))


# -- jobs --------------------------------------------------------------------------------------


class Ok(Job):
    queue = Q

    async def handle(self) -> None:
        pass


class Bad(Job):
    queue = Q
    attempts = 2
    retry_after = 0.05

    async def handle(self) -> None:
        raise RuntimeError("this job always fails")


async def run_worker(engine: RedisEngine, until: int, telemetry: RedisTelemetry) -> Worker:
    """A worker with telemetry until `until` jobs ended, then a few more heartbeats."""
    worker = Worker(
        engine,
        [Q],
        lease=2,
        reap_interval=0.1,
        idle_wait=0.2,
        promote_interval=0.1,
        telemetry=telemetry,
    )
    counters = worker.counters
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            while counters.succeeded + counters.failed < until:
                await anyio.sleep(0.02)
            await anyio.sleep(6 * telemetry.heartbeat_interval)
            seen = [w.id for w in await engine.alive_workers(await engine.redis_time_ms(max_age_ms=0))]
            assert worker.worker_id in seen
            worker.stop()
    return worker


def refusals(records: list[logging.LogRecord]) -> list[str]:
    """Log lines that say a command was refused, or that telemetry failed."""
    return [
        record.getMessage()
        for record in records
        if any(word in record.getMessage() for word in REFUSED_WORDS)
        or (record.name == "aiojobs_redis.events" and record.levelno >= logging.WARNING)
    ]


# -- the flow ----------------------------------------------------------------------------------


async def test_the_whole_flow_runs_under_the_readme_acl_line(
    server: ConfiguredServer,
    admin: Redis,
    acl_user: UserFactory,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiojobs_redis")
    user = await acl_user(rules_of(readme_acl_line(), prefix))
    await admin.script_flush()  # so that the user loads the scripts itself
    try:
        async with opened(server, user, prefix) as engine:
            with use_engine(engine):
                await Ok.dispatch_many([{"i": i} for i in range(5)])
                await Ok().dispatch({"later": True}, delay=0.1)
                bad = [await Bad().dispatch({"b": i}) for i in range(3)]
            telemetry = RedisTelemetry(flush_interval=0.05, heartbeat_interval=0.1)
            worker = await run_worker(engine, until=9, telemetry=telemetry)
            assert (worker.counters.succeeded, worker.counters.failed) == (6, 3)

            # The dashboard's reads: every run counted exactly once, every event recorded.
            now_ms = await engine.redis_time_ms(max_age_ms=0)
            throughput = (await engine.throughput([Q], now_ms))[Q]
            assert (sum(throughput.succeeded), sum(throughput.failed), sum(throughput.retried)) == (6, 3, 3)
            events = await engine.recent_events([Q], count=100)
            assert sorted(e.kind for e in events) == ["failed"] * 3 + ["retried"] * 3 + ["succeeded"] * 6
            assert await engine.running_jobs([Q]) == []

            # The failed set, stats and one job.
            assert {job.id for job in await engine.failed_list(Q)} == set(bad)
            assert {job.id for job in await engine.failed_list()} == set(bad)
            info = await engine.get_job(Q, bad[0])
            assert info is not None and info.state == "failed"
            assert await engine.failed_retry([bad[0]]) == 1
            assert await engine.get_job(Q, bad[0]) is not None  # waiting in the queue list
            assert await engine.failed_forget([bad[1]]) == 1
            assert await engine.failed_flush(Q) == 1
            assert await engine.failed_retry(None, queue=Q) == 0
            assert [(s.ready, s.delayed, s.running, s.failed) for s in await engine.stats()] == [(1, 0, 0, 0)]
            assert await engine.known_queues() == [Q]
            assert await engine.format_version() is not None

            # Abort: a waiting job (the script's LREM), and a worker's look for aborted runs.
            with use_engine(engine):
                doomed = await Ok().dispatch({"abort": True})
            assert await engine.abort(doomed, Q) is True
            assert await engine.aborted_runs(Q, [(doomed, "w:1")]) == []

            # The doctor: only the checks the README says need more (INFO, CONFIG GET) are skipped.
            findings = await diagnose(engine)
            skipped = {f.code for f in findings if "refused" in f.message}
            assert skipped <= {"info-refused", "config-refused"}, findings
            assert not [f for f in findings if f.code == "format-refused"], findings

            await admin.script_flush()  # as after a restart or failover: the scripts reload
            with use_engine(engine):
                await Ok().dispatch({"after": "flush"})
    except EngineError as exc:
        if any(word in str(exc) for word in REFUSED_WORDS):
            pytest.fail(f"the README's ACL user was refused: {exc}")
        raise
    assert not refusals(caplog.records), refusals(caplog.records)


# -- telemetry under a user that lacks a command -------------------------------------------------


def without(*commands: str) -> list[str]:
    return [f"+{c}" for c in acl.COMMANDS if c not in commands]


async def test_job_events_write_nothing_when_a_command_is_refused(
    server: ConfiguredServer, admin: Redis, acl_user: UserFactory, prefix: str
) -> None:
    """record_events adds counts: a call that fails half way would count twice when sent again."""
    user = await acl_user(["on", f">{PASSWORD}", f"~{prefix}*", *without("xadd")])
    async with opened(server, user, prefix) as engine:
        batch = {Q: (["2025:s", 3], [b'{"kind": "succeeded"}'])}
        for _ in range(2):  # the worker sends a failed flush again
            with pytest.raises(
                EngineError,
                match=r"NOPERM this user may not run XADD on .*: no job events or counts were recorded",
            ):
                await engine.record_events(batch, events_max=100)
        keys = engine.keys(Q)
        assert await admin.exists(keys.throughput, keys.events) == 0


async def test_telemetry_failures_are_logged_with_their_reason(
    server: ConfiguredServer, acl_user: UserFactory, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiojobs_redis.events")
    user = await acl_user(["on", f">{PASSWORD}", f"~{prefix}*", *without("xadd", "zremrangebyscore")])
    async with opened(server, user, prefix) as engine:
        with use_engine(engine):
            await Ok().dispatch({})
        telemetry = RedisTelemetry(flush_interval=0.05, heartbeat_interval=0.1)
        worker = Worker(engine, [Q], idle_wait=0.2, telemetry=telemetry)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                while worker.counters.succeeded < 1 or len(caplog.records) < 2:
                    await anyio.sleep(0.02)
                worker.stop()
    lines = [r.getMessage() for r in caplog.records]
    heartbeat = [line for line in lines if line.startswith("telemetry: heartbeat:")]
    events = [line for line in lines if line.startswith("telemetry: record job events:")]
    assert heartbeat and "zremrangebyscore" in heartbeat[0].lower() and "NOPERM" in heartbeat[0], lines
    assert events and "XADD" in events[0] and "NOPERM" in events[0], lines
    assert len(heartbeat) == len(events) == 1  # once a minute each, not once per try
