"""The dashboard's views of flows (chain, batch, depends_on) over real HTTP: a job's Flow
panel with each job's state, what it waits for and why it failed; the waiting count of the
queue table; a queue's waiting jobs; everything from Redis escaped."""

from __future__ import annotations

import re
from typing import Any

import anyio
import httpx
import pytest
from support.dashkit import dashboard

from aiojobs_redis import Job, PermanentFailure, RedisEngine, Worker, batch, chain

pytestmark = pytest.mark.anyio

QUEUE = "views-flows"


class Step(Job):
    queue = QUEUE
    name = "flows.<script>Step"  # a name a careless page would run as script
    keep_result = "+1 hour"

    async def handle(self) -> Any:
        if self.payload.get("fail"):
            raise PermanentFailure("failed <b>on purpose</b>")
        return self.payload.get("n")


class Report(Job):
    queue = QUEUE
    name = "flows.Report"

    async def handle(self) -> None:  # pragma: no cover - its batch never ends here
        return None


async def run_burst(engine: RedisEngine, *, max_jobs: int | None = None) -> None:
    worker = Worker(
        engine, [QUEUE], burst=True, concurrency=1, max_jobs=max_jobs, telemetry=False, idle_wait=0.05
    )
    with anyio.fail_after(60):
        await worker.run()


def flow_rows(html: str) -> dict[str, list[str]]:
    """The Flow panel as {id: [state, waits for, failure]}, in its order."""
    found = re.search(r'<tbody id="flow-body">(.*?)</tbody>', html, re.S)
    assert found is not None, "no Flow panel"
    rows = {}
    for row in re.findall(r"<tr data-id=.*?</tr>", found.group(1), re.S):
        job_id = re.search(r'data-id="([^"]+)"', row)
        state = re.search(r'<span class="badge [^"]*">([^<]*)</span>', row)
        waits = re.search(r'<td class="waits-for">([^<]*)</td>', row)
        error = re.search(r'<td class="error">([^<]*)</td>', row)
        assert job_id and state and waits and error, row
        rows[job_id.group(1)] = [state.group(1), waits.group(1), error.group(1)]
    return rows


async def test_the_flow_panel_of_a_chain_whose_first_step_failed(engine: RedisEngine) -> None:
    first, second, third = await chain(Step({"fail": True}), Step({"n": 2}), Step({"n": 3})).dispatch()
    await run_burst(engine)
    where = {"queue": QUEUE, "id": second}
    async with dashboard(engine, read_only=True) as url, httpx.AsyncClient(base_url=url) as http:
        html = (await http.get("job", params=where)).text
        api = (await http.get("api/job", params=where)).json()

    rows = flow_rows(html)
    assert list(rows) == [first, second, third], "prerequisites first"
    assert rows[first] == ["failed", "-", "permanent"]
    assert rows[second] == ["failed", "-", f"dependency_failed (by {first})"]
    assert rows[third] == ["failed", "-", f"dependency_failed (by {second})"]
    assert f'<tr data-id="{second}" class="here">' in html, "the job whose page it is"
    for job_id in (first, third):
        assert f'href="job?queue={QUEUE}&amp;id={job_id}"' in html, "each job links to its page"
    assert f'<td class="failed-by">{first}</td>' in html
    assert '<td class="prerequisites">1 of 1 not done yet</td>' in html
    assert "<script>Step" not in html and "flows.&lt;script&gt;Step" in html, "names escaped"
    assert api["job"]["failed_by"] == first and api["job"]["prerequisites"] == [first]
    assert [(j["id"], j["state"]) for j in api["flow"]] == [
        (first, "failed"),
        (second, "failed"),
        (third, "failed"),
    ]
    assert 'action="api/' not in html, "read-only: no buttons"


async def test_the_flow_panel_of_a_batch_half_done(engine: RedisEngine) -> None:
    members = [Step({"n": 1}), Step({"fail": True}), Step({"n": 3}), Step({"n": 4})]
    callback = Report()
    batch_id, ids = await batch(members, on_complete=callback).dispatch()
    await run_burst(engine, max_jobs=2)
    assert callback.id is not None
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        html = (await http.get("job", params={"queue": QUEUE, "id": callback.id})).text

    rows = flow_rows(html)
    assert {i: r[0] for i, r in rows.items()} == {callback.id: "waiting", ids[0]: "done", ids[1]: "failed"}
    assert rows[callback.id][1] == f"batch {batch_id}"
    assert rows[ids[1]][2] == "permanent"
    assert f"batch <code>{batch_id}</code>: 4 member(s), 2 pending, 1 done, 1 failed" in html
    assert f'<td class="batch">{batch_id}</td>' in html


async def test_depends_on_the_waiting_count_and_the_queues_waiting_jobs(engine: RedisEngine) -> None:
    first = await Step({"n": 1}).dispatch()
    second = await Step({"n": 2}).dispatch()
    joined = await Step({"n": 3}).dispatch(depends_on=[first, second])
    plain = await Report().dispatch()
    async with dashboard(engine) as url, httpx.AsyncClient(base_url=url) as http:
        main = (await http.get("")).text
        state = (await http.get("api/state")).json()
        queue_page = (await http.get("queue", params={"queue": QUEUE})).text
        queue_api = (await http.get("api/queue", params={"queue": QUEUE})).json()
        joined_page = (await http.get("job", params={"queue": QUEUE, "id": joined})).text
        first_page = (await http.get("job", params={"queue": QUEUE, "id": first})).text
        plain_page = (await http.get("job", params={"queue": QUEUE, "id": plain})).text

    [row] = [q for q in state["queues"] if q["queue"] == QUEUE]
    assert (row["waiting"], row["ready"]) == (1, 3)
    assert '<td class="num waiting">1</td><td class="num ready">3</td>' in main
    assert re.search(r'<tbody id="waiting-body"><tr data-id="' + joined, queue_page), "the waiting list"
    assert "1-1 of 1" in queue_page and [j["id"] for j in queue_api["waiting"]["jobs"]] == [joined]
    assert flow_rows(joined_page) == {
        first: ["ready", "-", ""],
        second: ["ready", "-", ""],
        joined: ["waiting", f"{first}, {second}", ""],
    }
    assert '<td class="prerequisites">2 of 2 not done yet</td>' in joined_page
    assert set(flow_rows(first_page)) == {first, second, joined}, "reached through its dependent"
    assert 'id="flow"' not in plain_page, "a plain job has no Flow panel"
