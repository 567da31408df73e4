"""`make demo`'s program, run as a user would: on the Redis at REDIS_URL, and embedded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent.parent


def run_demo(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def check_summary(out: str) -> None:
    assert "Dispatched 1242 jobs" in out
    assert "1240" in out and "failed for good │ 2" in out
    assert "card reported" in out and "cannot refund 5000" in out


def test_demo_on_the_redis_at_redis_url(redis_url: str) -> None:
    out = run_demo(dict(os.environ, REDIS_URL=redis_url, COLUMNS="120"))
    check_summary(out)
    assert "Using the Redis at REDIS_URL" in out


def test_demo_starts_and_stops_an_embedded_server() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_JOB_PREFIX")}
    out = run_demo(dict(env, COLUMNS="120"))
    check_summary(out)
    assert "Started an embedded Valkey server" in out and "Stopped the embedded server" in out
