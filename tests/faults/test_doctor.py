"""`aiojobs-redis doctor`: each deployment problem is found on a server that has it, and not on
one that does not. Private redis-servers are started with the configuration under test.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.certs import ConfiguredServer
from support.redis_server import free_port

from aiojobs_redis import RedisEngine, Settings, doctor, topology
from aiojobs_redis.doctor import (
    Finding,
    check_clock,
    check_server,
    check_transport,
    diagnose,
    merge_node_findings,
)

pytestmark = pytest.mark.anyio

GOOD = ("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction")
StartServer = Callable[..., ConfiguredServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    servers: list[ConfiguredServer] = []

    def start(*args: str, password: str | None = None) -> ConfiguredServer:
        server = ConfiguredServer(tmp_path / f"redis-{len(servers)}", *args, password=password)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@asynccontextmanager
async def open_engine(url: str) -> AsyncIterator[RedisEngine]:
    async with RedisEngine(Settings(url=url, prefix="doctor:", socket_timeout=2)) as engine:
        yield engine


def codes(findings: list[Finding], *severities: str) -> set[tuple[str, str]]:
    return {(f.severity, f.code) for f in findings if not severities or f.severity in severities}


def problems(findings: list[Finding]) -> set[tuple[str, str]]:
    return codes(findings, "warning", "error")


# -- against real servers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(GOOD, set(), id="good"),
        pytest.param(
            ("--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"),
            {("error", "eviction")},
            id="allkeys-lru",
        ),
        pytest.param(
            ("--appendonly", "yes", "--maxmemory-policy", "volatile-ttl"),
            {("warning", "eviction")},
            id="volatile-ttl",
        ),
        pytest.param(("--appendonly", "no"), {("error", "persistence")}, id="aof-off"),
        pytest.param(
            ("--appendonly", "yes", "--appendfsync", "no"), {("warning", "persistence")}, id="fsync-no"
        ),
        pytest.param(
            ("--appendonly", "no", "--maxmemory-policy", "allkeys-random"),
            {("error", "persistence"), ("error", "eviction")},
            id="both",
        ),
    ],
)
async def test_configuration_problems_are_found_and_only_those(
    start_server: StartServer, args: tuple[str, ...], expected: set[tuple[str, str]]
) -> None:
    server = start_server(*args)
    async with open_engine(server.url) as engine:
        findings = await diagnose(engine)
    assert problems(findings) == expected, doctor.format_findings(findings)
    assert ("info", "version") in codes(findings)
    assert ("info", "transport") in codes(findings)  # plain TCP, but to this machine


async def test_without_snapshots_either_a_restart_loses_every_job(start_server: StartServer) -> None:
    server = start_server("--appendonly", "no")  # and --save '' (no RDB snapshots)
    async with open_engine(server.url) as engine:
        [finding] = [f for f in await diagnose(engine) if f.code == "persistence"]
        assert "RDB snapshots (save '')" in finding.message, finding
        assert "a Redis restart loses every job," in finding.message
        assert "snapshot," not in finding.message and "since" not in finding.message
        await engine.redis.config_set("save", "3600 1")
        [finding] = [f for f in await diagnose(engine) if f.code == "persistence"]
        assert "loses every job written since the last snapshot" in finding.message, finding


async def test_a_problem_disappears_once_fixed(start_server: StartServer) -> None:
    server = start_server("--appendonly", "no", "--maxmemory-policy", "allkeys-lru")
    async with open_engine(server.url) as engine:
        assert problems(await diagnose(engine)) == {("error", "persistence"), ("error", "eviction")}
        await engine.redis.config_set("maxmemory-policy", "noeviction")
        assert problems(await diagnose(engine)) == {("error", "persistence")}
        await engine.redis.config_set("appendonly", "yes")
        assert problems(await diagnose(engine)) == set()


async def test_a_cluster_node_behind_a_single_server_url_is_an_error(start_server: StartServer) -> None:
    """Spoken to as one server, a Cluster node answers MOVED for other nodes' queues."""
    server = start_server(*GOOD, "--cluster-enabled", "yes")
    async with open_engine(server.url) as engine:
        findings = await diagnose(engine)
    assert problems(findings) == {("error", "cluster")}
    text = doctor.format_findings(findings)
    assert "URL names a single server" in text and "redis+cluster://" in text
    assert "not supported" not in text


async def test_a_replica_is_an_error(start_server: StartServer) -> None:
    primary = start_server(*GOOD)
    replica = start_server(*GOOD, "--replicaof", "127.0.0.1", str(primary.port))
    async with open_engine(replica.url) as engine:
        findings = await diagnose(engine)
    assert problems(findings) == {("error", "replica")}


async def test_config_refused_like_managed_redis_is_reported_not_raised(start_server: StartServer) -> None:
    """CONFIG renamed away (as managed services do): what INFO tells is still judged."""
    server = start_server("--appendonly", "no", "--rename-command", "CONFIG", "")
    async with open_engine(server.url) as engine:
        findings = await diagnose(engine)
    assert ("info", "config-refused") in codes(findings)
    assert ("error", "persistence") in codes(findings)  # from INFO's aof_enabled
    assert problems(findings) == {("error", "persistence")}  # maxmemory_policy from INFO


async def test_config_and_info_refused_by_an_acl_is_reported_not_raised(start_server: StartServer) -> None:
    server = start_server(*GOOD)
    admin = Redis.from_url(server.url)
    await admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "probe", "on", ">pw", "-@all", "+ping", "+time"
    )
    await admin.aclose()
    async with open_engine(f"redis://probe:pw@127.0.0.1:{server.port}") as engine:
        findings = await diagnose(engine)
    assert {("info", "info-refused"), ("info", "config-refused")} <= codes(findings)
    assert problems(findings) == set()
    text = doctor.format_findings(findings)
    assert "NOPERM" in text or "permission" in text
    assert "could not be read" in text


# -- the clock ---------------------------------------------------------------------------------


def skewed_clock(offset: float) -> float:
    return time.time() + offset


async def test_clock_skew_beyond_a_second_is_a_warning(start_server: StartServer) -> None:
    server = start_server(*GOOD)
    async with open_engine(server.url) as engine:
        for offset, expected in ((0.0, None), (0.5, None), (-0.5, None), (5.0, "ahead of"), (-5.0, "behind")):
            findings = await diagnose(engine, local_clock=partial(skewed_clock, offset))
            clock = [f for f in findings if f.code == "clock"]
            if expected is None:
                assert [f.severity for f in clock] == ["ok"], offset
            else:
                assert len(clock) == 1 and clock[0].severity == "warning"
                assert f"5.0 s {expected} Redis's" in clock[0].message


async def test_clock_check_allows_for_the_round_trip(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow TIME call is not taken for skew: the host's time is taken half-way through."""
    server = start_server(*GOOD)
    monkeypatch.setattr(doctor, "CLOCK_SAMPLES", 1)
    async with open_engine(server.url) as engine:
        real_time = engine.redis.time

        async def slow_time() -> Any:
            time.sleep(1.3)  # blocks the loop on purpose: Redis reads its clock 1.3 s late
            return await real_time()

        monkeypatch.setattr(engine.redis, "time", slow_time)
        findings = await diagnose(engine)
    assert [f.severity for f in findings if f.code == "clock"] == ["ok"]


def test_clock_comparison() -> None:
    (finding,) = check_clock(100.0, 101.5, 0.6)  # 1.5 s apart, but could be 0.9
    assert finding == Finding("ok", "clock", "this host's clock and Redis's agree within 1 s")
    (finding,) = check_clock(100.0, 101.5, 0.4)
    assert finding.severity == "warning" and "1.5 s ahead of" in finding.message
    (finding,) = check_clock(100.0, 98.0, 0.0)
    assert "2.0 s behind" in finding.message


# -- pure checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "severity", "words"),
    [
        ("redis://127.0.0.1:6379", "info", "this machine"),
        ("redis://localhost:6379/2", "info", "this machine"),
        ("redis://[::1]:6379", "info", "this machine"),
        ("unix:///run/redis.sock", "info", "Unix socket"),
        ("redis://:pw@10.1.2.3:6379", "warning", "use a rediss:// URL"),
        ("redis://redis.internal:6379", "warning", "unencrypted"),
        ("rediss://redis.internal:6379", "info", "certificate verification"),
        ("rediss://redis.internal:6379?ssl_ca_certs=/ca.pem", "info", "certificate verification"),
        ("rediss://redis.internal:6379?ssl_cert_reqs=none", "warning", "verification is off"),
        ("rediss://redis.internal:6379?ssl_check_hostname=false", "warning", "host name checking is off"),
        ("redis+cluster://127.0.0.1:7000,localhost:7001", "info", "127.0.0.1, localhost (this machine)"),
        ("redis+sentinel://127.0.0.1:26379,[::1]:26380/mymaster", "info", "this machine"),
        ("redis+cluster://:pw@127.0.0.1:7000,10.0.0.5:7000", "warning", "use a rediss+cluster:// URL"),
        ("redis+cluster://127.0.0.1:7000,10.0.0.5:7000", "warning", "10.0.0.5 not this machine"),
        ("redis+sentinel://:pw@sentinel.internal:26379/mymaster", "warning", "rediss+sentinel://"),
        ("rediss+cluster://:pw@10.0.0.5:7000", "info", "TLS to the Cluster nodes at 10.0.0.5"),
        ("rediss+sentinel://10.0.0.5:26379/mymaster", "info", "certificate verification"),
    ],
)
def test_transport(url: str, severity: str, words: str) -> None:
    (finding,) = check_transport(url)
    assert finding.code == "transport" and finding.severity == severity
    assert words in finding.message
    assert "pw" not in finding.message
    # Plain or TLS as the scheme says, whatever the topology.
    assert finding.message.startswith("TLS") == url.startswith("rediss")


def test_transport_judges_the_settings_topology_and_the_discovered_hosts() -> None:
    """cluster=True with a redis:// URL is a plain Cluster; nodes found at run time count too."""
    settings = Settings(url="redis://10.0.0.5:7000,10.0.0.6:7000", cluster=True)
    (finding,) = check_transport(settings.url, topology.of(settings))
    assert finding.severity == "warning" and "Cluster nodes" in finding.message
    assert "use a rediss:// URL" in finding.message

    (finding,) = check_transport("redis+cluster://127.0.0.1:7000", discovered=["127.0.0.1", "10.1.1.1"])
    assert finding.severity == "warning" and "10.1.1.1 not this machine" in finding.message
    (finding,) = check_transport("redis+sentinel://127.0.0.1:26379/m", discovered=["127.0.0.1"])
    assert finding.severity == "info" and "the sentinels and the primary" in finding.message


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"redis_version": "5.0.14"}, ("error", "version")),
        ({"redis_version": "6.0.20"}, ("warning", "version")),
        ({"redis_version": "6.2.0"}, ("info", "version")),
        ({"redis_version": "7.2.4", "valkey_version": "9.0.1"}, ("info", "version")),
        ({"redis_version": "7.0.15", "cluster_enabled": 1}, ("error", "cluster")),
        ({"redis_version": "7.0.15", "role": "slave"}, ("error", "replica")),
    ],
)
def test_server_checks(info: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in codes(check_server(info))


def test_a_cluster_node_is_no_finding_when_spoken_to_as_one() -> None:
    info = {"redis_version": "7.0.15", "cluster_enabled": 1, "role": "master"}
    assert ("error", "cluster") in codes(check_server(info))
    assert codes(check_server(info, cluster=True)) == {("info", "version")}


def test_node_findings_are_merged_and_named() -> None:
    version = Finding("info", "version", "Redis 7.0.15")
    lru = Finding("error", "eviction", "maxmemory-policy is allkeys-lru: ...")
    aof = Finding("error", "persistence", "AOF is off ...")
    merged = merge_node_findings({"a:1": [version, lru], "b:2": [version, lru, aof], "c:3": [version]})
    assert [str(f) for f in merged] == [
        "INFO    version on every primary: Redis 7.0.15",
        "ERROR   eviction on a:1, b:2: maxmemory-policy is allkeys-lru: ...",
        "ERROR   persistence on b:2: AOF is off ...",
    ]
    assert [str(f) for f in merge_node_findings({"a:1": [version]})] == [
        "INFO    version on a:1: Redis 7.0.15"
    ]


def test_valkey_is_named() -> None:
    (finding,) = check_server({"redis_version": "7.2.4", "valkey_version": "9.0.1"})
    assert finding.message == "Valkey 9.0.1"


def test_format_and_exit_code() -> None:
    findings = [Finding("error", "eviction", "fix it"), Finding("info", "version", "Redis 7.0.15")]
    assert doctor.format_findings(findings).splitlines() == [
        "ERROR   eviction: fix it",
        "INFO    version: Redis 7.0.15",
    ]
    assert doctor.format_findings([]) == "no findings"
    assert doctor.exit_code(findings, strict=False) == 1  # an error fails
    assert doctor.exit_code(findings, strict=True) == 1
    assert doctor.exit_code(findings[1:], strict=True) == 0
    warned = [Finding("warning", "clock", "..."), Finding("ok", "eviction", "maxmemory-policy noeviction")]
    assert doctor.exit_code(warned, strict=False) == 0  # a warning fails only with --strict
    assert doctor.exit_code(warned, strict=True) == 1
    assert str(warned[1]) == "OK      eviction: maxmemory-policy noeviction"
    assert [f.is_problem for f in warned] == [True, False]


# -- the worker's start-up check ---------------------------------------------------------------


async def test_check_on_start_logs_each_finding_once_at_its_own_level(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server("--appendonly", "no", "--maxmemory-policy", "volatile-lru")
    caplog.set_level(logging.INFO, logger="aiojobs_redis.doctor")
    async with open_engine(server.url) as engine:
        await doctor.check_on_start(engine)
    by_level = {
        level: [r.getMessage() for r in caplog.records if r.levelno == level]
        for level in (logging.ERROR, logging.WARNING, logging.INFO)
    }
    [error] = by_level[logging.ERROR]
    assert error.startswith("persistence: AOF is off"), error
    [warning] = by_level[logging.WARNING]
    assert warning.startswith("eviction: maxmemory-policy is volatile-lru"), warning
    assert any(m.startswith("version: ") for m in by_level[logging.INFO])
    assert any(m.startswith("clock: ") for m in by_level[logging.INFO])  # a check that passed
    logged = [r.getMessage() for r in caplog.records]
    assert not any(word in m for m in logged for word in ("ERROR", "WARNING", "INFO ")), logged


async def test_check_on_start_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    engine = RedisEngine(Settings(url=f"redis://127.0.0.1:{free_port()}", prefix="doctor:", socket_timeout=1))
    try:
        await doctor.check_on_start(engine)  # nothing listens there
    finally:
        await engine.aclose()
    assert any("deployment checks skipped" in r.getMessage() for r in caplog.records)


# -- the command line --------------------------------------------------------------------------


def run_doctor(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "JOB_ENGINE")}
    return subprocess.run(
        [sys.executable, "-m", "aiojobs_redis", "doctor", "--url", url, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_cli_exit_codes(start_server: StartServer) -> None:
    good = start_server(*GOOD)
    bad = start_server("--appendonly", "no", "--maxmemory-policy", "allkeys-lru")

    result = run_doctor(good.url, "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "INFO    version:" in result.stdout and "ERROR" not in result.stdout
    for passed in (
        "OK      eviction: maxmemory-policy noeviction",
        "OK      persistence: AOF is on, appendfsync everysec",
        "OK      clock: ",
    ):
        assert passed in result.stdout, result.stdout

    result = run_doctor(bad.url)
    assert result.returncode == 1, result.stderr  # an ERROR fails without --strict
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ERROR   ") and lines[1].startswith("ERROR   ")
    assert {line.split(":")[0].split()[-1] for line in lines[:2]} == {"eviction", "persistence"}

    result = run_doctor(bad.url, "--strict")
    assert result.returncode == 1
    assert "maxmemory-policy is allkeys-lru" in result.stdout

    result = run_doctor(f"redis://127.0.0.1:{free_port()}", "--strict")  # nothing listens
    assert result.returncode == 1 and "Redis unavailable" in result.stderr


@pytest.mark.slow
def test_cli_never_prints_the_password(start_server: StartServer) -> None:
    server = start_server("--appendonly", "no", password="DOCTORSECRET")
    result = run_doctor(server.url, "--strict", "--log-level", "DEBUG")
    assert result.returncode == 1, result.stderr
    assert "persistence" in result.stdout
    assert "DOCTORSECRET" not in result.stdout + result.stderr
