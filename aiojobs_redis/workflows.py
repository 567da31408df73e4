"""Workflows: chains, batches and dependencies between jobs.

* `chain(A(p1), B(p2), C(p3)).dispatch()`: each step starts once the one before it has
  succeeded; returns the steps' ids, in order.
* `batch([...], on_complete=Callback(...)).dispatch()`: the callback is stored ready exactly
  once, when every member has ended (done, failed or aborted); `on_success=` instead: only
  when every member is done. The callback reads the counts and ids with
  `await self.batch_result()`. Returns (batch id, member ids).
* `SomeJob(p).dispatch(depends_on=[id, ...])`: a job that waits until all those jobs are done.

When a prerequisite fails for good or is aborted, every job that waits on it (and on those,
down the flow) ends in the failed set at once, reason `dependency_failed` or
`dependency_aborted`, unless it was dispatched to run anyway (`on_failure="continue"`,
`on_dependency_failure="run"`). `failed retry` of the failed job revives them: they wait
again. A flow lives in one queue (the first step's, or `queue=`): every step of it is one
atomic script on one Redis slot, a Cluster included. The engine's side is in
workflow_store.py, the scripts in lua/dispatch_flow.lua and the prelude's "Flows". The
FakeEngine plays the same rules in memory (testing_flows.py); the sync engine runs a flow
inline, inside dispatch() (sync_flows.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .context import current_engine
from .errors import ConfigurationError, InvalidFlow, JobNotFound, UnknownDependency
from .ids import new_job_id
from .keys import validate_job_id, validate_queue

if TYPE_CHECKING:
    from .job import Job

MAX_PREREQUISITES = 1_000  # depends_on ids per job: one script call reads them all
MAX_FLOW_JOBS = 10_000  # jobs in one chain or batch: one script call stores them all

DependencyPolicy = Literal["fail", "run"]


@dataclass(slots=True)
class FlowNode:
    """One job of a flow, as dispatch_flow.lua stores it: its prerequisites are ids of jobs
    before it in the same flow, or of jobs already stored (`outside`)."""

    job: Job
    prerequisites: tuple[str, ...] = ()
    run_anyway: bool = False  # start even if a prerequisite failed or was aborted
    member: bool = False  # a batch member
    callback: bool = False  # the batch's callback
    job_id: str = field(default_factory=new_job_id)  # made here: later nodes name it


@dataclass(slots=True)
class Flow:
    """The jobs of one flow, in an order where prerequisites come first."""

    nodes: list[FlowNode]
    queue: str | None = None  # None: the first job's queue
    outside: tuple[str, ...] = ()  # prerequisites already stored (depends_on)
    batch_id: str = ""
    batch_mode: str = ""  # "c" on_complete, "s" on_success, "" no callback


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Where a batch stands: members in all, not ended yet, done and failed (failed includes
    aborted), and the ids of the first 1,000 done and failed members each."""

    batch_id: str
    total: int
    pending: int
    done: int
    failed: int
    done_ids: list[str] = field(default_factory=list)
    failed_ids: list[str] = field(default_factory=list)


class Chain:
    """Jobs that run one after the other: see chain()."""

    def __init__(self, jobs: Sequence[Job], *, queue: str | None, on_failure: str) -> None:
        if not jobs:
            raise InvalidFlow("chain() needs at least one job")
        if on_failure not in ("fail", "continue"):
            raise InvalidFlow(f"chain(on_failure=...) is 'fail' or 'continue', not {on_failure!r}")
        _distinct(jobs)
        self.jobs = list(jobs)
        self.queue = None if queue is None else validate_queue(queue)
        self.on_failure = on_failure

    def flow(self) -> Flow:
        nodes = [FlowNode(self.jobs[0])]
        for job in self.jobs[1:]:
            nodes.append(FlowNode(job, (nodes[-1].job_id,), run_anyway=self.on_failure == "continue"))
        return Flow(nodes, self.queue)

    async def dispatch(self) -> list[str]:
        """Store every step at once; the first is ready (or delayed by its delay), the others
        wait. Returns their ids in order (each job's `id` is set too)."""
        flow = self.flow()
        await current_engine_for_flows().dispatch_flow(flow)
        return [node.job_id for node in flow.nodes]

    def __repr__(self) -> str:
        return f"<Chain of {len(self.jobs)} jobs: {', '.join(type(j).__qualname__ for j in self.jobs[:5])}>"


class Batch:
    """Jobs that run independently, with a callback once they have all ended: see batch()."""

    def __init__(
        self,
        jobs: Iterable[Job],
        *,
        on_complete: Job | None,
        on_success: Job | None,
        queue: str | None,
    ) -> None:
        self.jobs = list(jobs)
        if not self.jobs:
            raise InvalidFlow("batch() needs at least one job")
        if on_complete is not None and on_success is not None:
            raise InvalidFlow("batch() takes on_complete or on_success, not both")
        self.callback = on_complete if on_complete is not None else on_success
        self.mode = "c" if on_complete is not None else "s" if on_success is not None else ""
        _distinct([*self.jobs, *([self.callback] if self.callback is not None else [])])
        self.queue = None if queue is None else validate_queue(queue)

    def flow(self) -> Flow:
        nodes = [FlowNode(job, member=True) for job in self.jobs]
        if self.callback is not None:
            nodes.append(FlowNode(self.callback, callback=True))
        return Flow(nodes, self.queue, batch_mode=self.mode)

    async def dispatch(self) -> tuple[str, list[str]]:
        """Store the members (ready, or delayed by their delay) and the callback (waiting).
        Returns the batch id and the members' ids, in order."""
        flow = self.flow()
        await current_engine_for_flows().dispatch_flow(flow)
        return flow.batch_id, [node.job_id for node in flow.nodes if node.member]

    def __repr__(self) -> str:
        return f"<Batch of {len(self.jobs)} jobs, callback={type(self.callback).__qualname__}>"


def chain(*jobs: Job, queue: str | None = None, on_failure: Literal["fail", "continue"] = "fail") -> Chain:
    """Jobs that run one after the other: each starts once the one before has succeeded.

    All steps run in one queue: `queue`, else the first job's (a step of another class's
    queue is moved to it: its worker must import every step's class). `on_failure="continue"`
    starts the next step even when one fails for good; by default the rest of the chain ends
    in the failed set with reason dependency_failed. A step reads the result of the step
    before it with `await self.dependency_result()` when that step's class keeps its result
    (keep_result).
    """
    return Chain(jobs, queue=queue, on_failure=on_failure)


def batch(
    jobs: Iterable[Job],
    *,
    on_complete: Job | None = None,
    on_success: Job | None = None,
    queue: str | None = None,
) -> Batch:
    """Jobs that run independently, and a callback stored exactly once when they have all
    ended (`on_complete`) or all succeeded (`on_success`: it fails with reason
    dependency_failed at the first member that fails for good). In the callback,
    `await self.batch_result()` gives the counts and ids (BatchResult). One queue for all, as
    for chain()."""
    return Batch(jobs, on_complete=on_complete, on_success=on_success, queue=queue)


def check_depends_on(ids: Iterable[str], policy: str) -> tuple[str, ...]:
    """depends_on ids validated and without repeats (order kept); the policy checked."""
    if policy not in ("fail", "run"):
        raise InvalidFlow(f"on_dependency_failure is 'fail' or 'run', not {policy!r}")
    if isinstance(ids, str):
        raise InvalidFlow("depends_on takes a list of job ids, not one string")
    seen = tuple(dict.fromkeys(validate_job_id(i) for i in ids))
    if len(seen) > MAX_PREREQUISITES:
        raise InvalidFlow(f"depends_on names {len(seen)} jobs; at most {MAX_PREREQUISITES}")
    return seen


def check_flow(flow: Flow) -> None:
    """What no engine can store: a unique job (its lock and a flow's edges do not mix yet),
    or a flow too large for one atomic call."""
    if len(flow.nodes) > MAX_FLOW_JOBS:
        raise InvalidFlow(f"a flow of {len(flow.nodes)} jobs; at most {MAX_FLOW_JOBS} in one dispatch")
    for node in flow.nodes:
        if node.job.unique:
            what = type(node.job).__qualname__
            raise InvalidFlow(f"{what} is unique: a unique job cannot be part of a flow")


def unknown_dependency(job_id: str) -> UnknownDependency:
    """The error of a depends_on id no engine knows (no job was stored)."""
    return UnknownDependency(
        f"depends_on: no job {job_id} in this queue (it may be unknown, of another queue, or "
        "done and no longer on record: a finished plain job is remembered only briefly "
        "unless its class keeps its result); no job was stored",
        job_id,
    )


def dependency_error(cause: str, how: str) -> dict[str, str]:
    """The error record of a job failed because its prerequisite `cause` ended `how`
    ("failed" or "aborted"), as the prelude's fail_waiting() writes it."""
    reason = "dependency_aborted" if how == "aborted" else "dependency_failed"
    return {"reason": reason, "type": "DependencyFailed", "message": f"its prerequisite {cause} {how}"}


def check_order(flow: Flow) -> None:
    """Every prerequisite is outside the flow or a job before its dependent (as
    dispatch_flow.lua checks), and a batch member has none."""
    known = set(flow.outside)
    for node in flow.nodes:
        for prerequisite in node.prerequisites:
            if prerequisite not in known:
                raise InvalidFlow(f"prerequisite {prerequisite} is not before its dependent")
        if node.member and node.prerequisites:
            raise InvalidFlow("a batch member has no prerequisites")
        known.add(node.job_id)


def current_engine_for_flows() -> Any:
    engine = current_engine()
    if not hasattr(engine, "dispatch_flow"):
        raise ConfigurationError(f"{type(engine).__name__} cannot store chains, batches or dependencies")
    return engine


def _distinct(jobs: Sequence[Job]) -> None:
    if len({id(job) for job in jobs}) != len(jobs):
        raise InvalidFlow("the same Job instance appears twice in one flow; make one per step")
    for job in jobs:
        if not hasattr(job, "handle"):
            raise InvalidFlow(f"a flow takes Job instances, not {job!r}")


async def dispatch_after(job: Job, depends_on: Iterable[str], policy: str, durable: bool | None) -> str:
    """Job.dispatch(depends_on=...): one job that waits for jobs already stored."""
    ids = check_depends_on(depends_on, policy)
    if not ids:
        return str(await current_engine().dispatch(job, durable=durable))
    flow = Flow([FlowNode(job, prerequisites=ids, run_anyway=policy == "run")], outside=ids)
    await current_engine_for_flows().dispatch_flow(flow, durable=durable)
    return flow.nodes[0].job_id


def _running(job: Job) -> tuple[Any, str, str]:
    """The engine, queue and id of the run of `job` in progress (a worker's), or of a job
    dispatched through the current engine."""
    lease = getattr(job, "_lease", None)
    if lease is not None:
        holder, claimed = lease
        engine = holder.engine
        queue, job_id = claimed.queue, claimed.id
    else:
        engine = current_engine()
        queue, job_id = type(job).queue, job.id
    if job_id is None:
        raise InvalidFlow(f"{type(job).__qualname__} has no id yet: it is neither running nor dispatched")
    if not hasattr(engine, "flow_fields"):
        raise ConfigurationError(f"{type(engine).__name__} keeps no flows")
    return engine, queue, job_id


async def dependency_result(job: Job, job_id: str | None) -> Any:
    engine, queue, own_id = _running(job)
    if job_id is None:
        prerequisites, _ = await engine.flow_fields(queue, own_id)
        if len(prerequisites) != 1:
            raise InvalidFlow(
                f"job {own_id} has {len(prerequisites)} prerequisites: name the one whose result you want"
            )
        job_id = prerequisites[0]
    found, value = await engine.kept_result(queue, validate_job_id(job_id))
    if not found:
        raise JobNotFound(
            f"prerequisite {job_id} kept no result: give its class keep_result (or it has expired)"
        )
    return value


async def batch_result_of(job: Job) -> BatchResult:
    engine, queue, own_id = _running(job)
    _, batch_id = await engine.flow_fields(queue, own_id)
    if not batch_id:
        raise InvalidFlow(f"job {own_id} is not part of a batch")
    return await engine.batch_result(queue, batch_id)  # type: ignore[no-any-return]
