"""The dashboard's views of stored jobs over real HTTP: the failed jobs' total, paging and
filters; one job's page; one queue's ready and delayed jobs; latency and lifetime totals; and
everything from Redis escaped in each of them."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest
from support.dashkit import dashboard, running_worker
from support.engine_calls import fail_new_jobs
from support.wait import eventually

from aiojobs_redis import Job, RedisEngine

pytestmark = pytest.mark.anyio

QUEUE = "views"
OTHER = "views-other"
EVIL = "<script>alert(1)</script>"


class Charge(Job):
    queue = QUEUE
    name = "views.Charge"
    attempts = 3

    async def handle(self) -> None:
        raise ConnectionError("gateway down")


class Evil(Job):
    """A name, an error and a payload that a careless page would run as script."""

    queue = OTHER
    name = "views.<script>Evil"

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


async def fail(
    engine: RedisEngine, job: type[Job], count: int, message: str, payload: Any = None
) -> list[str]:
    """Failed jobs without a worker, the last one the newest."""
    payloads = [payload or {"n": n, "card": "4111-SECRET"} for n in range(count)]
    error = {"reason": "error", "type": "builtins.RuntimeError", "message": message, "traceback": message}
    return await fail_new_jobs(engine, job, payloads, lambda _: error)


def rows_of(html: str, body_id: str) -> list[str]:
    """The data-id of each row of the table body `body_id`."""
    found = re.search(rf'<tbody id="{body_id}">(.*?)</tbody>', html, re.S)
    assert found is not None, body_id
    return re.findall(r'<tr data-(?:queue="[^"]*" data-)?id="([^"]+)"', found.group(1))


async def test_the_failed_count_is_the_total_and_pages_keep_the_filter(engine: RedisEngine) -> None:
    charges = await fail(engine, Charge, 120, "card declined")
    evil = await fail(engine, Evil, 4, "gateway <b>down</b>")
    newest_first = [*reversed(evil), *reversed(charges)]
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        state = (await http.get("api/state")).json()
        first = (await http.get("")).text
        third = (await http.get("", params={"offset": 100})).text
        filtered = (await http.get("", params={"name": "charge", "error": "DECLINED", "offset": 50})).text
        filtered_state = (await http.get("api/state", params={"name": "evil"})).json()

    assert state["failed_page"]["total"] == 124 and len(state["failed"]) == 50
    assert [j["id"] for j in state["failed"]] == newest_first[:50]
    assert '<span class="count" id="failed-count">1-50 of 124</span>' in first
    assert 'href="?offset=50#failed">older</a>' in first and "newer</a>" not in first
    assert rows_of(third, "failed-body") == newest_first[100:]
    assert "101-124 of 124" in third and 'href="?offset=50#failed">newer</a>' in third
    assert "older</a>" not in third
    assert "51-100 of 120 matching (124 failed)" in filtered
    assert rows_of(filtered, "failed-body") == newest_first[54:104]
    assert 'href="?offset=100&amp;name=charge&amp;error=DECLINED#failed">older</a>' in filtered
    assert 'value="charge"' in filtered and 'value="DECLINED"' in filtered, "the filter form keeps them"
    assert [j["id"] for j in filtered_state["failed"]] == list(reversed(evil))
    assert filtered_state["failed_page"]["matched"] == 4


async def test_the_job_page_shows_the_record_last_error_and_runs(engine: RedisEngine) -> None:
    [job_id] = await fail(engine, Charge, 1, "card declined")
    now_ms = await engine.redis_time_ms(max_age_ms=0)
    retried = {"kind": "retried", "at": now_ms, "id": job_id, "job": Charge.name, "attempt": 1, "error": "E1"}
    await engine.record_events({QUEUE: ([], [orjson.dumps(retried)])}, events_max=100)
    where = {"queue": QUEUE, "id": job_id}
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        page = await http.get("job", params=where)
        api = (await http.get("api/job", params=where)).json()
        missing = await http.get("job", params={"queue": QUEUE, "id": "nosuchjob"})
        invalid = await http.get("api/job", params={"queue": QUEUE, "id": "../x"})
        main = (await http.get("")).text
    async with dashboard(engine, show_payloads=True) as url, httpx.AsyncClient(base_url=url) as http:
        shown = (await http.get("job", params=where)).text

    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    for expected in (
        '<td class="name">views.Charge</td>',
        '<td class="state">failed</td>',
        '<td class="attempts-used">1 of 3</td>',
        "[error] builtins.RuntimeError: card declined",
        '<td class="error">E1</td>',
        "only the last attempt's error and traceback are kept",
        'action="api/failed/retry"',
    ):
        assert expected in html, expected
    for stamp in ("dispatched", "last-started", "ended"):
        assert re.search(rf'<td class="{stamp}">\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(', html), stamp
    assert "SECRET" not in html and "SECRET" not in orjson.dumps(api).decode(), "no payloads unless enabled"
    assert api["job"]["name"] == "views.Charge" and api["events"][0]["error"] == "E1"
    assert (missing.status_code, invalid.status_code) == (404, 400)
    assert f'href="job?queue={QUEUE}&amp;id={job_id}"' in main, "the failed row links to the job"
    assert "4111-SECRET" in shown and "<summary>payload</summary>" in shown


async def test_the_queue_page_lists_ready_and_delayed_jobs_with_paging(engine: RedisEngine) -> None:
    ready = await Charge.dispatch_many([{"n": n} for n in range(60)])
    later = await Charge().dispatch({"n": "later"}, delay="+2 hours")
    sooner = await Charge().dispatch({"n": "sooner"}, delay="+30 minutes")
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        first = (await http.get("queue", params={"queue": QUEUE})).text
        second = (await http.get("queue", params={"queue": QUEUE, "ready": 50})).text
        api = (await http.get("api/queue", params={"queue": QUEUE})).json()
        main = (await http.get("")).text
        state = (await http.get("api/state")).json()
        bad = await http.get("queue", params={"queue": "a b"})

    assert rows_of(first, "ready-body") == ready[:50] and "1-50 of 60" in first
    assert f'href="queue?queue={QUEUE}&amp;delayed=0&amp;waiting=0&amp;ready=50">next</a>' in first
    assert rows_of(second, "ready-body") == ready[50:] and "51-60 of 60" in second
    assert rows_of(first, "delayed-body") == [sooner, later] and "1-2 of 2" in first
    assert re.search(r'<td class="num due" title="[^"]+">in (29|30) min', first), "when it is due"
    assert re.search(r'<td class="num due" title="[^"]+">in (1 h 59|2 h 00) min', first)
    assert "oldest ready job waiting" in first
    assert [j["id"] for j in api["delayed"]["jobs"]] == [sooner, later] and api["ready"]["total"] == 60
    assert "payload" not in api["ready"]["jobs"][0], "no payloads unless enabled"
    assert f'<a href="queue?queue={QUEUE}">{QUEUE}</a>' in main, "the queue row links to its page"
    [row] = [q for q in state["queues"] if q["queue"] == QUEUE]
    assert row["oldest_ready_ms"] is not None and 0 <= row["latency_ms"] < 60_000
    assert bad.status_code == 400


async def test_the_queue_page_lists_ready_jobs_in_claim_order_with_priorities(engine: RedisEngine) -> None:
    plain = await Charge.dispatch_many([{"n": n} for n in range(2)])
    urgent = await Charge().dispatch({"n": "urgent"}, priority=4)
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        page = (await http.get("queue", params={"queue": QUEUE})).text
        api = (await http.get("api/queue", params={"queue": QUEUE})).json()
        job = (await http.get("job", params={"queue": QUEUE, "id": urgent})).text

    assert rows_of(page, "ready-body") == [urgent, *plain] and "1-3 of 3" in page
    assert page.count('<span class="badge priority" title="level">priority 4</span>') == 1
    assert [(j["id"], j["priority"]) for j in api["ready"]["jobs"]] == [(urgent, 4), *((i, 0) for i in plain)]
    assert re.search(r'<th>priority</th><td class="priority">4</td>', job)


async def test_the_caption_counts_jobs_failed_for_good_as_the_row_does(engine: RedisEngine) -> None:
    """A job that fails on each of its 3 attempts: 2 retried runs, then 1 job in the failed set."""
    job_id = await Charge().dispatch({})
    async with (
        running_worker(engine, [QUEUE]),
        dashboard(engine) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):

        async def counted() -> bool:
            [q] = [q for q in (await http.get("api/state")).json()["queues"] if q["queue"] == QUEUE]
            return bool(q["totals"]["failed"] == 1 and sum(q["throughput"]["retried"]) == 2)

        await eventually(counted, what="three runs of the failing job counted")
        state = (await http.get("api/state")).json()
        html = (await http.get("")).text

    [q] = [q for q in state["queues"] if q["queue"] == QUEUE]
    assert q["failed"] == 1 and [j["id"] for j in state["failed"]] == [job_id]
    assert (sum(q["throughput"]["failed"]), sum(q["throughput"]["retried"])) == (1, 2)
    assert q["totals"] == {"succeeded": 0, "failed": 1, "retried": 2}
    assert '<span class="caption" title="runs in the period shown' in html
    assert ">0 succeeded, 1 failed, 2 retried</span>" in html
    assert '<td class="num totals">0 succeeded / 1 failed</td>' in html
    assert "lifetime: 0 succeeded, 1 failed" in html


async def test_retry_all_asks_first(engine: RedisEngine) -> None:
    await fail(engine, Charge, 1, "x")
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        html = (await http.get("")).text
    assert f'data-confirm="Retry every failed job of queue {QUEUE}?"' in html
    script_part = (
        'actionForm("api/failed/retry-all", { queue: q.queue }, "Retry all failed", "retry-all", ask)'
    )
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        assert script_part in (await http.get("static/dashboard.js")).text


async def test_everything_from_redis_is_escaped_in_every_view(engine: RedisEngine) -> None:
    payload = {"note": EVIL}
    [failed_id] = await fail(engine, Evil, 1, f"boom {EVIL}", payload)
    waiting = await Evil().dispatch(payload)
    delayed = await Evil().dispatch(payload, delay="+1 hour")
    async with dashboard(engine, show_payloads=True) as url, httpx.AsyncClient(base_url=url) as http:
        pages = {
            "main": (await http.get("")).text,
            "filtered": (await http.get("", params={"name": "<script>", "error": EVIL})).text,
            "failed job": (await http.get("job", params={"queue": OTHER, "id": failed_id})).text,
            "ready job": (await http.get("job", params={"queue": OTHER, "id": waiting})).text,
            "delayed job": (await http.get("job", params={"queue": OTHER, "id": delayed})).text,
            "queue": (await http.get("queue", params={"queue": OTHER})).text,
        }
    for view, html in pages.items():
        assert "<script>alert" not in html and "<script>Evil" not in html, view
        assert "&lt;script&gt;" in html, view
        assert html.count("<script") == 1, f"{view}: only the page's own script file"
    assert "boom &lt;script&gt;alert(1)&lt;/script&gt;" in pages["failed job"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["queue"], "the payload, escaped"
    assert "views.&lt;script&gt;Evil" in pages["queue"] and "views.&lt;script&gt;Evil" in pages["ready job"]
    assert 'value="&lt;script&gt;"' in pages["filtered"]
