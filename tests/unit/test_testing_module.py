"""aiojobs_redis.testing as users see it: the README's example, run as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from aiojobs_redis import Job, use_engine
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_blocks(section: str) -> list[str]:
    text = README.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


@pytest.mark.slow
def test_the_readme_example_passes_under_pytest_with_the_plugin(tmp_path: Path) -> None:
    conftest, example = readme_blocks("Testing your code")[:2]  # the runnable pair
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_signup.py").write_text(example)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "anyio",
            "-W",
            "error",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # as bare as a user's project
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout


class Remind(Job):
    queue = "reminders"

    async def handle(self) -> None:
        return None


async def test_dispatch_is_recorded_with_its_payload_queue_and_delay() -> None:
    engine = FakeEngine()
    with use_engine(engine):
        job_id = await Remind().dispatch({"user": 7}, delay="+1 day")
    (seen,) = engine.dispatched
    assert (seen.id, seen.job, seen.queue, seen.payload, seen.delay_ms) == (
        job_id,
        Remind,
        "reminders",
        {"user": 7},
        86_400_000,
    )
    assert engine.jobs[job_id].state == "delayed"


async def test_run_due_runs_only_what_the_clock_says_is_due() -> None:
    clock = FakeClock()
    engine = FakeEngine(clock)
    with use_engine(engine):
        await Remind().dispatch({"user": 7}, delay="+1 day")
    assert await engine.run_due() == 0
    clock.advance(86_399)
    assert await engine.run_due() == 0
    clock.advance(1)
    assert await engine.run_due() == 1
    assert engine.in_state("done")[0].payload == b'{"user":7}'


async def test_the_clock_wakes_sleepers_in_order_and_only_when_due() -> None:
    clock = FakeClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper, "late", 2)
            tg.start_soon(sleeper, "early", 1)
            await clock.wait_for_timer(2)
            await clock.wait_for_timer(1)
            assert clock.pending() == [1, 2]
            clock.advance(0.5)
            assert clock.pending() == [0.5, 1.5]
            clock.advance(1.5)
    assert sorted(woke) == ["early", "late"] and clock.pending() == []


async def test_move_on_after_cancels_at_its_deadline_and_forgets_its_timer() -> None:
    clock = FakeClock()
    with clock.move_on_after(3) as scope:
        assert clock.pending() == [3]
        clock.advance(3)
        await anyio.sleep_forever()
    assert scope.cancelled_caught and clock.pending() == []
    with clock.move_on_after(3):
        pass
    assert clock.pending() == []


def test_the_fake_clock_also_drives_a_redis_engine_s_time() -> None:
    clock = FakeClock(start_ms=1_000)
    clock.advance(2.5)
    assert clock() == 3_500 and clock.monotonic() == 3.5


async def test_an_unavailable_engine_raises_what_redis_would() -> None:
    from aiojobs_redis import EngineUnavailable

    engine = FakeEngine()
    engine.unavailable = True
    with pytest.raises(EngineUnavailable):
        await engine.promote(["default"])
