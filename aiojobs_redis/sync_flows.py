"""Chains, batches and depends_on on the inline engine (mixed into SyncEngine).

dispatch() of a flow runs its jobs in order, each once the jobs it depends on have ended,
by the rules they follow on Redis:
* a job whose prerequisite failed is not run: it is recorded in `engine.failed` with
  reason dependency_failed (error DependencyFailed), unless it runs anyway
  (`chain(on_failure="continue")`, `on_dependency_failure="run"`); so a chain stops at
  its first failed step;
* a batch runs every member, then its callback: on_complete always, on_success only when
  every member succeeded (else it is not run, reason dependency_failed);
* `depends_on` ids are looked up among the last 10,000 jobs this engine ran: done, it runs
  now; failed, it is not run (as above); unknown, UnknownDependency and nothing runs.
Then, with raise_on_failure, the first job of the flow that failed raises its error (a job
not run raises DependencyFailed). `dependency_result()` and `batch_result()` work in the
jobs of a flow, while the records last (the last 10,000 jobs, the last 1,000 batches).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import DependencyFailed, JobNotFound
from .ids import new_job_id
from .keys import validate_job_id
from .typed_payloads import encode_job_payload
from .workflows import (
    BatchResult,
    Flow,
    FlowNode,
    check_flow,
    check_order,
    dependency_error,
    unknown_dependency,
)

if TYPE_CHECKING:
    from .config import Settings
    from .job import Job

log = logging.getLogger("aiojobs_redis.sync")

KEPT = 10_000  # ids whose outcome, flow fields and kept result are remembered
BATCHES_KEPT = 1_000
BATCH_IDS_KEPT = 1_000  # ids of done and of failed members per batch, as on Redis

K = TypeVar("K")
V = TypeVar("V")


class Recent(dict[K, V]):
    """A dict that keeps its `limit` newest keys: the oldest goes when a new one comes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: K, value: V) -> None:
        if key not in self and len(self) >= self.limit:
            del self[next(iter(self))]
        super().__setitem__(key, value)


@dataclass(slots=True)
class SyncBatch:
    total: int
    mode: str  # "c" on_complete, "s" on_success, "" none
    done_ids: list[str] = field(default_factory=list)
    failed_ids: list[str] = field(default_factory=list)
    done: int = 0
    failed: int = 0

    def count(self, job_id: str, good: bool) -> None:
        ids = self.done_ids if good else self.failed_ids
        if good:
            self.done += 1
        else:
            self.failed += 1
        if len(ids) < BATCH_IDS_KEPT:
            ids.append(job_id)


class SyncFlows:
    """SyncEngine's flows."""

    settings: Settings
    raise_on_failure: bool
    results: dict[str, Any]

    if TYPE_CHECKING:

        async def _run(self, job: Job, data: bytes, job_id: str) -> BaseException | None: ...

        def _failed_for_good(
            self, job_id: str, name: str, attempts: int, error: BaseException, reason: str
        ) -> None: ...

    def _init_flows(self) -> None:
        self._outcomes: Recent[str, bool] = Recent(KEPT)  # job id -> succeeded
        self._fields: Recent[str, tuple[tuple[str, ...], str]] = Recent(KEPT)  # prerequisites, batch
        self._batches: Recent[str, SyncBatch] = Recent(BATCHES_KEPT)

    def _ended(self, job_id: str, succeeded: bool) -> None:
        self._outcomes[job_id] = succeeded

    async def dispatch_flow(self, flow: Flow, *, durable: bool | None = None) -> None:
        """Run the flow's jobs now, in order (see the module's docstring)."""
        check_flow(flow)
        check_order(flow)
        encoded = [encode_job_payload(node.job, self.settings.max_payload_bytes) for node in flow.nodes]
        ended = {job_id: self._outcome_of(job_id) for job_id in flow.outside}
        batch = None
        if any(node.member for node in flow.nodes):
            flow.batch_id = new_job_id()
            batch = self._batches[flow.batch_id] = SyncBatch(
                sum(n.member for n in flow.nodes), flow.batch_mode
            )
        for node in flow.nodes:
            node.job.id = node.job_id
            in_batch = node.member or node.callback
            self._fields[node.job_id] = (node.prerequisites, flow.batch_id if in_batch else "")
        first: BaseException | None = None
        for node, data in zip(flow.nodes, encoded, strict=True):
            cause = _cause(node, ended, batch)
            if cause is None:
                error = await self._run(node.job, data, node.job_id)
            else:
                error = self._not_run(node, cause)
            ended[node.job_id] = error is None
            if node.member and batch is not None:
                batch.count(node.job_id, error is None)
            first = first or error
        if first is not None and self.raise_on_failure:
            raise first

    def _outcome_of(self, job_id: str) -> bool:
        """Whether an outside prerequisite succeeded; UnknownDependency when it is not on record."""
        outcome = self._outcomes.get(job_id)
        if outcome is None:
            raise unknown_dependency(job_id)
        return outcome

    def _not_run(self, node: FlowNode, cause: str) -> DependencyFailed:
        record = dependency_error(cause, "failed")
        error = DependencyFailed(record["message"], cause)
        log.warning("job %s %s not run: its prerequisite %s failed", node.job_id, node.job.name, cause)
        self._failed_for_good(node.job_id, node.job.name, 0, error, record["reason"])
        return error

    # -- reading, for the jobs of a flow ----------------------------------------------------

    async def flow_fields(self, queue: str, job_id: str) -> tuple[list[str], str]:
        """A flow job's prerequisites (ids) and batch id ("" none)."""
        prerequisites, batch_id = self._fields.get(job_id, ((), ""))
        return list(prerequisites), batch_id

    async def batch_result(self, queue: str, batch_id: str) -> BatchResult:
        """Where batch `batch_id` stands; JobNotFound when it is not on record."""
        batch = self._batches.get(validate_job_id(batch_id))
        if batch is None:
            raise JobNotFound(f"batch {batch_id}: not run here, or no longer on record")
        pending = batch.total - batch.done - batch.failed
        return BatchResult(
            batch_id,
            batch.total,
            pending,
            batch.done,
            batch.failed,
            list(batch.done_ids),
            list(batch.failed_ids),
        )

    async def kept_result(self, queue: str, job_id: str) -> tuple[bool, Any]:
        """(True, value) when the job ran here and its class keeps results; else (False, None)."""
        if job_id in self.results:
            return True, self.results[job_id]
        return False, None


def _cause(node: FlowNode, ended: dict[str, bool], batch: SyncBatch | None) -> str | None:
    """The prerequisite (or batch member) whose failure keeps `node` from running, if any."""
    if not node.run_anyway:
        for prerequisite in node.prerequisites:
            if not ended[prerequisite]:
                return prerequisite
    if node.callback and batch is not None and batch.mode == "s" and batch.failed_ids:
        return batch.failed_ids[0]
    return None
