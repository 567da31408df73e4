"""One rule for "this machine": the doctor's transport check and the dashboard's listener agree."""

from __future__ import annotations

import pytest

from aiojobs_redis.doctor import check_transport
from aiojobs_redis.topology import is_loopback

LOOPBACK = ["localhost", "LOCALHOST", "127.0.0.1", "127.4.5.6", "::1"]
# Names the resolver decides: *.localhost should map to loopback (RFC 6761), but nothing
# guarantees it, and the dashboard would listen without authentication on the strength of it.
NOT_LOOPBACK = ["app.localhost", "localhost.evil.example", "0.0.0.0", "::", "10.0.0.5", "redis", ""]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize("host", [*LOOPBACK, *NOT_LOOPBACK])
def test_doctor_and_dashboard_use_the_same_rule(host: str) -> None:
    pytest.importorskip("uvicorn")
    from aiojobs_redis.dashboard import server

    assert server.is_loopback is is_loopback
    if not host or ":" in host:
        return  # not a URL host as written
    [finding] = check_transport(f"redis://{host}:6379")
    assert (finding.severity == "info") is is_loopback(host), finding


def test_the_dashboard_wants_authentication_beyond_loopback() -> None:
    pytest.importorskip("uvicorn")
    from aiojobs_redis import RedisEngine, Settings
    from aiojobs_redis.dashboard.server import DashboardServer
    from aiojobs_redis.errors import ConfigurationError

    engine = RedisEngine(Settings(url="redis://127.0.0.1:1"))
    with pytest.raises(ConfigurationError, match="open to the network"):
        DashboardServer(engine, host="app.localhost")
    DashboardServer(engine, host="localhost")  # no authentication needed
