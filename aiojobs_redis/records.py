"""Plain data that crosses between the engine and the worker or the user."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from .boundary import text
from .errors import MalformedJob
from .keys import FORMAT_VERSION, INLINE_TAG, JOB_FIELDS, RETRIED, SUCCEEDED, QueueKeys

_VERSION_END = b":"  # after the version, in an inline record of version 2 or later


def inline_prefix(job_id: str) -> tuple[bytes, ...]:
    """How the queue list entry of a job waiting inline (see keys.py) may begin: one way for
    each format version this code reads (for `bytes.startswith`).
    """
    head = job_id.encode("ascii") + b" "
    versioned = (INLINE_TAG + str(v).encode() + _VERSION_END + head for v in range(2, FORMAT_VERSION + 1))
    return (INLINE_TAG + head, *versioned)


def inline_version(entry: bytes) -> tuple[int, int]:
    """The format version of an inline record, and where its fields begin (version 1: 0.1's
    records, with no version written).
    """
    start = len(INLINE_TAG)
    end = entry.find(_VERSION_END, start, start + 10)
    if end > start and entry[start:end].isdigit():  # bytes: ASCII digits only
        return min(int(entry[start:end]), 999), end + 1  # as the scripts read it (keys.py)
    return 1, start


def parse_inline(entry: bytes) -> tuple[str, str, int, int, bytes] | None:
    """(id, name, max attempts, created ms, payload) of an inline record; None if malformed
    or of a newer format version than this code reads.
    """
    if not entry.startswith(INLINE_TAG):
        return None
    version, start = inline_version(entry)
    if version > FORMAT_VERSION:
        return None
    parts = entry[start:].split(b" ", 4)
    if len(parts) != 5 or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    try:
        return parts[0].decode("ascii"), parts[1].decode("ascii"), int(parts[2]), int(parts[3]), parts[4]
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker holds a lease on. `payload` is still encoded JSON."""

    queue: str
    id: str
    token: str
    name: bytes
    payload: bytes = field(repr=False)  # may hold secrets
    attempts_used: int
    max_attempts: int
    runs: int

    @property
    def attempt(self) -> int:
        """1 on the first try, 2 on the first retry, ..."""
        return self.attempts_used + 1


class Quarantined(NamedTuple):
    """A malformed record a claim found and moved aside; `moved_to` says where."""

    job_id: str  # "" when the queue key itself was not a list
    reason: str
    moved_to: str

    def describe(self, queue: str) -> str:
        if not self.job_id and ":bad:queue" not in self.moved_to:
            return f"queue {queue}: a key of it held another type than expected: renamed to {self.moved_to}"
        if not self.job_id:
            return f"queue {queue}: its key held another type than a list: renamed to {self.moved_to}"
        return f"job {self.job_id} in queue {queue} is malformed ({self.reason}): moved to {self.moved_to}"


@dataclass(frozen=True, slots=True)
class Claim:
    jobs: list[ClaimedJob]
    quarantined: list[Quarantined]  # malformed records moved aside
    next_due_ms: int  # ms until the earliest delayed job is due, -1 when there is none
    more: bool  # ready jobs remain
    paused: bool = False  # the queue is paused: nothing was claimed (flow.py)
    wait_ms: int = -1  # a limit held jobs back: claim from this queue again after this long


def parse_claim(keys: QueueKeys, reply: Any) -> Claim:
    """claim.lua's reply: the jobs claimed, the records moved aside, when the next is due."""
    flat, bad, next_due, more, _newer, paused, wait_ms = reply
    jobs = [
        ClaimedJob(
            queue=keys.queue,
            id=flat[i].decode(),
            token=flat[i + 1].decode(),
            name=flat[i + 2],
            payload=flat[i + 3],
            attempts_used=int(flat[i + 4]),
            max_attempts=int(flat[i + 5]),
            runs=int(flat[i + 6]),
        )
        for i in range(0, len(flat), 7)
    ]
    quarantined = [_quarantined(keys, text(bad[i]), text(bad[i + 1])) for i in range(0, len(bad), 2)]
    return Claim(jobs, quarantined, int(next_due), bool(more), bool(paused), int(wait_ms))


def _quarantined(keys: QueueKeys, job_id: str, reason: str) -> Quarantined:
    if job_id == keys.ready or job_id.startswith(keys.ready + ":p"):
        # The queue key (or a priority level's) itself, renamed aside: see claim.lua.
        return Quarantined("", reason, keys.bad_queue + job_id[len(keys.ready) :])
    if job_id.startswith(keys.base + ":"):
        # Another key of the queue's (a rate group's list, its ring...), renamed aside to
        # <base>:bad:<its suffix>; a job id has no ':'.
        return Quarantined("", reason, f"{keys.base}:bad:{job_id[len(keys.base) + 1 :]}")
    return Quarantined(job_id, reason, keys.failed)


@dataclass(frozen=True, slots=True)
class Reaped:
    requeued: list[str]
    failed: list[str]  # stalled too often, or dangling
    trimmed: int  # failed records dropped by retention


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    ready: int
    delayed: int
    running: int
    failed: int
    failed_dropped: int = 0  # failed jobs dropped by retention (failed_ttl_ms, failed_max), in all
    paused: bool = False  # the queue is paused: workers start none of its jobs (flow.py)
    waiting: int = 0  # jobs of flows waiting for their prerequisites (workflows.py)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job record as stored, with readable field names. The payload is left out unless asked."""

    id: str
    queue: str
    name: str | None
    state: str | None
    attempts: int
    max_attempts: int | None
    runs: int
    stalls: int
    created_ms: int | None
    scheduled_ms: int | None
    finished_ms: int | None
    worker: str | None
    error: dict[str, Any] | None
    payload: Any = field(default=None, repr=False)
    format_version: int = 1  # of the record as stored; 1 for one written by 0.1
    started_ms: int | None = None  # when its last run began; None if never run (or stored before)
    progress: Any = None  # what the job last gave set_progress(), if anything
    priority: int = 0  # its priority level (higher runs sooner; see claim.lua)
    # Of a job of a flow (workflows.py); its dependents are not in its record (see flow_links).
    prerequisites: tuple[str, ...] = ()  # the ids of the jobs it waits for
    prerequisites_pending: int = 0  # those not done yet
    batch: str | None = None  # the batch it is a member or the callback of
    failed_by: str | None = None  # the prerequisite whose failure (or abort) failed it
    run_on_dependency_failure: bool = False  # it starts even if a prerequisite fails

    @classmethod
    def from_hash(
        cls, queue: str, job_id: str, raw: dict[bytes, bytes], with_payload: bool = False
    ) -> JobInfo:
        fields = {JOB_FIELDS.get(k.decode("ascii", "replace"), "?"): v for k, v in raw.items()}

        def text(name: str) -> str | None:
            value = fields.get(name)
            return None if value is None else value.decode("utf-8", "replace")

        def number(name: str) -> int | None:
            value = fields.get(name)
            try:
                return None if value is None else int(value)
            except ValueError:
                return None

        error: dict[str, Any] | None = None
        if (raw_error := fields.get("error")) is not None:
            try:
                error = orjson.loads(raw_error)
            except orjson.JSONDecodeError:
                error = {"reason": "malformed", "message": text("error")}
        payload = None
        if with_payload and (raw_payload := fields.get("payload")) is not None:
            try:
                payload = orjson.loads(raw_payload)
            except orjson.JSONDecodeError as exc:
                raise MalformedJob(f"job {job_id}: payload is not valid JSON") from exc
        return cls(
            id=job_id,
            queue=text("queue") or queue,
            name=text("name"),
            state=text("state"),
            attempts=number("attempts") or 0,
            max_attempts=number("max_attempts"),
            runs=number("runs") or 0,
            stalls=number("stalls") or 0,
            created_ms=number("created_ms"),
            scheduled_ms=number("scheduled_ms"),
            finished_ms=number("finished_ms"),
            worker=text("worker"),
            error=error,
            payload=payload,
            format_version=number("format_version") or 1,
            started_ms=number("started_ms"),
            progress=_json_or_text(fields.get("progress")),
            priority=number("priority") or 0,
            prerequisites=tuple((text("prerequisites") or "").split()),
            prerequisites_pending=max(number("prerequisites_pending") or 0, 0),
            batch=text("batch") or None,
            failed_by=text("failed_by") or None,
            run_on_dependency_failure=text("on_dependency_failure") == "r",
        )

    @classmethod
    def from_inline(
        cls, queue: str, entry: bytes, with_payload: bool = False, *, priority: int = 0
    ) -> JobInfo | None:
        """A job waiting inline in a ready list (no hash yet): ready, never run; `priority`
        is the level of the list it waits in."""
        parsed = parse_inline(entry)
        if parsed is None:
            return None
        version, _ = inline_version(entry)
        job_id, name, max_attempts, created_ms, raw_payload = parsed
        payload = None
        if with_payload:
            try:
                payload = orjson.loads(raw_payload)
            except orjson.JSONDecodeError as exc:
                raise MalformedJob(f"job {job_id}: payload is not valid JSON") from exc
        return cls(
            id=job_id,
            queue=queue,
            name=name,
            state="ready",
            attempts=0,
            max_attempts=max_attempts,
            runs=0,
            stalls=0,
            created_ms=created_ms,
            scheduled_ms=created_ms,
            finished_ms=None,
            worker=None,
            error=None,
            payload=payload,
            format_version=version,
            priority=priority,
        )


@dataclass(frozen=True, slots=True)
class LeasedJob:
    """A job in a running set: who holds its lease, and until when (Redis's clock)."""

    queue: str
    id: str
    name: str | None
    worker: str | None
    attempts: int  # attempts used up (failed runs) before this one
    max_attempts: int
    runs: int
    lease_deadline_ms: int


# -- telemetry: what workers record and the dashboard reads (see events.py) ------------------


@dataclass(frozen=True, slots=True)
class Event:
    queue: str
    entry_id: str  # the stream entry id: Redis's time in ms, then a sequence number
    at_ms: int
    kind: str
    job_id: str
    name: str
    worker: str
    attempt: int
    duration_ms: float | None
    error: str


@dataclass(frozen=True, slots=True)
class RunningJob:
    queue: str
    id: str
    name: str
    started_ms: int  # Redis's clock


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    started_ms: int
    seen_ms: int
    counters: dict[str, int]
    running: list[RunningJob] = field(default_factory=list)
    format_version: int | None = None  # the data format it writes; None: 0.1's (none said)


@dataclass(frozen=True, slots=True)
class Throughput:
    """Runs per minute, oldest first, for the minutes `start_minute` .. `start_minute + len - 1`.

    `failed`: runs after which the job failed for good (it entered the failed set), `retried`:
    failed runs that were retried. Counts written by 0.1's workers hold both under `failed`.
    """

    start_minute: int
    succeeded: list[int]
    failed: list[int]
    retried: list[int] = field(default_factory=list)

    def of(self, kind: str) -> list[int]:
        """The series of a kind (keys.SUCCEEDED, FAILED or RETRIED)."""
        return {SUCCEEDED: self.succeeded, RETRIED: self.retried}.get(kind, self.failed)


def _json_or_text(raw: bytes | None) -> Any:
    """A stored JSON value (progress), or its text if it is not JSON."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
