"""Chains, batches and depends_on on the FakeEngine (mixed into it), as dispatch_flow.lua,
the prelude's "Flows" (finish(), end_prerequisite(), end_member()) and requeue_failed.lua
do them on Redis.

A job whose prerequisites are not all done is in state "waiting". A prerequisite's end
releases (done) or fails (failed, aborted) the jobs that wait on it, and theirs after them,
at once; a batch counts its members' ends and releases its callback once; `failed_retry()`
revives the jobs a failure failed. The fake keeps every record: edges, batches and failed
jobs never expire, and a done job stays "done" (a depends_on on it is met).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from . import sharding
from .abort import ABORTED_REASON
from .admin import RetryReport
from .errors import JobNotFound
from .groups import group_of
from .ids import new_job_id
from .keys import validate_job_id, validate_queue
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
    from .clock import FakeClock
    from .config import Settings
    from .job import Job
    from .testing import FakeJob

BATCH_IDS_KEPT = 1000  # ids of done and of failed members kept per batch, as on Redis
LIVE = ("ready", "delayed", "running", "waiting")


@dataclass(slots=True)
class FlowFields:
    """What a flow job's hash holds on Redis: P, D, M, Y, B, W and F letter 'b'."""

    prerequisites: tuple[str, ...] = ()
    pending: int = 0  # prerequisites not done yet
    run_anyway: bool = False
    delay_ms: int = 0  # waited once released
    batch_id: str = ""  # of a batch member or callback
    member: bool = False
    failed_by: str = ""  # the prerequisite (or batch member) whose end failed it


@dataclass(slots=True)
class FakeBatch:
    total: int
    left: int  # members not ended yet
    callback: str  # its id, or ""
    mode: str  # "c" on_complete, "s" on_success, "" none
    done: int = 0
    failed: int = 0
    done_ids: list[str] = field(default_factory=list)
    failed_ids: list[str] = field(default_factory=list)


class FakeFlows:
    """FakeEngine's flows."""

    jobs: dict[str, FakeJob]
    clock: FakeClock
    settings: Settings
    _router: sharding.Router
    _locks: dict[str, str]

    if TYPE_CHECKING:

        def _record(self, job: Job, queue: str, data: bytes, job_id: str, lock: str) -> FakeJob: ...

        def _enqueue(self, job: FakeJob, delay_ms: int, *, head: bool = False) -> None: ...

        def _notify(self) -> None: ...

        def _call(self, name: str) -> None: ...

    def _init_flows(self) -> None:
        self._flows: dict[str, FlowFields] = {}  # job id -> its flow fields
        self._dependents: dict[str, dict[str, None]] = {}  # job id -> the jobs waiting on it
        self._batches: dict[str, FakeBatch] = {}

    # -- storing ----------------------------------------------------------------------------

    async def dispatch_flow(self, flow: Flow, *, durable: bool | None = None) -> None:
        """As RedisEngine.dispatch_flow: every job in one queue, each ready (or delayed),
        waiting, or failed at once (a prerequisite already failed). UnknownDependency, with
        nothing stored, for a depends_on id that is no job of that queue."""
        check_flow(flow)
        check_order(flow)
        encoded = [encode_job_payload(node.job, self.settings.max_payload_bytes) for node in flow.nodes]
        for node, data in zip(flow.nodes, encoded, strict=True):
            group_of(node.job, data)  # a bad group key raises before anything is stored
        queue = self._flow_queue(flow)
        ended = {job_id: self._standing(queue, job_id) for job_id in flow.outside}
        members = sum(node.member for node in flow.nodes)
        if members:
            flow.batch_id = new_job_id()
        for node, data in zip(flow.nodes, encoded, strict=True):
            ended[node.job_id] = self._store_node(flow, node, queue, data, ended, members)
        if members:
            callback = next((node.job_id for node in flow.nodes if node.callback), "")
            self._batches[flow.batch_id] = FakeBatch(members, members, callback, flow.batch_mode)
        self._notify()

    def _flow_queue(self, flow: Flow) -> str:
        """`queue=`, else the first job's (a sharded one: the first job's shard of it, else
        its first); with depends_on, the shard holding the first prerequisite."""
        first = validate_queue(self._router.route(flow.nodes[0].job))
        queue = first
        if flow.queue is not None:
            shards = sharding.members(flow.queue)
            queue = flow.queue if len(shards) == 1 else first if first in shards else shards[0]
        if flow.outside:
            held = self.jobs.get(flow.outside[0])
            if held is not None and held.queue in sharding.members(queue):
                queue = held.queue
        return queue

    def _standing(self, queue: str, job_id: str) -> str:
        """An outside prerequisite's: done, failed, aborted or live."""
        held = self.jobs.get(job_id)
        if held is None or held.queue != queue:
            raise unknown_dependency(job_id)
        if held.state == "failed":
            return "aborted" if (held.error or {}).get("reason") == ABORTED_REASON else "failed"
        return "done" if held.state == "done" else "live"

    def _store_node(
        self, flow: Flow, node: FlowNode, queue: str, data: bytes, ended: dict[str, str], members: int
    ) -> str:
        """Store one job of the flow; return how it stands (failed or live)."""
        fields = FlowFields(
            node.prerequisites,
            run_anyway=node.run_anyway,
            delay_ms=max(node.job.effective_delay_ms, 0),
            batch_id=flow.batch_id if node.member or node.callback else "",
            member=node.member,
        )
        cause = how = ""
        for prerequisite in node.prerequisites:
            now = ended[prerequisite]
            if now == "done" or (node.run_anyway and now in ("failed", "aborted")):
                continue
            fields.pending += 1
            self._dependents.setdefault(prerequisite, {})[node.job_id] = None
            if now in ("failed", "aborted") and not cause:
                cause, how = prerequisite, now
        stored = self._record(node.job, queue, data, node.job_id, "")
        self._flows[node.job_id] = fields
        if cause:
            self._fail_waiting(stored, cause, how)
            return "failed"
        if fields.pending or (node.callback and members):
            stored.state = "waiting"
        else:
            self._enqueue(stored, fields.delay_ms)
        return "live"

    # -- a job's end (FakeEngine._finish) ---------------------------------------------------

    def _end_flow(self, job_id: str, outcome: str) -> None:
        """Job `job_id` ended ("done", "failed" or "aborted"): its batch counts it, and the
        jobs waiting on it start or fail; those failed end in turn (a queue, as finish())."""
        todo = deque([(job_id, outcome)])
        while todo:
            ended, how = todo.popleft()
            fields = self._flows.get(ended)
            if fields is not None and fields.member:
                self._end_member(ended, fields.batch_id, how, todo)
            if ended in self._dependents:
                self._end_prerequisite(ended, how, todo)

    def _end_prerequisite(self, ended: str, how: str, todo: deque[tuple[str, str]]) -> None:
        """As end_prerequisite(): a dependent failed (by another prerequisite, or aborted)
        still counts a success, so that retrying it finds its count right."""
        for dep_id in list(self._dependents[ended]):
            dep, fields = self.jobs[dep_id], self._flows[dep_id]
            if dep.state not in ("waiting", "failed"):
                continue
            if how == "done" or fields.run_anyway:
                fields.pending -= 1
                if fields.pending <= 0 and dep.state == "waiting":
                    self._release(dep)
            elif dep.state == "waiting":
                self._fail_waiting(dep, ended, how)
                todo.append((dep_id, "failed"))
        if how == "done":  # kept otherwise, for a retry to revive them
            del self._dependents[ended]

    def _end_member(self, member: str, batch_id: str, how: str, todo: deque[tuple[str, str]]) -> None:
        batch = self._batches.get(batch_id)
        if batch is None:
            return
        good = how == "done"
        ids = batch.done_ids if good else batch.failed_ids
        if good:
            batch.done += 1
        else:
            batch.failed += 1
        if len(ids) < BATCH_IDS_KEPT:
            ids.append(member)
        batch.left -= 1
        callback = self.jobs.get(batch.callback) if batch.callback else None
        if callback is None or callback.state != "waiting":
            return
        if not good and batch.mode == "s":
            self._fail_waiting(callback, member, how)
            todo.append((callback.id, "failed"))
        elif batch.left <= 0:
            self._release(callback)

    def _release(self, job: FakeJob) -> None:
        """A waiting job may start: ready now, at the tail of its line, or delayed by its delay."""
        delay_ms = self._flows[job.id].delay_ms
        job.scheduled_ms = self.clock.now_ms + delay_ms
        self._enqueue(job, delay_ms)

    def _fail_waiting(self, job: FakeJob, cause: str, how: str) -> None:
        job.state, job.error = "failed", dependency_error(cause, how)
        self._flows[job.id].failed_by = cause
        self._notify()

    # -- failed retry -----------------------------------------------------------------------

    async def failed_retry(self, ids: Iterable[str] | None = None, *, queue: str | None = None) -> int:
        """As RedisEngine.failed_retry: see failed_retry_report."""
        return (await self.failed_retry_report(ids, queue=queue)).requeued

    async def failed_retry_report(
        self, ids: Iterable[str] | None = None, *, queue: str | None = None
    ) -> RetryReport:
        """As requeue_failed.lua: failed jobs (the given ids, else every one, oldest
        dispatched first) get fresh attempts and are ready again, or waiting when a
        prerequisite is not done yet; the jobs their failure failed wait again. Skipped: a
        unique job whose key a live job holds (`held`), a flow job whose prerequisite is
        still failed (`blocked`)."""
        self._call("failed_retry")
        shards = None if queue is None else set(sharding.members(validate_queue(queue)))
        wanted = list(self.jobs) if ids is None else [validate_job_id(i) for i in ids]
        report = RetryReport()
        for job_id in wanted:
            job = self.jobs.get(job_id)
            if job is not None and job.state == "failed" and (shards is None or job.queue in shards):
                self._requeue(job, report)
        self._notify()
        return report

    def _requeue(self, job: FakeJob, report: RetryReport) -> None:
        holder = self._lock_holder(job)
        waits_on = "" if holder else self._failed_prerequisite(job.id)
        if holder:
            report.held[job.id] = holder
        elif waits_on:
            report.blocked[job.id] = waits_on
        else:
            if job.lock:
                self._locks[job.lock] = job.id
            job.attempts = job.stalls = job.throttles = 0
            self._restart(job)
            self._reopen_batch(job)
            self._revive_dependents(job.id)
            report.requeued += 1

    def _lock_holder(self, job: FakeJob) -> str:
        holder = self._locks.get(job.lock, "") if job.lock else ""
        live = holder and holder != job.id and self.jobs[holder].state in LIVE
        return holder if live else ""

    def _failed_prerequisite(self, job_id: str) -> str:
        """A prerequisite of the job (or the batch member that failed it; or, for an
        on_success callback, a member) still failed."""
        fields = self._flows.get(job_id)
        for other in (*fields.prerequisites, fields.failed_by) if fields is not None else ():
            held = self.jobs.get(other) if other else None
            if held is not None and held.state == "failed":
                return other
        batch = self._callback_batch(job_id)
        return batch.failed_ids[0] if batch is not None and batch.mode == "s" and batch.failed_ids else ""

    def _callback_batch(self, job_id: str) -> FakeBatch | None:
        """The batch whose callback `job_id` is."""
        fields = self._flows.get(job_id)
        if fields is None or fields.member or not fields.batch_id:
            return None
        return self._batches.get(fields.batch_id)

    def _restart(self, job: FakeJob) -> None:
        """Out of the failed set: waiting (prerequisites left, or the callback of a batch
        still open), or ready."""
        fields = self._flows.get(job.id)
        if fields is not None:
            fields.failed_by = ""
        batch = self._callback_batch(job.id)
        if (fields is not None and fields.pending > 0) or (batch is not None and batch.left > 0):
            job.state = "waiting"
        else:
            job.scheduled_ms = self.clock.now_ms
            self._enqueue(job, 0)

    def _reopen_batch(self, job: FakeJob) -> None:
        """A batch member requeued: an open batch takes its failure back (and an on_success
        callback it failed waits again); a closed one lets it run on its own."""
        fields = self._flows.get(job.id)
        batch = self._batches.get(fields.batch_id) if fields is not None and fields.member else None
        if fields is None or batch is None:
            return
        callback = self._failed_by_a_member(batch)
        if batch.left <= 0 and callback is None:
            fields.member, fields.batch_id = False, ""
            return
        if job.id in batch.failed_ids:
            batch.failed_ids.remove(job.id)
        batch.failed -= 1
        batch.left += 1
        if callback is not None and batch.failed <= 0:
            self._flows[callback.id].failed_by = ""
            callback.state = "waiting"

    def _failed_by_a_member(self, batch: FakeBatch) -> FakeJob | None:
        """The batch's on_success callback, when a failed member failed it."""
        callback = self.jobs.get(batch.callback) if batch.callback else None
        if callback is None or callback.state != "failed" or not self._flows[callback.id].failed_by:
            return None
        return callback

    def _revive_dependents(self, job_id: str) -> None:
        """The jobs whose failure came from `job_id` wait again (or start), and theirs after
        them, unless another of their prerequisites is still failed. A job that runs anyway
        and still waits counted the failure as an end: it waits for this one's end again."""
        todo = deque([job_id])
        while todo:
            ended = todo.popleft()
            for dep_id in list(self._dependents.get(ended, ())):
                dep, fields = self.jobs[dep_id], self._flows[dep_id]
                if dep.state == "waiting" and fields.run_anyway:
                    fields.pending += 1
                if dep.state != "failed" or fields.failed_by != ended:
                    continue
                other = self._failed_prerequisite(dep_id)
                if other:
                    fields.failed_by = other
                else:
                    self._restart(dep)
                    todo.append(dep_id)

    # -- reading ----------------------------------------------------------------------------

    async def flow_fields(self, queue: str, job_id: str) -> tuple[list[str], str]:
        """A flow job's prerequisites (ids) and batch id ("" none)."""
        fields = self._flows.get(job_id)
        return ([], "") if fields is None else (list(fields.prerequisites), fields.batch_id)

    async def batch_result(self, queue: str, batch_id: str) -> BatchResult:
        """Where batch `batch_id` stands (the fake keeps every batch); JobNotFound when unknown."""
        batch = self._batches.get(validate_job_id(batch_id))
        if batch is None:
            raise JobNotFound(f"batch {batch_id} in queue {queue}: unknown")
        return BatchResult(
            batch_id,
            batch.total,
            max(batch.left, 0),
            batch.done,
            batch.failed,
            list(batch.done_ids),
            list(batch.failed_ids),
        )

    async def kept_result(self, queue: str, job_id: str) -> tuple[bool, Any]:
        """(True, value) when the job is done and its result still kept; else (False, None)."""
        held = self.jobs.get(validate_job_id(job_id))
        if held is None or held.state != "done" or held.result is None:
            return False, None
        if self.clock.now_ms >= held.result_until_ms:
            return False, None
        return True, orjson.loads(held.result)
