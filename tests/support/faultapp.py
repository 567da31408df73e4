"""Jobs used by the worker-process tests. Each run is written to a ledger file per process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import orjson

from aiojobs_redis import Job, PermanentFailure


def record(ledger_dir: str, job: Job, event: str) -> None:
    line = f"{job.id} {job.attempt} {os.getpid()} {event} {time.time():.6f}\n"
    with open(Path(ledger_dir) / f"{os.getpid()}.log", "a") as f:
        f.write(line)


def previous_starts(ledger_dir: str, job_id: str) -> int:
    count = 0
    for path in Path(ledger_dir).glob("*.log"):
        count += sum(
            1 for line in path.read_text().splitlines() if line.startswith(f"{job_id} ") and " start " in line
        )
    return count


class Record(Job):
    """Sleeps payload["sleep"] seconds and records start and end."""

    name = "faultapp.Record"
    queue = "faults"

    async def handle(self) -> None:
        record(self.payload["ledger"], self, "start")
        await anyio.sleep(self.payload.get("sleep", 0))
        record(self.payload["ledger"], self, "end")


class HangsFirstTime(Job):
    """Hangs on its first run (so the worker can be killed mid-job), then finishes."""

    name = "faultapp.HangsFirstTime"
    queue = "faults"

    async def handle(self) -> None:
        first = previous_starts(self.payload["ledger"], str(self.id)) == 0
        record(self.payload["ledger"], self, "start")
        if first:
            await anyio.sleep(3600)
        record(self.payload["ledger"], self, "end")


class AlwaysFails(Job):
    name = "faultapp.AlwaysFails"
    queue = "faults"
    attempts = 3

    async def handle(self) -> None:
        record(self.payload["ledger"], self, "start")
        raise RuntimeError("this job always fails")


class Chain(Job):
    """Dispatches a follow-up Record job from inside handle()."""

    name = "faultapp.Chain"
    queue = "faults"

    async def handle(self) -> None:
        await Record().dispatch({"ledger": self.payload["ledger"], "after": self.id})


class KillsItsWorker(Job):
    """Kills the process running it, every time: the lease lapses, the job comes back."""

    name = "faultapp.KillsItsWorker"
    queue = "faults"

    async def handle(self) -> None:
        record(self.payload["ledger"], self, "start")
        os.kill(os.getpid(), 9)


class BlocksTheLoop(Job):
    """On its first run blocks the whole event loop (no renewals) for payload["block"] seconds."""

    name = "faultapp.BlocksTheLoop"
    queue = "faults"

    async def handle(self) -> None:
        first = previous_starts(self.payload["ledger"], str(self.id)) == 0
        record(self.payload["ledger"], self, "start")
        if first:
            time.sleep(self.payload["block"])
        record(self.payload["ledger"], self, "end")


class FailsSlowly(Job):
    """Always fails, three attempts, retried after 0.3 s, 0.6 s."""

    name = "faultapp.FailsSlowly"
    queue = "faults"
    attempts = 3
    retry_after = 0.3
    backoff = 2.0

    async def handle(self) -> None:
        record(self.payload["ledger"], self, "start")
        raise ValueError(f"bad input {self.payload.get('n')}")


class Noop(Job):
    name = "faultapp.Noop"
    queue = "faults"

    async def handle(self) -> None:
        return None


class WaitsToBeAborted(Job):
    """Runs for an hour unless cancelled; records start, and "cancelled" when it is."""

    name = "faultapp.WaitsToBeAborted"
    queue = "faults"

    async def handle(self) -> None:
        record(self.payload["ledger"], self, "start")
        try:
            await anyio.sleep(3600)
        except anyio.get_cancelled_exc_class():
            record(self.payload["ledger"], self, "cancelled")
            raise
        record(self.payload["ledger"], self, "end")


class GroupRecord(Record):
    """Record, in the rate group payload["g"]."""

    name = "faultapp.GroupRecord"
    group = "{g}"


class GroupHangsFirstTime(HangsFirstTime):
    """HangsFirstTime, in the rate group payload["g"]."""

    name = "faultapp.GroupHangsFirstTime"
    group = "{g}"


class BatchMember(Job):
    """Sleeps payload["sleep"] seconds, then succeeds, or fails for good when payload["fail"]
    (recorded as "end" or "failed"). Keeps its result, so a done member leaves a trace."""

    name = "faultapp.BatchMember"
    queue = "faults"
    keep_result = "+1 hour"

    async def handle(self) -> int:
        record(self.payload["ledger"], self, "start")
        await anyio.sleep(self.payload.get("sleep", 0))
        if self.payload.get("fail"):
            record(self.payload["ledger"], self, "failed")
            raise PermanentFailure("failed on purpose")
        record(self.payload["ledger"], self, "end")
        return int(self.payload.get("n", 0))


class BatchReport(Job):
    """A batch's callback: records its start, and what batch_result() said in
    callback-<pid>-<n>.json next to the ledger."""

    name = "faultapp.BatchReport"
    queue = "faults"

    async def handle(self) -> None:
        record(self.payload["ledger"], self, "start")
        result = await self.batch_result()
        seen = {
            "id": self.id,
            "batch_id": result.batch_id,
            "total": result.total,
            "pending": result.pending,
            "done": result.done,
            "failed": result.failed,
            "done_ids": result.done_ids,
            "failed_ids": result.failed_ids,
        }
        path = Path(self.payload["ledger"]) / f"callback-{os.getpid()}-{time.monotonic_ns()}.json"
        path.write_bytes(orjson.dumps(seen))
        record(self.payload["ledger"], self, "end")


class FailsForGood(Job):
    """Fails for good at once (a chain's first step)."""

    name = "faultapp.FailsForGood"
    queue = "faults"

    async def handle(self) -> None:
        record(self.payload["ledger"], self, "start")
        raise PermanentFailure("failed on purpose")
