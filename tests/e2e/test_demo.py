"""`make demo`'s program, run as a user would: on the Redis at REDIS_URL, and embedded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.server_process import answers, is_gone, server_pid
from support.wait import wait_until

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


def without_redis_settings() -> dict[str, str]:
    """The environment of a first `make demo`: no REDIS_URL, and output to a pipe of no set width."""
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_JOB_PREFIX", "COLUMNS")}


def test_demo_starts_and_stops_an_embedded_server() -> None:
    out = run_demo(without_redis_settings())
    check_summary(out)
    assert "Started an embedded Valkey server" in out and "Stopped the embedded server" in out


def test_demo_announces_its_failures_counts_honestly_and_says_what_to_try_next() -> None:
    out = run_demo(without_redis_settings())
    before_the_run = out.split("Dispatched", 1)[0]
    assert "Two jobs fail on purpose" in before_the_run and "ERROR lines below are expected" in before_the_run
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2
    assert any(line.endswith("PermanentFailure: card reported stolen") for line in errors), errors
    assert any(line.endswith("cannot refund 5000 of a 1002 cents charge") for line in errors), errors
    assert "jobs dispatched │ 1242" in out
    assert "jobs/s" not in out, "the demo waits on purpose: it is no benchmark"
    after_the_run = out.split("Stopped the embedded server", 1)[1]
    for command in ("aiojobs-redis server", "python -m examples.worker", "aiojobs-redis failed list"):
        assert command in after_the_run
    assert "pip install -e '.[examples]'" in after_the_run


def test_ctrl_c_stops_the_demo_and_its_server_without_a_traceback() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env=dict(without_redis_settings(), PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as demo:
        assert demo.stdout is not None
        try:
            seen = ""
            while "Dispatched" not in seen:  # the jobs run for 2 s at least: payments wait that long
                line = demo.stdout.readline()
                assert line, f"the demo ended early: {seen}"
                seen += line
            url = seen.split("embedded Valkey server at ", 1)[1].split()[0]
            pid = server_pid(url)
            demo.send_signal(signal.SIGINT)
            out, err = demo.communicate(timeout=30)
        finally:
            demo.kill()
    assert demo.returncode == 130, err
    assert "Traceback" not in err, err
    assert "Stopped the embedded server" in out and "Interrupted." in out
    try:
        wait_until(lambda: is_gone(pid), timeout=10, what="the embedded server to stop")
    finally:
        if not is_gone(pid):
            os.kill(pid, signal.SIGKILL)
    assert not answers(url)
