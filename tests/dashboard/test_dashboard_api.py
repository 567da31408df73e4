"""The dashboard over real HTTP: its JSON state, its page, its actions, auth and CSRF refusals."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from support.dashkit import dashboard, quick_telemetry, running_worker
from support.engine_calls import claim_from
from support.redis_server import free_port
from support.wait import eventually

from aiojobs_redis import Job, RedisEngine
from aiojobs_redis.cli import main
from aiojobs_redis.dashboard import create_app

pytestmark = pytest.mark.anyio

QUEUE = "board"
OTHER = "board-idle"


class Blocks(Job):
    queue = QUEUE
    gate: anyio.Event | None = None

    async def handle(self) -> None:
        assert Blocks.gate is not None
        await Blocks.gate.wait()


class Broken(Job):
    queue = QUEUE

    async def handle(self) -> None:
        raise ValueError(f"card declined <script>alert({self.payload.get('n', 0)})</script>")


class Waiting(Job):
    queue = OTHER

    async def handle(self) -> None:
        return None


def csrf_in(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert found is not None, "the page carries a CSRF token"
    return found.group(1)


async def make_failed(engine: RedisEngine, count: int) -> list[str]:
    """Failed jobs without running a worker: claim them and fail them directly."""
    ids = await engine.dispatch_many([Broken({"n": n, "card": "4111-SECRET"}) for n in range(count)])
    claim = await claim_from(engine, QUEUE, count, worker_id="w", request_id="r", lease_ms=10_000)
    for job in claim.jobs:
        assert await engine.fail(
            job, {"reason": "error", "type": "builtins.ValueError", "message": "<b>no</b>"}
        )
    return ids


async def failed_count(engine: RedisEngine) -> int:
    return (await engine.stats(QUEUE))[0].failed


async def test_the_state_shows_queues_failed_running_workers_and_events(engine: RedisEngine) -> None:
    Blocks.gate = anyio.Event()
    await Waiting.dispatch_many([{}, {}, {}])
    await Blocks().dispatch({}, delay="+1 hour")
    await Blocks().dispatch({}, delay="+1 hour")
    failed_id = await Broken().dispatch({"n": 1, "card": "4111-SECRET"})
    running_id = await Blocks().dispatch({})
    async with (
        running_worker(engine, [QUEUE], telemetry=quick_telemetry(record_starts=True)) as worker,
        dashboard(engine) as url,
        httpx.AsyncClient() as http,
    ):

        async def settled() -> bool:
            state = (await http.get(url + "api/state")).json()
            failures = sum(sum(q["throughput"]["failed"]) for q in state["queues"])
            return failures == 1 and any(j["run_ms"] is not None for j in state["running"])

        await eventually(settled, what="a failed job and a running job with its run time")
        response = await http.get(url + "api/state", params={"minutes": 120})
        page = await http.get(url)
        Blocks.gate.set()
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    state = response.json()
    counts = {q["queue"]: (q["ready"], q["delayed"], q["running"], q["failed"]) for q in state["queues"]}
    assert counts == {QUEUE: (0, 2, 1, 1), OTHER: (3, 0, 0, 0)}
    board = next(q for q in state["queues"] if q["queue"] == QUEUE)
    assert len(board["throughput"]["failed"]) == 120 and sum(board["throughput"]["failed"]) == 1
    [failed] = state["failed"]
    assert failed["id"] == failed_id and failed["name"] == "Broken"
    assert (failed["attempts"], failed["max_attempts"]) == (1, 1)
    assert failed["error"]["type"] == "builtins.ValueError"
    assert "raise ValueError" in failed["error"]["traceback"]
    assert "payload" not in failed and "SECRET" not in response.text, "no payloads unless enabled"
    [running] = state["running"]
    assert running["id"] == running_id and running["worker"] == worker.worker_id
    assert running["attempt"] == 1 and 0 <= running["run_ms"] < 10_000
    [alive] = state["workers"]
    assert alive["id"] == worker.worker_id and alive["queues"] == [QUEUE]
    kinds = {(e["job_id"], e["kind"]) for e in state["events"]}
    assert {(failed_id, "failed"), (running_id, "started")} <= kinds

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert f'data-queue="{QUEUE}"' in html and f'data-id="{failed_id}"' in html
    assert '<td class="num delayed">2</td>' in html and '<td class="num ready">3</td>' in html
    assert worker.worker_id in html
    assert "SECRET" not in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html, "escaped"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("aiojobs_csrf=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert csrf_in(html) in cookie


async def test_payloads_are_shown_only_when_enabled(engine: RedisEngine) -> None:
    await make_failed(engine, 1)
    async with dashboard(engine, show_payloads=True) as url, httpx.AsyncClient() as http:
        state = (await http.get(url + "api/state")).json()
        html = (await http.get(url)).text
    assert state["failed"][0]["payload"] == {"n": 0, "card": "4111-SECRET"}
    assert "4111-SECRET" in html and "<summary>payload</summary>" in html


async def test_retry_forget_and_retry_all(engine: RedisEngine) -> None:
    ids = await make_failed(engine, 4)
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        csrf = csrf_in((await http.get("")).text)
        headers = {"accept": "application/json", "x-csrf-token": csrf}
        retried = await http.post("api/failed/retry", data={"queue": QUEUE, "id": ids[0]}, headers=headers)
        assert retried.status_code == 200 and retried.json() == {"requeued": 1}
        assert (await engine.stats(QUEUE))[0].ready == 1
        job = await engine.get_job(QUEUE, ids[0])
        assert job is not None and job.state == "ready"

        forgot = await http.post("api/failed/forget", json={"queue": QUEUE, "id": ids[1]}, headers=headers)
        assert forgot.json() == {"forgotten": 1}
        assert await engine.get_job(QUEUE, ids[1]) is None

        # The form a browser without JavaScript submits: the token in a field, then back to the page.
        form = await http.post("api/failed/retry", data={"csrf": csrf, "queue": QUEUE, "id": ids[2]})
        assert form.status_code == 303 and form.headers["location"] == "/"

        everything = await http.post("api/failed/retry-all", data={"queue": QUEUE}, headers=headers)
        assert everything.json() == {"requeued": 1}
        gone = await http.post("api/failed/retry", data={"queue": QUEUE, "id": ids[3]}, headers=headers)
        assert gone.json() == {"requeued": 0}, "already retried"
    assert await failed_count(engine) == 0
    assert (await engine.stats(QUEUE))[0].ready == 3


async def test_state_changes_without_a_valid_csrf_token_are_refused(engine: RedisEngine) -> None:
    ids = await make_failed(engine, 1)
    target = {"queue": QUEUE, "id": ids[0]}
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        no_cookie = await http.post("api/failed/retry", data=target, headers={"x-csrf-token": "guess"})
        csrf = csrf_in((await http.get("")).text)
        attempts: dict[str, httpx.Response] = {
            "no cookie": no_cookie,
            "no token": await http.post("api/failed/retry", data=target),
            "wrong token": await http.post(
                "api/failed/retry", data=target, headers={"x-csrf-token": "x" * 43}
            ),
            "wrong field": await http.post("api/failed/forget", data={**target, "csrf": csrf[:-1]}),
            "other origin": await http.post(
                "api/failed/retry",
                data=target,
                headers={"x-csrf-token": csrf, "origin": "http://evil.example"},
            ),
            "opaque origin": await http.post(
                "api/failed/retry", data=target, headers={"x-csrf-token": csrf, "origin": "null"}
            ),
            "cross site": await http.post(
                "api/failed/retry-all",
                data={"queue": QUEUE},
                headers={"x-csrf-token": csrf, "sec-fetch-site": "cross-site"},
            ),
            "a GET": await http.get("api/failed/retry", params=target),
        }
        same_origin = await http.post(
            "api/failed/forget",
            data=target,
            headers={
                "x-csrf-token": csrf,
                "origin": url.rstrip("/"),
                "sec-fetch-site": "same-origin",
                "accept": "application/json",
            },
        )
    statuses = {reason: r.status_code for reason, r in attempts.items()}
    assert statuses == {reason: 405 if reason == "a GET" else 403 for reason in attempts}
    assert attempts["no token"].json() == {"error": "CSRF check failed: reload the page"}
    assert same_origin.json() == {"forgotten": 1}, "the real page's request passes"


async def test_a_token_protects_everything(engine: RedisEngine) -> None:
    token = "s3cret-token-for-tests"
    ids = await make_failed(engine, 1)
    async with dashboard(engine, token=token) as url, httpx.AsyncClient(base_url=url) as http:
        for path in ("", "api/state", "static/dashboard.js"):
            refused = await http.get(path)
            assert refused.status_code == 401 and "www-authenticate" not in refused.headers
        assert (await http.get("", headers={"authorization": "Bearer wrong-token-value"})).status_code == 401
        assert (await http.get("", params={"token": "wrong-token-value"})).status_code == 401
        assert (await http.get("api/state", headers={"authorization": f"Bearer {token}"})).status_code == 200

        login = await http.get("", params={"token": token, "minutes": "60"})
        assert login.status_code == 303 and login.headers["location"] == "/?minutes=60", (
            "the token leaves the URL"
        )
        session = login.headers["set-cookie"]
        assert "aiojobs_session=" in session and token not in session and "HttpOnly" in session
        assert (await http.get("api/state")).status_code == 200, "the session cookie lets the browser in"

        # An API client with the Bearer header needs no CSRF token (browsers never add that header).
        api = httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {token}"})
        async with api:
            retried = await api.post(
                "api/failed/retry",
                json={"queue": QUEUE, "id": ids[0]},
                headers={"accept": "application/json"},
            )
        assert retried.json() == {"requeued": 1}


async def test_basic_auth(engine: RedisEngine) -> None:
    await make_failed(engine, 1)
    good = "Basic " + base64.b64encode(b"ops:pa55word").decode()
    bad = "Basic " + base64.b64encode(b"ops:wrong").decode()
    async with dashboard(engine, basic_auth="ops:pa55word") as url, httpx.AsyncClient(base_url=url) as http:
        refused = await http.get("")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Basic realm="aiojobs-redis"')
        assert (await http.get("", headers={"authorization": bad})).status_code == 401
        assert (await http.get("", headers={"authorization": "Basic !!"})).status_code == 401
        assert (await http.get("", headers={"authorization": good})).status_code == 200
        no_csrf = await http.post(
            "api/failed/retry-all", data={"queue": QUEUE}, headers={"authorization": good}
        )
        assert no_csrf.status_code == 403, "basic auth is sent by browsers on their own: CSRF still applies"
    assert await failed_count(engine) == 1


async def test_read_only_and_bad_input(engine: RedisEngine) -> None:
    ids = await make_failed(engine, 1)
    async with dashboard(engine, read_only=True) as url, httpx.AsyncClient(base_url=url) as http:
        html = (await http.get("")).text
        assert 'class="retry"' not in html and "api/failed" not in html
        csrf = csrf_in(html)
        refused = await http.post("api/failed/retry", data={"queue": QUEUE, "id": ids[0], "csrf": csrf})
        assert refused.status_code == 403
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        headers = {"x-csrf-token": csrf_in((await http.get("")).text), "accept": "application/json"}
        for body in ({"queue": QUEUE, "id": "../etc"}, {"queue": "a b", "id": ids[0]}, {"queue": QUEUE}):
            assert (await http.post("api/failed/retry", data=body, headers=headers)).status_code == 400
        not_json = await http.post(
            "api/failed/retry", content=b"[1,", headers={**headers, "content-type": "application/json"}
        )
        assert not_json.status_code == 400
        huge = await http.post("api/failed/retry", content=b"x" * 100_000, headers=headers)
        assert huge.status_code == 400
        assert (await http.get("static/../app.py")).status_code == 404
    assert await failed_count(engine) == 1


async def test_other_host_names_are_refused_on_loopback(engine: RedisEngine) -> None:
    """A page on another site whose name resolves to 127.0.0.1 (DNS rebinding) gets nothing."""
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        port = url.rstrip("/").rsplit(":", 1)[1]
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.2", "localhost.evil.example"):
            refused = await http.get("api/state", headers={"host": host})
            assert refused.status_code == 400, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            assert (await http.get("api/state", headers={"host": host})).status_code == 200, host


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


async def test_mounted_in_a_fastapi_app_using_its_engine(redis_url: str, prefix: str) -> None:
    from fastapi import FastAPI
    from support.keyspace import delete_prefix

    from aiojobs_redis.integrations.asgi import lifespan

    app = FastAPI(lifespan=lifespan(url=redis_url, prefix=prefix))

    @app.post("/orders")
    async def order() -> dict[str, str]:
        return {"job": await Waiting().dispatch({})}

    app.mount("/jobs", create_app(title="Shop jobs"))
    try:
        async with served(app) as base, httpx.AsyncClient(base_url=base) as http:
            await http.post("/orders")
            page = await http.get("/jobs/")
            state = (await http.get("/jobs/api/state")).json()
            script = await http.get("/jobs/static/dashboard.js")
    finally:
        await delete_prefix(redis_url, prefix)
    assert (
        page.status_code == 200 and '<base href="/jobs/">' in page.text and "<h1>Shop jobs</h1>" in page.text
    )
    assert "Path=/jobs/" in page.headers["set-cookie"]
    assert [(q["queue"], q["ready"]) for q in state["queues"]] == [(OTHER, 1)]
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")


def test_the_cli_refuses_an_open_network_dashboard(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIOJOBS_DASHBOARD_TOKEN", raising=False)
    assert main(["dashboard", "--host", "0.0.0.0", "--port", str(free_port())]) == 1
    assert "open to the network: give it a token or basic auth" in capsys.readouterr().err
    assert main(["dashboard", "--port", str(free_port()), "--basic-auth", "nopassword"]) == 1
    assert "USER:PASSWORD" in capsys.readouterr().err


@pytest.mark.slow
async def test_the_dashboard_command(engine: RedisEngine, redis_url: str, prefix: str) -> None:
    await make_failed(engine, 2)
    port = free_port()
    env = dict(
        os.environ, REDIS_URL=redis_url, REDIS_JOB_PREFIX=prefix, AIOJOBS_DASHBOARD_TOKEN="cli-token-123"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiojobs_redis", "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def up() -> bool:
                try:
                    return (await http.get("/")).status_code == 401
                except httpx.TransportError:
                    return False

            await eventually(up, what="the dashboard command to listen")
            state = (await http.get("/api/state", headers={"authorization": "Bearer cli-token-123"})).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0].decode(errors="replace")
    assert proc.returncode == 0, output
    assert [(q["queue"], q["failed"]) for q in state["queues"]] == [(QUEUE, 2)]
    assert f"dashboard on http://127.0.0.1:{port}/" in output


async def test_abort_from_the_job_and_queue_pages(engine: RedisEngine) -> None:
    waiting, running = await engine.dispatch_many([Broken({"n": 1}), Broken({"n": 2})])
    await claim_from(engine, QUEUE, 1, worker_id="w", request_id="r", lease_ms=10_000)  # takes `waiting`
    waiting, running = running, waiting
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        main = (await http.get("")).text
        csrf = csrf_in(main)
        assert 'action="api/abort"' in main, "running jobs have an Abort button"
        queue_page = (await http.get("queue", params={"queue": QUEUE})).text
        assert 'action="api/abort"' in queue_page and waiting in queue_page
        job_page = (await http.get("job", params={"queue": QUEUE, "id": running})).text
        assert 'action="api/abort"' in job_page and "data-confirm" in job_page
        headers = {"accept": "application/json", "x-csrf-token": csrf}
        target = {"queue": QUEUE, "id": waiting}
        refused = await http.post("api/abort", data=target, headers={"x-csrf-token": "x" * 43})
        assert refused.status_code == 403
        assert (await http.post("api/abort", data=target, headers=headers)).json() == {"aborted": True}
        assert (await http.post("api/abort", data=target, headers=headers)).json() == {"aborted": False}
        form = await http.post("api/abort", data={"csrf": csrf, "queue": QUEUE, "id": running})
        assert form.status_code == 303
        job_page = (await http.get("job", params={"queue": QUEUE, "id": running})).text
        assert 'action="api/abort"' not in job_page and 'action="api/failed/retry"' in job_page
        assert "aborted from the dashboard" in job_page
    assert await failed_count(engine) == 2


async def test_pause_and_resume_a_queue_from_the_main_and_queue_pages(engine: RedisEngine) -> None:
    await Waiting.dispatch_many([{}, {}])
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        main = (await http.get("")).text
        csrf = csrf_in(main)
        assert 'action="api/queue/pause"' in main and "badge paused" not in main
        headers = {"accept": "application/json", "x-csrf-token": csrf}
        refused = await http.post(
            "api/queue/pause", data={"queue": OTHER}, headers={"x-csrf-token": "x" * 43}
        )
        assert refused.status_code == 403 and await engine.paused([OTHER]) == [False], "CSRF applies"

        paused = await http.post("api/queue/pause", data={"queue": OTHER}, headers=headers)
        assert paused.json() == {"queue": OTHER, "paused": True, "changed": True}
        again = await http.post("api/queue/pause", data={"queue": OTHER}, headers=headers)
        assert again.json() == {"queue": OTHER, "paused": True, "changed": False}
        assert await engine.paused([OTHER]) == [True]

        [row] = [q for q in (await http.get("api/state")).json()["queues"] if q["queue"] == OTHER]
        assert (row["ready"], row["paused"]) == (2, True)
        main = (await http.get("")).text
        assert "badge paused" in main and 'action="api/queue/resume"' in main
        queue_api = (await http.get("api/queue", params={"queue": OTHER})).json()
        assert queue_api["paused"] is True
        queue_page = (await http.get("queue", params={"queue": OTHER})).text
        assert 'data-paused="1"' in queue_page and 'action="api/queue/resume"' in queue_page

        # The form a browser without JavaScript submits: the token in a field, then back to the page.
        form = await http.post("api/queue/resume", data={"csrf": csrf, "queue": OTHER})
        assert form.status_code == 303 and await engine.paused([OTHER]) == [False]
        queue_page = (await http.get("queue", params={"queue": OTHER})).text
        assert 'data-paused="0"' in queue_page and 'action="api/queue/pause"' in queue_page

        bad = await http.post("api/queue/pause", data={"queue": "a b"}, headers=headers)
        assert bad.status_code == 400 and "invalid queue name" in bad.json()["error"]
        missing = await http.post("api/queue/pause", data={}, headers=headers)
        assert missing.status_code == 400
        unknown = await http.post("api/queue/pause", data={"queue": "board-typo"}, headers=headers)
        assert unknown.status_code == 404 and unknown.json() == {"error": "unknown queue 'board-typo'"}
        assert "board-typo" not in await engine.known_queues()

    async with dashboard(engine, read_only=True) as url, httpx.AsyncClient(base_url=url) as http:
        main = (await http.get("")).text
        assert "api/queue/" not in main, "no buttons on a read-only dashboard"
        refused = await http.post("api/queue/pause", data={"queue": OTHER, "csrf": csrf_in(main)})
        assert refused.status_code == 403
    assert await engine.paused([OTHER]) == [False]
