"""The workflow API's pure parts: how chain() and batch() lay out their jobs, and what they
refuse before any I/O."""

from __future__ import annotations

import pytest

from aiojobs_redis import InvalidFlow, InvalidJobId, Job, batch, chain
from aiojobs_redis.workflows import MAX_PREREQUISITES, Flow, FlowNode, check_depends_on, check_flow


class Plain(Job):
    name = "workflow_api.Plain"
    queue = "wf-api"

    async def handle(self) -> None:
        return None


class Once(Job):
    name = "workflow_api.Once"
    queue = "wf-api"
    unique = True

    async def handle(self) -> None:
        return None


def test_a_chain_makes_each_step_wait_for_the_one_before() -> None:
    flow = chain(Plain(), Plain(), Plain()).flow()
    first, second, third = flow.nodes
    assert first.prerequisites == ()
    assert second.prerequisites == (first.job_id,)
    assert third.prerequisites == (second.job_id,)
    assert not any(node.run_anyway for node in flow.nodes)
    assert len({node.job_id for node in flow.nodes}) == 3


def test_on_failure_continue_runs_every_later_step_anyway() -> None:
    flow = chain(Plain(), Plain(), on_failure="continue").flow()
    assert [node.run_anyway for node in flow.nodes] == [False, True]
    with pytest.raises(InvalidFlow):
        chain(Plain(), on_failure="ignore")  # type: ignore[arg-type]


def test_a_batch_lists_members_then_its_callback() -> None:
    flow = batch([Plain(), Plain()], on_success=Plain(), queue="elsewhere").flow()
    assert [(n.member, n.callback) for n in flow.nodes] == [(True, False), (True, False), (False, True)]
    assert flow.batch_mode == "s" and flow.queue == "elsewhere"
    assert batch([Plain()]).flow().batch_mode == ""
    assert batch([Plain()], on_complete=Plain()).flow().batch_mode == "c"


def test_depends_on_ids_are_checked_and_deduplicated() -> None:
    assert check_depends_on(["a", "b", "a"], "fail") == ("a", "b")
    with pytest.raises(InvalidFlow):
        check_depends_on("abc", "fail")
    with pytest.raises(InvalidFlow):
        check_depends_on(["a"], "skip")
    with pytest.raises(InvalidJobId):
        check_depends_on(["not an id"], "run")
    with pytest.raises(InvalidFlow):
        check_depends_on([f"j{n}" for n in range(MAX_PREREQUISITES + 1)], "fail")


def test_a_unique_job_cannot_be_part_of_a_flow() -> None:
    with pytest.raises(InvalidFlow, match="unique"):
        check_flow(Flow([FlowNode(Plain()), FlowNode(Once())]))


def test_a_flow_takes_job_instances() -> None:
    with pytest.raises(InvalidFlow):
        chain(Plain(), "not a job")  # type: ignore[arg-type]
    with pytest.raises(InvalidFlow):
        batch([Plain()], on_complete=Plain(), on_success=Plain())
