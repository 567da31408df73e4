"""Progress and kept results as the CLI (`aiojobs-redis job`) and the dashboard's job page show them."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import orjson
import pytest
from support.dashkit import dashboard
from support.resultapp import QUEUE, Sum

from aiojobs_redis import RedisEngine

pytestmark = pytest.mark.anyio


async def running_and_done(engine: RedisEngine) -> tuple[str, str]:
    """A running job that recorded progress, and a done one whose result is kept."""
    running_id = await Sum.dispatch({"numbers": [1]})
    done_id = await Sum.dispatch({"numbers": [2]})
    [claim] = await engine.claim_many([(QUEUE, 2, "1")], worker_id="w", lease_ms=60_000)
    running, done = claim.jobs
    assert await engine.set_progress(running, b'{"rows":10,"of":40}')
    assert await engine.ack(done, result=b'{"sum":"<b>2</b>"}', keep_ms=60_000)
    return running_id, done_id


def job_command(engine: RedisEngine, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REDIS_URL=engine.settings.url, REDIS_JOB_PREFIX=engine.settings.prefix)
    env.pop("JOB_ENGINE", None)
    return subprocess.run(
        [sys.executable, "-m", "aiojobs_redis", "job", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_job_command_shows_progress_and_a_kept_result(engine: RedisEngine) -> None:
    running_id, done_id = await running_and_done(engine)
    running = job_command(engine, running_id)
    done = job_command(engine, done_id, "--json")
    done_text = job_command(engine, done_id, "--queue", QUEUE)
    missing = job_command(engine, "nosuchjob")
    assert running.returncode == 0, running.stderr
    assert 'progress   {"rows":10,"of":40}' in running.stdout and "state      running" in running.stdout
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {
        "id": done_id,
        "queue": QUEUE,
        "state": "done",
        "result": {"sum": "<b>2</b>"},
    }
    assert 'result     {"sum":"<b>2</b>"}' in done_text.stdout
    assert missing.returncode == 1 and "no job with id nosuchjob" in missing.stderr


async def test_the_job_page_shows_progress_and_a_kept_result_only_with_payloads(engine: RedisEngine) -> None:
    running_id, done_id = await running_and_done(engine)
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        running = (await http.get("job", params={"queue": QUEUE, "id": running_id})).text
        hidden = (await http.get("job", params={"queue": QUEUE, "id": done_id})).text
    async with dashboard(engine, show_payloads=True) as url, httpx.AsyncClient(base_url=url) as http:
        shown = (await http.get("job", params={"queue": QUEUE, "id": done_id})).text
        api = (await http.get("api/job", params={"queue": QUEUE, "id": done_id})).json()
    assert "{&quot;rows&quot;:10,&quot;of&quot;:40}" in running
    assert "kept (shown with --show-payloads)" in hidden and "&lt;b&gt;2" not in hidden
    assert "{&quot;sum&quot;:&quot;&lt;b&gt;2&lt;/b&gt;&quot;}" in shown and "<b>2</b>" not in shown
    assert api["job"]["state"] == "done" and api["job"]["result"] == {"sum": "<b>2</b>"}
