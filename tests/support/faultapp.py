"""Jobs used by the worker-process tests. Each run is written to a ledger file per process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio

from aiojobs_redis import Job


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
