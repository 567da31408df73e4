"""`aiojobs-redis doctor` and the worker's start-up check on a real Cluster and behind Sentinel.

On the session's 3-primary, 3-replica Cluster and its Sentinel deployment. A test that
changes a node's configuration puts it back before it ends (the deployments are shared).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import pytest
from support.deployments import ClusterDeployment, Node, SentinelDeployment

from aiojobs_redis import RedisEngine, Settings, doctor
from aiojobs_redis.doctor import Finding, diagnose

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


def problems(findings: list[Finding]) -> set[tuple[str, str, str | None]]:
    return {(f.severity, f.code, f.node) for f in findings if f.is_problem}


def name(node: Node) -> str:
    return f"127.0.0.1:{node.port}"


@contextmanager
def configured(node: Node, **options: str) -> Iterator[None]:
    """CONFIG SET on `node` for the duration, then back to what it was."""
    with node.client() as client:
        before = {key: client.config_get(key.replace("_", "-"))[key.replace("_", "-")] for key in options}
        for key, value in options.items():
            client.config_set(key.replace("_", "-"), value)
    try:
        yield
    finally:
        with node.client() as client:
            for key, value in before.items():
                client.config_set(key.replace("_", "-"), value)


def run_doctor(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "JOB_ENGINE")}
    return subprocess.run(
        [sys.executable, "-m", "aiojobs_redis", "doctor", "--url", url, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- Cluster -----------------------------------------------------------------------------------


async def test_a_healthy_cluster_is_described_and_every_primary_checked(
    redis_cluster: ClusterDeployment,
) -> None:
    async with RedisEngine(Settings(url=redis_cluster.url, prefix="doctor:")) as engine:
        findings = await diagnose(engine)
    text = doctor.format_findings(findings)
    assert problems(findings) == set(), text
    [deployment] = [f for f in findings if f.code == "cluster"]
    assert deployment.severity == "info"
    assert "3 primaries" in deployment.message and "3 replicas" in deployment.message
    assert all(name(node) in deployment.message for node in redis_cluster.primaries())
    assert "runs on one node" in deployment.message
    assert "not supported" not in text
    [version] = [f for f in findings if f.code == "version"]
    assert version.node == "every primary" and version.message.startswith("Redis 7")
    [transport] = [f for f in findings if f.code == "transport"]
    assert transport.severity == "info" and transport.message.startswith("plain TCP to the Cluster nodes")
    assert "this machine" in transport.message


async def test_the_cluster_setting_with_a_redis_url_is_the_same_deployment(
    redis_cluster: ClusterDeployment,
) -> None:
    first = redis_cluster.primaries()[0]
    settings = Settings(url=f"redis://127.0.0.1:{first.port}", cluster=True, prefix="doctor:")
    async with RedisEngine(settings) as engine:
        findings = await diagnose(engine)
    assert problems(findings) == set(), doctor.format_findings(findings)
    assert any(f.code == "cluster" and "3 primaries" in f.message for f in findings)


async def test_problems_are_reported_on_the_primaries_that_have_them(
    redis_cluster: ClusterDeployment, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third = redis_cluster.primaries()
    with (
        configured(first, maxmemory_policy="allkeys-lru"),
        configured(second, maxmemory_policy="allkeys-lru"),
        configured(third, appendonly="no"),
    ):
        async with RedisEngine(Settings(url=redis_cluster.url, prefix="doctor:")) as engine:
            findings = await diagnose(engine)
            caplog.set_level(logging.INFO, logger="aiojobs_redis.doctor")
            await doctor.check_on_start(engine)
        result = run_doctor(redis_cluster.url, "--strict")
    both = ", ".join(name(n) for n in sorted([first, second], key=lambda n: n.port))  # by address
    assert problems(findings) == {
        ("error", "eviction", both),
        ("error", "persistence", name(third)),
    }, doctor.format_findings(findings)
    # Each problem logged once, at its own level, without a second level in the message.
    logged = sorted((r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING)
    assert logged == sorted((f.severity.upper(), f.describe()) for f in findings if f.is_problem)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"ERROR   eviction on {both}: maxmemory-policy is allkeys-lru" in result.stdout
    assert any(line.startswith(f"ERROR   persistence on {name(third)}: AOF is off") for line in lines)
    assert any(line.startswith("INFO    cluster: Redis Cluster: 3 primaries") for line in lines)

    # Put back: the same command is clean again.
    result = run_doctor(redis_cluster.url, "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "WARNING" not in result.stdout


async def test_the_clock_is_checked_on_every_primary(redis_cluster: ClusterDeployment) -> None:
    async with RedisEngine(Settings(url=redis_cluster.url, prefix="doctor:")) as engine:
        findings = await diagnose(engine, local_clock=partial(lambda offset: time.time() + offset, 5.0))
    clock = [f for f in findings if f.code == "clock"]
    assert clock and all(f.severity == "warning" and "5.0 s ahead of" in f.message for f in clock)
    named: set[str] = set()
    for finding in clock:
        assert finding.node is not None
        named |= (
            {name(n) for n in redis_cluster.primaries()}
            if finding.node == "every primary"
            else set(finding.node.split(", "))
        )
    assert named == {name(n) for n in redis_cluster.primaries()}


# -- Sentinel ----------------------------------------------------------------------------------


async def test_sentinel_checks_the_current_primary_and_names_it(
    sentinel_deployment: SentinelDeployment,
) -> None:
    primary = f"127.0.0.1:{sentinel_deployment.current_primary_port()}"
    async with RedisEngine(Settings(url=sentinel_deployment.url, prefix="doctor:")) as engine:
        findings = await diagnose(engine)
    text = doctor.format_findings(findings)
    assert problems(findings) == set(), text
    [deployment] = [f for f in findings if f.code == "sentinel"]
    assert f"names {primary} as the primary of mymaster" in deployment.message
    assert "1 replica connected" in deployment.message and "3 sentinels" in deployment.message
    [version] = [f for f in findings if f.code == "version"]
    assert version.node == primary
    [transport] = [f for f in findings if f.code == "transport"]
    assert transport.severity == "info" and transport.message.startswith("plain TCP to the sentinels")
    assert "TLS" not in transport.message


async def test_a_problem_on_the_sentinel_primary_is_reported_there(
    sentinel_deployment: SentinelDeployment,
) -> None:
    port = sentinel_deployment.current_primary_port()
    [primary] = [n for n in sentinel_deployment.data_nodes if n.port == port]
    with configured(primary, maxmemory_policy="volatile-lru"):
        async with RedisEngine(Settings(url=sentinel_deployment.url, prefix="doctor:")) as engine:
            findings = await diagnose(engine)
        result = run_doctor(sentinel_deployment.url, "--strict")
    assert problems(findings) == {("warning", "eviction", name(primary))}
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"WARNING eviction on {name(primary)}: maxmemory-policy is volatile-lru" in result.stdout
    assert "INFO    sentinel: Sentinel (3 sentinels in the URL)" in result.stdout
    assert "TLS" not in result.stdout
