"""`aiojobs-redis flow`, `batch`, `job` and `stats` on flows (chain, batch, depends_on), as a
user runs them: real subprocesses on the real Redis, the flows brought to their states by an
in-process burst worker."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from test_cli import inspect, json_lines

from aiojobs_redis import Job, PermanentFailure, RedisEngine, Worker, batch, chain

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

CHAINS, BATCHES, JOINS = "cli-flow-chain", "cli-flow-batch", "cli-flow-join"


class Step(Job):
    name = "cli_flow.Step"
    queue = CHAINS
    keep_result = "+1 hour"

    async def handle(self) -> Any:
        if self.payload.get("fail"):
            raise PermanentFailure("step failed on purpose")
        return self.payload.get("n")


class Joined(Step):
    name = "cli_flow.Joined"
    queue = JOINS


class Report(Job):
    name = "cli_flow.Report"
    queue = BATCHES

    async def handle(self) -> None:  # pragma: no cover - its batch never ends here
        return None


async def run_burst(engine: RedisEngine, queue: str, *, max_jobs: int | None = None) -> None:
    worker = Worker(
        engine, [queue], burst=True, concurrency=1, max_jobs=max_jobs, telemetry=False, idle_wait=0.05
    )
    with anyio.fail_after(60):
        await worker.run()


def flow_rows(out: str) -> dict[str, list[str]]:
    """The `flow` table as {id: [name, state, the rest of the line]}."""
    lines = out.splitlines()
    assert lines[0].startswith("flow of job "), out
    assert lines[1].split()[:4] == ["id", "job", "state", "waits"], out
    rows = {}
    for line in lines[2:]:
        if not line.strip():
            break
        job_id, name, state, *rest = line.lstrip("* ").split()
        rows[job_id] = [name, state, " ".join(rest)]
    return rows


async def test_a_chain_whose_first_step_failed(engine: RedisEngine, prefix: str, redis_url: str) -> None:
    first, second, third = await chain(Step({"fail": True}), Step({"n": 2}), Step({"n": 3})).dispatch()
    result = await inspect(prefix, redis_url, "flow", third)
    rows = flow_rows(result.stdout)
    assert list(rows) == [first, second, third], "prerequisites first"
    assert [rows[i][1] for i in (first, second, third)] == ["ready", "waiting", "waiting"]
    assert rows[second][2] == first and rows[third][2] == second, "what each waits for"

    await run_burst(engine, CHAINS)
    result = await inspect(prefix, redis_url, "flow", second, "--queue", CHAINS)
    assert result.returncode == 0, result
    rows = flow_rows(result.stdout)
    assert list(rows) == [first, second, third]
    assert rows[first][1:] == ["failed", "- permanent"]
    assert rows[second][1:] == ["failed", f"- dependency_failed (by {first})"]
    assert rows[third][1:] == ["failed", f"- dependency_failed (by {second})"]
    assert result.stdout.splitlines()[3].startswith(f"* {second}"), "the job asked about is marked"

    result = await inspect(prefix, redis_url, "flow", second, "--json")
    [record] = json_lines(result.stdout)
    assert (record["job"], record["queue"], record["complete"]) == (second, CHAINS, True)
    by_id = {job["job_id"]: job for job in record["jobs"]}
    assert by_id[second]["failed_by"] == first and by_id[second]["reason"] == "dependency_failed"
    assert by_id[second]["prerequisites"] == [first] and by_id[second]["dependents"] == [third]

    result = await inspect(prefix, redis_url, "job", second)
    assert result.returncode == 0, result
    assert f"needs      {first} (failed); 1 of 1 not done yet" in result.stdout, result.stdout
    assert f"needed by  {third} (failed)" in result.stdout, result.stdout
    assert f"failed by  {first} (" in result.stdout, result.stdout
    result = await inspect(prefix, redis_url, "failed", "show", third)
    assert f"failed by  {second} (" in result.stdout, result.stdout
    result = await inspect(prefix, redis_url, "job", second, "--json")
    [job] = json_lines(result.stdout)
    assert (job["prerequisites"], job["prerequisites_pending"], job["failed_by"]) == ([first], 1, first)
    assert job["prerequisite_states"] == {first: "failed"} and job["dependents"] == {third: "failed"}


async def test_a_batch_half_done(engine: RedisEngine, prefix: str, redis_url: str) -> None:
    members = [Step({"n": 1}), Step({"fail": True}), Step({"n": 3}), Step({"n": 4})]
    callback = Report()
    batch_id, ids = await batch(members, on_complete=callback, queue=BATCHES).dispatch()
    await run_burst(engine, BATCHES, max_jobs=2)
    assert callback.id is not None

    result = await inspect(prefix, redis_url, "batch", batch_id, "--queue", BATCHES)
    assert result.returncode == 0, result
    assert "members    4: 2 pending, 1 done, 1 failed" in result.stdout, result.stdout
    assert f"failed     {ids[1]}" in result.stdout, result.stdout
    result = await inspect(prefix, redis_url, "batch", batch_id, "--queue", BATCHES, "--json")
    [record] = json_lines(result.stdout)
    assert (record["total"], record["pending"], record["done"], record["failed"]) == (4, 2, 1, 1)
    assert record["done_ids"] == [ids[0]] and record["failed_ids"] == [ids[1]]

    # From a member not ended yet: the callback and the ended members, through the batch.
    result = await inspect(prefix, redis_url, "flow", ids[2], "--queue", BATCHES)
    rows = flow_rows(result.stdout)
    assert {i: rows[i][1] for i in rows} == {
        ids[2]: "ready",
        callback.id: "waiting",
        ids[0]: "done",
        ids[1]: "failed",
    }, result.stdout
    assert rows[callback.id][2] == f"batch {batch_id}"
    assert rows[ids[1]][2] == "- permanent"
    assert f"batch {batch_id}: 4 member(s), 2 pending, 1 done, 1 failed" in result.stdout

    result = await inspect(prefix, redis_url, "job", callback.id)
    assert f"batch      {batch_id}" in result.stdout, result.stdout

    result = await inspect(prefix, redis_url, "batch", "nosuchbatch", "--queue", BATCHES)
    assert result.returncode == 1 and "unknown" in result.stderr, result


async def test_depends_on_and_the_waiting_column(engine: RedisEngine, prefix: str, redis_url: str) -> None:
    first = await Joined({"n": 1}).dispatch()
    second = await Joined({"n": 2}).dispatch()
    joined = await Joined({"n": 3}).dispatch(depends_on=[first, second])

    result = await inspect(prefix, redis_url, "flow", joined)
    rows = flow_rows(result.stdout)
    assert list(rows)[-1] == joined
    assert {i: rows[i][1] for i in rows} == {first: "ready", second: "ready", joined: "waiting"}
    assert rows[joined][2] == f"{first}, {second}"

    result = await inspect(prefix, redis_url, "job", first)
    assert f"needed by  {joined} (waiting)" in result.stdout, result.stdout
    result = await inspect(prefix, redis_url, "job", joined)
    assert f"needs      {first} (ready), {second} (ready); 2 of 2 not done yet" in result.stdout

    result = await inspect(prefix, redis_url, "stats", "--queue", JOINS)
    header, row = result.stdout.splitlines()[:2]
    assert header.split()[:3] == ["queue", "waiting", "ready"] and row.split()[:3] == [JOINS, "1", "2"]
    [stats] = json_lines((await inspect(prefix, redis_url, "stats", "--queue", JOINS, "--json")).stdout)
    assert (stats["waiting"], stats["ready"]) == (1, 2)

    await run_burst(engine, JOINS, max_jobs=1)
    result = await inspect(prefix, redis_url, "flow", joined, "--queue", JOINS)
    rows = flow_rows(result.stdout)
    assert rows[first][1] == "done" and rows[joined][1:] == ["waiting", second], result.stdout


async def test_an_unknown_job_exits_1(engine: RedisEngine, prefix: str, redis_url: str) -> None:
    await Joined({"n": 1}).dispatch()
    result = await inspect(prefix, redis_url, "flow", "nosuchjob")
    assert result.returncode == 1 and "no job with id nosuchjob" in result.stderr, result
    result = await inspect(prefix, redis_url, "flow", "nosuchjob", "--queue", JOINS)
    assert result.returncode == 1 and f"in queue {JOINS}" in result.stderr, result
    plain = await Joined({"n": 2}).dispatch()  # inline in the ready list: a flow of its own
    result = await inspect(prefix, redis_url, "flow", plain, "--queue", JOINS)
    assert result.returncode == 0 and flow_rows(result.stdout)[plain][1] == "ready", result
