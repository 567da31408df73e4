"""SEC: TLS, a least-privilege ACL user, names refused before I/O, stored data that is only
ever data, and secrets that never reach logs or reprs.

Every test runs against private redis-servers on loopback (TLS ones with certificates made by
`openssl` in a temporary directory).
"""

from __future__ import annotations

import os
import pickletools
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError
from support.certs import Certs, ConfiguredServer, TLSUnsupported, make_certs, openssl_available
from support.engine_calls import claim_from
from support.redis_server import free_port

from aiojobs_redis import (
    ConfigurationError,
    EngineError,
    EngineUnavailable,
    InvalidJobId,
    InvalidQueueName,
    Job,
    RedisEngine,
    RedisTLSError,
    Settings,
    Worker,
    acl,
    use_engine,
)
from aiojobs_redis.doctor import diagnose

pytestmark = pytest.mark.anyio

Q = "sec"
Q_LOW = "sec-low"

# Every command the engine sends, outside its Lua scripts and inside them (ACL rules apply to
# both): aiojobs_redis.acl, the README's line (tests/faults/test_acl_line.py checks both).
ENGINE_COMMANDS = tuple(acl.COMMANDS)


def acl_rules(password: str, prefix: str, commands: Sequence[str] = ENGINE_COMMANDS) -> list[str]:
    """The rules of ACL SETUSER for a user that may run the engine under `prefix` and no more."""
    return ["on", f">{password}", "resetkeys", f"~{prefix}*", "resetchannels", "-@all"] + [
        f"+{c}" for c in commands
    ]


# -- servers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredServer]:
    with ConfiguredServer(tmp_path_factory.mktemp("redis")) as started:
        yield started


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if not openssl_available():
        pytest.skip("openssl is not installed")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[ConfiguredServer]:
    # Also listening on 127.0.0.2, an address the server's certificate does not name.
    args = ("--bind", "127.0.0.1", "127.0.0.2")
    with tls_or_skip(ConfiguredServer(tmp_path_factory.mktemp("redis-tls"), *args, certs=certs)) as started:
        yield started


def tls_or_skip(server: ConfiguredServer) -> ConfiguredServer:
    """Start a TLS server, or skip the test when the binary has no TLS."""
    try:
        server.start()
    except TLSUnsupported as exc:
        pytest.skip(str(exc))
    return server


@pytest.fixture
async def admin(server: ConfiguredServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()


@asynccontextmanager
async def opened(url: str, prefix: str, **settings: Any) -> AsyncIterator[RedisEngine]:
    settings.setdefault("socket_timeout", 2)
    async with RedisEngine(Settings(url=url, prefix=prefix, **settings)) as engine:
        yield engine


# -- jobs for the in-process flows -------------------------------------------------------------

ran: list[Any] = []


class SecJob(Job):
    queue = Q

    async def handle(self) -> None:
        ran.append(self.payload)


class Flaky(Job):
    queue = Q
    attempts = 2
    retry_after = 0.05

    async def handle(self) -> None:
        if self.attempt == 1:
            raise RuntimeError("the first attempt fails")
        ran.append(self.payload)


class AlwaysFails(Job):
    queue = Q_LOW
    attempts = 2
    retry_after = 0.05

    async def handle(self) -> None:
        raise RuntimeError("this job always fails")


async def full_flow(engine: RedisEngine, admin: Redis) -> None:
    """Every engine operation a deployment uses: dispatch, every transition, the failed set,
    stats, the wake list, quarantine of a malformed record, and a real worker's run."""
    ran.clear()
    prefix = engine.settings.prefix
    with use_engine(engine):
        ids = await SecJob.dispatch_many([{"i": i} for i in range(6)])
        await SecJob().dispatch({"delayed": True}, delay=0.05)

    claim = await claim_from(engine, Q, 6, worker_id="w1", request_id="r1", lease_ms=1_000)
    jobs = claim.jobs
    assert [j.id for j in jobs] == ids
    assert await engine.renew(Q, [(j.id, j.token) for j in jobs[:5]], 1_000) == []
    assert await engine.ack(jobs[0])
    assert await engine.retry(jobs[1], 0, {"reason": "error"})
    assert await engine.fail(jobs[2], {"reason": "error"})
    assert await engine.release(jobs[3])
    assert await engine.fail(jobs[4], {"reason": "error"})
    await anyio.sleep(1.05)  # jobs[5] was not renewed: its lease lapses
    assert (await engine.reap(Q, max_stalls=3)).requeued == [jobs[5].id]
    assert (await engine.promote([Q]))[0] == 1
    assert await engine.wait_for_work([Q], 0.1)

    # A record of the wrong type where a job should be is moved aside (RENAME) on claim.
    await admin.set(f"{prefix}{{{Q}}}:j:wrongtype", "not a hash")
    await admin.lpush(f"{prefix}{{{Q}}}:queue", "wrongtype")
    claim = await claim_from(engine, Q, 100, worker_id="w1", request_id="r2", lease_ms=300)
    assert ("wrongtype", "wrong_type") in [(q.job_id, q.reason) for q in claim.quarantined]
    assert len(claim.jobs) == 4  # retried, released, reaped, promoted
    for job in claim.jobs:
        assert await engine.ack(job)

    assert [(s.ready, s.delayed, s.running, s.failed) for s in await engine.stats(Q)] == [(0, 0, 0, 3)]
    assert Q in await engine.known_queues()
    info = await engine.get_job(Q, jobs[2].id)
    assert info is not None and info.state == "failed"
    assert len(await engine.failed_list(Q)) == 3
    assert len(await engine.failed_list()) == 3
    assert await engine.failed_retry([jobs[2].id]) == 1
    assert await engine.failed_forget([jobs[4].id]) == 1
    assert await engine.failed_flush(Q) == 1
    assert await engine.failed_retry(None, queue=Q) == 0

    with use_engine(engine):
        await Flaky().dispatch({"flaky": True})
        await AlwaysFails().dispatch({"fails": True})
    worker = Worker(engine, [Q, Q_LOW], lease=1, reap_interval=0.2, concurrency=4, idle_wait=0.2)
    counters = worker.counters
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            while counters.succeeded + counters.failed < 3:  # the requeued job, Flaky, AlwaysFails
                await anyio.sleep(0.02)
            worker.stop()
    assert (counters.succeeded, counters.retried, counters.failed) == (2, 2, 1)
    assert {"i": 2} in ran and {"flaky": True} in ran
    assert [(s.ready, s.delayed, s.running, s.failed) for s in await engine.stats()] == [
        (0, 0, 0, 0),
        (0, 0, 0, 1),
    ]


async def command(client: Redis, *args: Any) -> Any:
    """A raw command (ACL, and the ones the ACL user must be refused)."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


async def delete_keys(admin: Redis, prefix: str) -> None:
    async for key in admin.scan_iter(match=f"{prefix}*", count=1000):
        await admin.delete(key)


# -- TLS ---------------------------------------------------------------------------------------


async def test_tls_with_the_right_ca_runs_jobs(
    tls_server: ConfiguredServer, certs: Certs, prefix: str
) -> None:
    url = f"{tls_server.url}?ssl_ca_certs={certs.ca_cert}"
    async with opened(url, prefix) as engine:
        with use_engine(engine):
            job_id = await SecJob().dispatch({"over": "tls"})
        assert await engine.wait_for_work([Q], 0.1)  # the blocking connection is TLS too
        claim = await claim_from(engine, Q, 10, worker_id="w", request_id="1", lease_ms=5000)
        assert [j.id for j in claim.jobs] == [job_id]
        assert await engine.ack(claim.jobs[0])
        findings = await diagnose(engine)
        assert [f.message for f in findings if f.code == "transport"] == [
            "TLS to 127.0.0.1 with certificate verification"
        ]


async def test_tls_with_a_wrong_ca_is_refused(
    tls_server: ConfiguredServer, certs: Certs, prefix: str
) -> None:
    with pytest.raises(RedisTLSError, match=r"did not verify \(.*certificate.*ssl_ca_certs=") as refused:
        async with opened(f"{tls_server.url}?ssl_ca_certs={certs.wrong_ca_cert}", prefix):
            pass
    # A configuration error: code that retries while Redis is unavailable must not retry this.
    assert not isinstance(refused.value, EngineUnavailable | ConnectionError)


async def test_tls_verifies_certificates_by_default(tls_server: ConfiguredServer, prefix: str) -> None:
    """No CA given: the system's CAs do not know the test CA, so the server is refused."""
    with pytest.raises(RedisTLSError, match="did not verify"):
        async with opened(tls_server.url, prefix):
            pass


async def test_tls_checks_the_host_name(tls_server: ConfiguredServer, certs: Certs, prefix: str) -> None:
    """The certificate names 127.0.0.1 and localhost; the same server at 127.0.0.2 is refused."""
    url = f"rediss://127.0.0.2:{tls_server.port}?ssl_ca_certs={certs.ca_cert}"
    with pytest.raises(RedisTLSError, match=r"did not verify \(.*mismatch"):
        async with opened(url, prefix):
            pass


async def test_tls_verification_can_only_be_turned_off_explicitly(
    tls_server: ConfiguredServer, prefix: str
) -> None:
    async with opened(f"{tls_server.url}?ssl_cert_reqs=none", prefix) as engine:
        findings = await diagnose(engine)
    (transport,) = [f for f in findings if f.code == "transport"]
    assert transport.severity == "warning" and "verification is off" in transport.message


async def test_tls_client_certificates(tmp_path: Path, certs: Certs, prefix: str) -> None:
    """A server that requires client certificates accepts ours and refuses a client without."""
    with tls_or_skip(ConfiguredServer(tmp_path / "mtls", "--tls-auth-clients", "yes", certs=certs)) as mtls:
        base = f"{mtls.url}?ssl_ca_certs={certs.ca_cert}"
        with pytest.raises(EngineUnavailable, match=r"(?i)certificate.required|reset by peer|EOF|closed"):
            async with opened(base, prefix):
                pass
        url = f"{base}&ssl_certfile={certs.client_cert}&ssl_keyfile={certs.client_key}"
        async with opened(url, prefix) as engine:
            with use_engine(engine):
                await SecJob().dispatch({"over": "mtls"})
            assert (await engine.stats(Q))[0].ready == 1


# -- ACL ---------------------------------------------------------------------------------------


async def test_full_flow_as_the_default_user(server: ConfiguredServer, admin: Redis, prefix: str) -> None:
    """The reference run of the flow the ACL test repeats under a restricted user."""
    try:
        async with opened(server.url, prefix) as engine:
            await full_flow(engine, admin)
    finally:
        await delete_keys(admin, prefix)


async def test_full_flow_under_a_least_privilege_acl_user(
    server: ConfiguredServer, admin: Redis, prefix: str
) -> None:
    user = f"jobs-{prefix.rstrip(':')}"
    await command(admin, "ACL", "SETUSER", user, *acl_rules("pw", prefix))
    url = f"redis://{user}:pw@127.0.0.1:{server.port}"
    try:
        await admin.script_flush()  # so that the user loads the scripts itself
        async with opened(url, prefix) as engine:
            await full_flow(engine, admin)
            await admin.script_flush()  # as after a restart or failover: the scripts reload
            with use_engine(engine):
                await SecJob().dispatch({"after": "flush"})
    except NoPermissionError as exc:
        pytest.fail(f"the ACL user was refused: {exc}")
    except EngineError as exc:
        if "NOPERM" in str(exc) or "permission" in str(exc):
            pytest.fail(f"the ACL user was refused: {exc}")
        raise
    finally:
        await command(admin, "ACL", "DELUSER", user)
        await delete_keys(admin, prefix)


async def test_the_acl_user_cannot_reach_beyond_its_prefix(
    server: ConfiguredServer, admin: Redis, prefix: str
) -> None:
    user = f"jobs-{prefix.rstrip(':')}"
    await command(admin, "ACL", "SETUSER", user, *acl_rules("pw", prefix))
    url = f"redis://{user}:pw@127.0.0.1:{server.port}"
    other = f"other-{prefix}"
    await admin.set(f"{other}secret", "s")
    client = Redis.from_url(url)
    try:
        for refused in (
            ("GET", f"{other}secret"),
            ("SET", f"{other}x", "1"),
            ("DEL", f"{other}secret"),
            ("ZADD", f"{other}{{q}}:ready", "0", "id"),
            ("HGETALL", "jobs:{default}:j:x"),  # the default prefix of another deployment
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("KEYS", "*"),
            ("SCAN", "0"),
            ("CONFIG", "GET", "requirepass"),
            ("ACL", "LIST"),
            ("EVAL", "return redis.call('GET', KEYS[1])", "1", f"{other}secret"),
            ("SCRIPT", "FLUSH"),
            ("SHUTDOWN",),
            ("MONITOR",),
            ("SUBSCRIBE", "x"),
        ):
            with pytest.raises(NoPermissionError):
                await command(client, *refused)
        # A script the user may load still cannot touch other keys, declared or not.
        for script, keys in (
            ("return redis.call('GET', KEYS[1])", [f"{other}secret"]),
            (f"return redis.call('GET', '{other}secret')", []),
        ):
            sha = await client.script_load(script)
            with pytest.raises(ResponseError, match=r"NOPERM|can't access|permission"):
                await client.evalsha(sha, len(keys), *keys)
        # An engine of this user under another prefix gets a clear error, and writes nothing.
        async with opened(url, other) as engine:
            with use_engine(engine), pytest.raises(EngineError, match=r"NOPERM|permission"):
                await SecJob().dispatch({"x": 1})
        assert await admin.keys(f"{other}*") == [f"{other}secret".encode()]
    finally:
        await client.aclose()
        await command(admin, "ACL", "DELUSER", user)
        await admin.delete(f"{other}secret")


# -- names refused before any I/O --------------------------------------------------------------

BAD_NAMES: list[Any] = [
    "a:b",
    "*",
    "a*",
    "?",
    "[ab]",
    "{x}",
    "x}",
    "{",
    "a b",
    " ",
    "",
    "tab\t",
    "line\n",
    "cr\r",
    "nul\x00",
    "esc\x1b[31m",
    "del\x7f",
    "x" * 65,
    "x" * 10_000,
    "é",
    "ｑ",  # noqa: RUF001 - a fullwidth letter on purpose
    "a/b",
    "a\\b",
    "a'b",
    'a"b',
    123,
    b"bytes",
]
BAD_IDS: list[Any] = [*BAD_NAMES, "a.b", None]  # (a queue of None means every queue)


def queue_calls(engine: RedisEngine, name: Any) -> list[Callable[[], Awaitable[Any]]]:
    """Every engine operation that takes a queue name, given `name`."""
    job = SecJob({"x": 1})
    job.__dict__["queue"] = name  # set on the instance, where no class check sees it
    return [
        partial(engine.dispatch, job),
        partial(engine.dispatch_many, [job]),
        partial(engine.stats, name),
        partial(engine.failed_list, name),
        partial(engine.failed_retry, ["abc"], queue=name),
        partial(engine.failed_retry, None, queue=name),
        partial(engine.failed_forget, ["abc"], queue=name),
        partial(engine.failed_flush, name),
        partial(engine.get_job, name, "abc"),
        partial(claim_from, engine, name, 1, worker_id="w", request_id="1", lease_ms=1000),
        partial(engine.claim_many, [(Q, 1, "1"), (name, 1, "2")], worker_id="w", lease_ms=1000),
        partial(engine.ready_counts, [Q, name]),
        partial(engine.renew, name, [("abc", "t")], 1000),
        partial(engine.promote, [Q, name]),
        partial(engine.reap, name, max_stalls=1),
        partial(engine.wait_for_work, [Q, name], 0.1),
    ]


def id_calls(engine: RedisEngine, job_id: Any) -> list[Callable[[], Awaitable[Any]]]:
    """Every engine operation that takes a job id, given `job_id`."""
    return [
        partial(engine.get_job, Q, job_id),
        partial(engine.failed_retry, [job_id]),
        partial(engine.failed_retry, ["abc", job_id], queue=Q),
        partial(engine.failed_forget, [job_id]),
    ]


async def refused_calls(engine: RedisEngine) -> int:
    """Call every operation with each bad queue name and job id; return how many were refused."""
    refused = 0
    for name in BAD_NAMES:
        for call in queue_calls(engine, name):
            with pytest.raises(InvalidQueueName):
                await call()
            refused += 1
        with pytest.raises(InvalidQueueName):
            Worker(engine, [Q, name])
        with pytest.raises(InvalidQueueName):
            type("BadQueue", (Job,), {"queue": name, "__module__": __name__})
    for job_id in BAD_IDS:
        for call in id_calls(engine, job_id):
            with pytest.raises(InvalidJobId):
                await call()
            refused += 1
    for prefix in ("{x}:", "a b:", "*:", "p\n", "x" * 65, "?:", "[a]:"):
        with pytest.raises(ConfigurationError):
            Settings(prefix=prefix)
    return refused


async def test_bad_names_are_refused_before_any_io(
    server: ConfiguredServer, admin: Redis, prefix: str
) -> None:
    await admin.config_resetstat()
    before = await admin.info("stats")
    engine = RedisEngine(Settings(url=server.url, prefix=prefix))  # not opened: no PING
    try:
        refused = await refused_calls(engine)
    finally:
        await engine.aclose()
    after = await admin.info("stats")
    commands = await admin.info("commandstats")
    assert refused == len(BAD_NAMES) * 16 + len(BAD_IDS) * 4
    assert after["total_connections_received"] == before["total_connections_received"]
    assert set(commands) <= {"cmdstat_info", "cmdstat_config|resetstat"}, commands


async def test_bad_names_are_refused_with_nothing_listening(prefix: str) -> None:
    """The same calls against a port where nothing listens: refused at once, never 'unavailable'."""
    engine = RedisEngine(Settings(url=f"redis://127.0.0.1:{free_port()}", prefix=prefix, socket_timeout=1))
    try:
        with anyio.fail_after(5):
            await refused_calls(engine)
    finally:
        await engine.aclose()


async def test_registering_a_bad_queue_is_refused_before_io(
    server: ConfiguredServer, admin: Redis, prefix: str
) -> None:
    engine = RedisEngine(Settings(url=server.url, prefix=prefix))
    try:
        for name in ("a:b", "{x}", "*", "x" * 65):
            with pytest.raises(InvalidQueueName):
                await engine.register_queues([name])
    finally:
        await engine.aclose()
    assert await admin.smembers(f"{prefix}queues") == set()


async def test_a_bad_name_in_the_queue_set_does_not_break_inspection(
    server: ConfiguredServer, admin: Redis, prefix: str
) -> None:
    """The set of queue names is data too: a bad member written into it is skipped."""
    await admin.sadd(f"{prefix}queues", Q, "a:b", "{x}")
    try:
        async with opened(server.url, prefix) as engine:
            assert [s.queue for s in await engine.stats()] == [Q]
            assert await engine.failed_list() == []
            assert await engine.failed_flush() == 0
    finally:
        await delete_keys(admin, prefix)


async def test_a_bad_queue_fails_alone_and_never_reports_a_false_success(
    server: ConfiguredServer, admin: Redis, prefix: str
) -> None:
    """Concurrent dispatches share a round trip: a bad one among them must not make a good one
    fail, nor itself be reported as stored."""
    results: dict[str, Any] = {}

    async def dispatch(key: str, job: Job) -> None:
        try:
            results[key] = await job.dispatch()
        except Exception as exc:
            results[key] = exc

    good = SecJob({"good": True})
    bad = SecJob({"bad": True})
    bad.__dict__["queue"] = "a:b"
    try:
        async with opened(server.url, prefix) as engine:
            with use_engine(engine):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(dispatch, "good", good)  # the batch's leader
                    tg.start_soon(dispatch, "bad", bad)  # joins the same batch
            assert isinstance(results["bad"], InvalidQueueName), results
            assert isinstance(results["good"], str), results
            assert await engine.get_job(Q, results["good"]) is not None
    finally:
        await delete_keys(admin, prefix)


# -- stored data is data -----------------------------------------------------------------------

SENTINEL = '''
"""Imported only if something imports a module because stored data names it."""
from pathlib import Path

Path(__file__).with_name("IMPORTED").write_text("sentinel_evil was imported")


def system(*args: object) -> None:
    Path(__file__).with_name("CALLED").write_text(repr(args))


class Boom:
    def __init__(self, *args: object) -> None:
        system(*args)
'''

SAFE_JOBS = '''
"""The only jobs the worker knows."""
import sys
from pathlib import Path

import orjson

from aiojobs_redis import Job


class Echo(Job):
    name = "safejobs.Echo"
    queue = "sec"

    async def handle(self) -> None:
        with open(Path(__file__).with_name("echo.jsonl"), "ab") as f:
            f.write(orjson.dumps(self.payload) + b"\\n")


class Probe(Job):
    name = "safejobs.Probe"
    queue = "sec"

    async def handle(self) -> None:
        loaded = sorted(m for m in sys.modules if m.startswith("sentinel"))
        Path(__file__).with_name("probe.json").write_bytes(orjson.dumps(loaded))
'''


NO_GRACE = ["--unknown-job-grace", "0"]  # an unknown name fails at once, not after an hour

# Pickles written by hand: pickle.dumps would import the module to check the reference.
# Protocol 2: PROTO, GLOBAL sentinel_evil.system, MARK, BINUNICODE "unpickled", TUPLE, REDUCE.
PICKLED_CALL = b"\x80\x02csentinel_evil\nsystem\n(X\x09\x00\x00\x00unpickledtR."
PICKLED_CALL_TEXT = b"csentinel_evil\nsystem\n(S'x'\ntR."  # protocol 0: valid UTF-8


def test_the_pickles_are_real() -> None:
    """What the worker is fed would import sentinel_evil and call it, if anything unpickled it."""
    for data in (PICKLED_CALL, PICKLED_CALL_TEXT):
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
        assert ops[0 if data is PICKLED_CALL_TEXT else 1] == ("GLOBAL", "sentinel_evil system")
        assert ("REDUCE", None) in ops


EVIL_NAMES: list[bytes] = [
    b"sentinel_evil",
    b"sentinel_evil.system",
    b"sentinel_evil.Boom",
    b"sentinel_evil:Boom",
    b"os.system",
    b"posix.system",
    b"builtins.eval",
    b"builtins.exec",
    b"builtins.__import__",
    b"subprocess.Popen",
    b"importlib.import_module",
    b"__import__('sentinel_evil')",
    b"safejobs.Echo.__init__.__globals__",
    PICKLED_CALL_TEXT,
    b"cos\nsystem\n(S'touch PWNED'\ntR.",
]


async def write_raw_job(
    admin: Redis, prefix: str, job_id: str, name: bytes, payload: bytes, at_ms: int, attempts: str = "1"
) -> None:
    """A job record written straight into Redis, as an attacker with write access would."""
    base = f"{prefix}{{{Q}}}"
    await admin.hset(
        f"{base}:j:{job_id}",
        mapping={"n": name, "q": Q, "p": payload, "m": attempts, "s": "ready", "c": at_ms, "d": at_ms},
    )
    await admin.rpush(f"{base}:queue", job_id)


# The probe job runs last; an unknown name fails at once.
ONE_BY_ONE = ("--burst", "--concurrency", "1", "--lease", "5", *NO_GRACE)


def worker_env(url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOB_ENGINE", "PYTHONPATH")}
    env.update(REDIS_URL=url, REDIS_JOB_PREFIX=prefix)
    return env


@pytest.mark.slow
async def test_stored_names_and_pickles_are_only_data(
    server: ConfiguredServer, admin: Redis, prefix: str, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "sentinel_evil.py").write_text(SENTINEL)
    (app / "safejobs.py").write_text(SAFE_JOBS)
    seconds, micros = await admin.time()
    start_ms = seconds * 1000 + micros // 1000 - 60_000

    expected: dict[str, set[str]] = {}
    for i, name in enumerate(EVIL_NAMES):
        await write_raw_job(admin, prefix, f"name{i}", name, b'{"x": 1}', start_ms + i)
        expected[f"name{i}"] = {"unknown_job"}
    await write_raw_job(admin, prefix, "binpickle", PICKLED_CALL, b"{}", start_ms + 100)
    expected["binpickle"] = {"malformed"}  # not UTF-8: never even looked up
    await write_raw_job(admin, prefix, "pickledpayload", b"safejobs.Echo", PICKLED_CALL, start_ms + 101)
    await write_raw_job(
        admin, prefix, "textpayload", b"safejobs.Echo", b"cos\nsystem\n(S'touch PWNED'\ntR.", start_ms + 102
    )
    expected["pickledpayload"] = expected["textpayload"] = {"malformed"}
    lookalike = {"py/object": "sentinel_evil.Boom", "__reduce__": ["os.system", ["touch PWNED"]]}
    await write_raw_job(
        admin, prefix, "jsonlookalike", b"safejobs.Echo", orjson.dumps(lookalike), start_ms + 103
    )
    await write_raw_job(admin, prefix, "probe", b"safejobs.Probe", b"{}", start_ms + 200)

    result = subprocess.run(
        [sys.executable, "-m", "aiojobs_redis", "work", "--import", "safejobs", "--queue", Q, *ONE_BY_ONE],
        cwd=app,
        env=worker_env(server.url, prefix),
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert not (app / "IMPORTED").exists()
        assert not (app / "CALLED").exists()
        assert not (app / "PWNED").exists()
        assert orjson.loads((app / "probe.json").read_bytes()) == []  # nothing named sentinel*
        assert orjson.loads((app / "echo.jsonl").read_bytes()) == lookalike  # a dict, nothing more
        async with opened(server.url, prefix) as engine:
            failed = {job.id: job for job in await engine.failed_list(Q, limit=1000)}
        assert set(failed) == set(expected)
        for job_id, reasons in expected.items():
            error = failed[job_id].error or {}
            assert error.get("reason") in reasons, (job_id, error)
            assert failed[job_id].attempts == 0  # refused, not retried
        assert result.stderr.count("cannot run") == len(expected)
    finally:
        await delete_keys(admin, prefix)


# -- secrets stay out of logs and reprs --------------------------------------------------------

SECRET_PASSWORD = "SECRETPW"
SECRET_PAYLOAD = "SECRETPAYLOAD"

SECRET_JOBS = '''
"""Jobs whose payloads hold a secret; no exception message includes it."""
from aiojobs_redis import Job, PermanentFailure, RetryLater
import anyio


class Succeeds(Job):
    name = "secretjobs.Succeeds"
    queue = "sec"

    async def handle(self) -> None:
        assert "SECRET" in str(self.payload)


class FailsTwice(Job):
    name = "secretjobs.FailsTwice"
    queue = "sec"
    attempts = 2
    retry_after = 0.2

    async def handle(self) -> None:
        raise RuntimeError("the card service refused the request")


class Declined(Job):
    name = "secretjobs.Declined"
    queue = "sec"

    async def handle(self) -> None:
        raise PermanentFailure("card declined")


class Later(Job):
    name = "secretjobs.Later"
    queue = "sec"
    attempts = 2

    async def handle(self) -> None:
        if self.attempt == 1:
            raise RetryLater(0.2, "not yet")


class Slow(Job):
    name = "secretjobs.Slow"
    queue = "sec"
    timeout = 0.05

    async def handle(self) -> None:
        await anyio.sleep(5)
'''


def secret_payload(i: int) -> dict[str, Any]:
    return {"card": f"{SECRET_PAYLOAD}-{i}", "nested": [{"token": SECRET_PAYLOAD}], SECRET_PAYLOAD: i}


def run_cli(args: Sequence[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "aiojobs_redis", *args, "--log-level", "DEBUG"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return f"$ {' '.join(args[:2])} -> exit {result.returncode}\n{result.stdout}{result.stderr}"


@pytest.mark.slow
async def test_secrets_never_reach_the_logs(tmp_path: Path, prefix: str) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "secretjobs.py").write_text(SECRET_JOBS)
    with ConfiguredServer(tmp_path / "redis", password=SECRET_PASSWORD) as locked:
        url = locked.url
        assert SECRET_PASSWORD in url
        env = worker_env(url, prefix)
        admin = Redis.from_url(url)
        try:
            seconds, micros = await admin.time()
            now_ms = seconds * 1000 + micros // 1000
            names = ["Succeeds", "FailsTwice", "Declined", "Later", "Slow"]
            for i, name in enumerate(names):
                attempts = "2" if name in ("FailsTwice", "Later") else "1"
                await write_raw_job(
                    admin, prefix, f"known{i}", f"secretjobs.{name}".encode(),
                    orjson.dumps(secret_payload(i)), now_ms, attempts=attempts,
                )  # fmt: skip
            await write_raw_job(
                admin, prefix, "unknown", b"secretjobs.Gone", orjson.dumps(secret_payload(9)), now_ms
            )
            await write_raw_job(
                admin, prefix, "badjson", b"secretjobs.Succeeds", b"{" + SECRET_PAYLOAD.encode(), now_ms
            )

            work = ["work", "--import", "secretjobs", "--queue", Q, "--max-time", "1.5", "--lease", "2"]
            work += NO_GRACE
            outputs = [run_cli(work, app, env)]
            wrong = url.replace(SECRET_PASSWORD, SECRET_PASSWORD + "WRONG")
            with ThreadPoolExecutor(4) as pool:  # independent read-only commands, at once
                outputs += pool.map(
                    partial(run_cli, cwd=app, env=env),
                    [
                        ["failed", "list", "--queue", Q],
                        ["failed", "list", "--json"],
                        ["stats", "--json"],
                        ["doctor"],
                        # A wrong password, nothing listening, a bad URL: errors name the
                        # server, never the secret.
                        ["stats", "--url", wrong],
                        ["stats", "--url", f"redis://:{SECRET_PASSWORD}@127.0.0.1:1"],
                        ["stats", "--url", f"http://:{SECRET_PASSWORD}@127.0.0.1:1"],
                    ],
                )
            outputs += [
                run_cli(["failed", "retry", "--all"], app, env),
                run_cli(["failed", "flush"], app, env),
            ]
        finally:
            await delete_keys(admin, prefix)
            await admin.aclose()
    text = "\n".join(outputs)
    assert outputs[0].startswith("$ work --import -> exit 0\n"), outputs[0][-3000:]
    # The runs did what they should, so the absence of secrets means something.
    assert "secretjobs.FailsTwice attempt 1/2 failed" in text
    assert re.search(r"job secretjobs\.FailsTwice \w+ failed for good after attempt 2/2 \(error\)", text)
    assert "RuntimeError: the card service refused the request\nTraceback" in text
    assert re.search(r"secretjobs\.Later done in [0-9.]+ ms \(attempt 2/2\)", text), text[-3000:]
    assert "card declined" in text and "ran past its timeout" in text
    assert "cannot run (unknown_job)" in text and "cannot run (malformed)" in text
    assert "WRONGPASS" in text or "invalid username-password" in text
    assert "unsupported Redis URL" in text
    assert text.count(SECRET_PASSWORD) == 0, _around(text, SECRET_PASSWORD)
    assert text.count(SECRET_PAYLOAD) == 0, _around(text, SECRET_PAYLOAD)


def _around(text: str, secret: str) -> str:
    return "\n".join(text[max(0, m.start() - 200) : m.end() + 100] for m in re.finditer(secret, text))


async def test_reprs_hold_no_secrets(server: ConfiguredServer, admin: Redis, prefix: str) -> None:
    url = f"redis://user:{SECRET_PASSWORD}@127.0.0.1:{server.port}"
    settings = Settings(url=url, prefix=prefix)
    engine = RedisEngine(settings)
    job = SecJob(secret_payload(1))
    worker = Worker(engine, [Q])
    reprs = [repr(settings), str(settings), repr(engine), repr(job), str(job), repr(worker)]
    reprs += [repr(engine.redis), repr(engine.redis.connection_pool)]
    await engine.aclose()
    try:
        async with opened(server.url, prefix) as live:
            with use_engine(live):
                job_id = await job.dispatch()
            (claimed,) = (await claim_from(live, Q, 1, worker_id="w", request_id="1", lease_ms=5000)).jobs
            info = await live.get_job(Q, job_id, with_payload=True)
            assert info is not None and info.payload == secret_payload(1)
            reprs += [repr(job), repr(info), repr(claimed)]
    finally:
        await delete_keys(admin, prefix)
    for text in reprs:
        assert SECRET_PASSWORD not in text, text
        assert SECRET_PAYLOAD not in text, text


def test_a_password_given_as_a_url_parameter_is_redacted_too() -> None:
    """redis-py accepts ?password=... (and ?ssl_password=...) in the URL; both are secrets."""
    for url in (
        f"redis://127.0.0.1:6379/0?password={SECRET_PASSWORD}",
        f"rediss://127.0.0.1:6379?ssl_ca_certs=/ca.pem&ssl_password={SECRET_PASSWORD}",
    ):
        settings = Settings(url=url)
        assert SECRET_PASSWORD not in repr(settings)
        assert SECRET_PASSWORD not in repr(RedisEngine(settings))
