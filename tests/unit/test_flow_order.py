"""The order a flow is shown in: each job after its prerequisites among those found."""

from __future__ import annotations

from aiojobs_redis.workflow_store import FlowJob, _prerequisites_first


def ids(jobs: list[FlowJob]) -> list[str]:
    return [job.job_id for job in jobs]


def test_prerequisites_come_first_whatever_order_they_were_found_in() -> None:
    # A diamond found from its end: d needs b and c, both need a.
    found = [
        FlowJob("d", "waiting", prerequisites=["b", "c"]),
        FlowJob("b", "waiting", prerequisites=["a"]),
        FlowJob("c", "waiting", prerequisites=["a"]),
        FlowJob("a", "ready", dependents=["b", "c"]),
    ]
    assert ids(_prerequisites_first(found)) == ["a", "b", "c", "d"]


def test_jobs_not_found_and_unrelated_jobs_keep_their_place() -> None:
    found = [
        FlowJob("cb", "waiting", batch_id="b1"),
        FlowJob("y", "waiting", prerequisites=["x", "gone-past-the-limit"]),
        FlowJob("x", "done"),
    ]
    assert ids(_prerequisites_first(found)) == ["cb", "x", "y"]
