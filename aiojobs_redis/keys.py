"""Every Redis key name the engine uses.

All keys of one queue share the hash tag ``{queue}`` so that each Lua script touches a
single Cluster slot. The layout under prefix ``jobs:`` and queue ``payments``::

    jobs:{payments}:queue      list  claimable now, FIFO (RPUSH at the tail, LPOP at the head);
                                     each entry an inline record or a job id (see below)
    jobs:{payments}:delayed    zset  id -> due time (ms); moved to queue by promote
    jobs:{payments}:running    zset  id -> lease deadline (ms)
    jobs:{payments}:failed     zset  id -> time of failure (ms)
    jobs:{payments}:dropped    str   failed jobs the retention (failed_ttl_ms, failed_max) has
                                     dropped from the failed set so far, in all (reap.lua)
    jobs:{payments}:wake       list  a token that wakes one idle worker
    jobs:{payments}:queue:p<N> list  claimable now at priority level N (-10..10, not 0), as the
                                     queue list; level 0 is the queue list itself
    jobs:{payments}:levels     zset  N -> N for each level whose list has jobs (claim.lua)
    jobs:{payments}:meta       hash  the queue's controls: paused, rate (µs between starts),
                                     burst, maxrun, per rate group grate, gburst, gmaxrun, and
                                     o:<field> overrides set at run time (queue_ctl.lua,
                                     flow.py); hold (ms: no start before, set by throttle.lua
                                     for a job without a group); absent on a plain queue
    jobs:{payments}:rl         str   the start rate's theoretical arrival time (µs; claim.lua)
    jobs:{payments}:g:<group>  list  claimable jobs of rate group <group> (inline records or
                                     ids, as the queue list); see claim.lua
    jobs:{payments}:ring       list  groups with claimable jobs and no limit holding them:
                                     claim.lua takes one job per group per turn, rotating it
    jobs:{payments}:gwait      zset  group -> when (ms) a limit lets it start jobs again
    jobs:{payments}:grl:<group> str  the group's start rate's theoretical arrival time (µs)
    jobs:{payments}:gst        hash  group -> jobs of it running now
    jobs:{payments}:aborted    zset  "<id> <token>" of a run aborted while running -> when (ms);
                                     its worker looks for its runs here and cancels them
                                     (abort.lua; marks older than ABORT_MARK_MS are trimmed)
    jobs:{payments}:j:<id>     hash  the job record (fields in JOB_FIELDS)
    jobs:{payments}:waiting    zset  id -> created ms of each job waiting for its prerequisites
                                     (a chain's later steps, a batch's callback, depends_on)
    jobs:{payments}:dep:<id>   set   the jobs that wait for job <id> (its record has F letter d)
    jobs:{payments}:batch:<b>  hash  batch <b>: n members, left (not ended), ok / ko (ended
                                     done / failed), cb (its callback's id), mode, ttl; with the
                                     lists batch:<b>:ok / :ko of the first 1,000 ids of each
                                     (expire failed_ttl_ms after the last member ends)
    jobs:{payments}:bad:<id>   any   a malformed record moved aside
    jobs:{payments}:bad:queue  any   a queue key of another type than list, moved aside (a level's
                                     list: bad:queue:p<N>)
    jobs:{payments}:claim:<w>  str   worker w's last claim, so a replayed claim is answered again
    jobs:{payments}:r:<id>     str   the result JSON of a finished job whose class keeps results
                                     (keep_result), until that time passes (results.py)
    jobs:{payments}:n:<id>     stream one entry when such a job ends (done or failed), for
                                     whoever waits on its result (XREAD BLOCK); expires soon
    jobs:{payments}:dd:<id>    str   a dispatch call already ran (<id>: its first job), until the
                                     replay guard passes (a flow's: until its call's deadline),
                                     so a replayed call pushes nothing
    jobs:queues                set   every queue name ever used under this prefix
    jobs:format                str   the newest data format version written under this prefix

Telemetry (written by workers, read by the dashboard; see events.py and telemetry_store.py)::

    jobs:{payments}:events     stream  one entry per job event, capped near the worker's
                                       `events_max` (XADD MAXLEN ~); its one field, `event`, is
                                       JSON: kind, at (ms, Redis's clock), id, job, worker,
                                       attempt, ms (handle() run time), error (a one-line summary)
    jobs:{payments}:tp         hash    "<minute>:s" / "<minute>:f" / "<minute>:r" -> runs that
                                       succeeded / failed for good / failed and were retried in
                                       that minute (minutes since the epoch, Redis's clock; 0.1
                                       counted retried runs under "f"); fields older than 24 h
                                       are trimmed, and the key expires 25 h after its last
                                       write; built and read only by throughput_field and
                                       parse_throughput_field
    jobs:{payments}:totals     hash    s / f / r -> the same counts since the totals began (no
                                       expiry; written with the minute counts)
    jobs:workers               zset    worker id -> when its heartbeat lapses (ms)
    jobs:worker:<id>           string  the worker's heartbeat (JSON: host, pid, queues, counters,
                                       the jobs it runs and since when); expires with it

An entry of the ``queue`` list is either

* an inline record: a job dispatched to run now, with no key of its own while it waits.
  ``INLINE_TAG``, the format version and ``:``, then id, name, max attempts and created ms,
  separated by single spaces (none of them can hold a space), then the payload JSON, raw,
  up to the end of the entry; claim.lua turns it into the job hash of a running job. 0.1
  wrote no version and no ``:`` (an id cannot hold one): such a record is version 1; or
* a job id whose hash exists: a job retried, released, reaped, promoted from the delayed
  set or requeued from the failed set.

An id never starts with ``INLINE_TAG``, so the first byte tells them apart.

The data format has a version, FORMAT_VERSION: every record written (an inline record, and
the field ``v`` of a job hash) carries it, and the ``format`` key holds the newest version
any engine has written under the prefix (it is never lowered). A record without one was
written by 0.1: version 1. The scripts leave a record of a newer version untouched; an
engine that meets one stops claiming, promoting and reaping in that queue, and one that finds
a newer ``format`` key does so under the whole prefix (see versioning.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigurationError, InvalidJobId, InvalidQueueName

# A queue name, or one shard of a sharded queue: "payments#3" (see sharding.py).
_QUEUE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}(#[0-9]{1,4})?")
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:\-]{0,64}")

# The data format these scripts read and write. 1: 0.1, whose records carry no version.
# 2: records carry their version (inline "!2:<id> ...", hash field v). Raise it whenever a
# record or key changes in a way an older version would misread.
# The rule every later format keeps, so that this release sees its data as too new (and
# leaves it alone) rather than as malformed (and fails it): a job key stays a hash whose
# field v starts with the version's decimal digits, and an entry of a queue list (or of the
# running set) stays either a job id or a record tagged "!N:", N the version in decimal
# digits, whatever follows the tag. The format key stays a string of decimal digits.
FORMAT_VERSION = 2

# Job hash fields. Single letters keep a queued job's record small (see benchmarks, W4).
MIN_PRIORITY, MAX_PRIORITY = -10, 10  # priority levels (higher runs sooner); 0 is the queue list

JOB_FIELDS = {
    "n": "name",
    "q": "queue",
    "p": "payload",
    "s": "state",
    "m": "max_attempts",
    "a": "attempts",  # attempts used up (failed runs)
    "k": "runs",  # times claimed; with the worker it makes the lease token
    "l": "stalls",  # leases that lapsed (the worker died or hung)
    "c": "created_ms",
    "d": "scheduled_ms",
    "b": "started_ms",  # when the last run began (its claim); missing in records older than it
    "f": "finished_ms",
    "t": "token",
    "x": "last_step",  # "<step> <token>": the last ack/retry/fail/release, to answer replays
    "w": "worker",
    "e": "error",
    "o": "priority",  # its level when not 0: where a retried or handed back job goes
    "g": "group",  # its rate group: where a retried or handed back job goes; counted in gst
    "h": "throttles",  # times handle() raised RateLimited (throttle.lua), no attempt used
    "G": "progress",  # JSON the running job last set with set_progress()
    "r": "raw_entry",  # a queue entry that could not be read, kept by its quarantine record
    "v": "format_version",  # of the record; missing in records written by 0.1 (version 1)
    # Flows (workflows.py; the prelude's "Flows"):
    "P": "prerequisites",  # ids, space-separated
    "D": "prerequisites_pending",  # not done yet
    "E": "prerequisites_counted",  # ended and counted (each once), space-separated
    "M": "on_dependency_failure",  # "r": run anyway
    "Y": "delay_after_prerequisites",  # ms
    "B": "batch",  # the batch of a member or a callback
    "W": "failed_by",  # the prerequisite whose failure failed it
}

JOB_FIELD = {name: letter for letter, name in JOB_FIELDS.items()}  # "error" -> "e"

INLINE_TAG = b"!"  # the first byte of an inline record in the queue list (see above)


def validate_queue(name: object) -> str:
    if not isinstance(name, str) or _QUEUE_RE.fullmatch(name) is None:
        raise InvalidQueueName(f"invalid queue name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    return name


def is_valid_queue(name: object) -> bool:
    return isinstance(name, str) and _QUEUE_RE.fullmatch(name) is not None


def validate_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or _JOB_ID_RE.fullmatch(job_id) is None:
        raise InvalidJobId(f"invalid job id {job_id!r}")
    return job_id


def validate_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or _PREFIX_RE.fullmatch(prefix) is None:
        raise ConfigurationError(
            f"invalid key prefix {prefix!r}: use up to 64 letters, digits, '_', '-', '.' or ':'"
        )
    return prefix


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue. Build with `QueueKeys.of(prefix, queue)`."""

    queue: str
    base: str
    ready: str
    delayed: str
    running: str
    failed: str
    dropped: str
    wake: str
    job_prefix: str

    @classmethod
    def of(cls, prefix: str, queue: str) -> QueueKeys:
        base = f"{prefix}{{{validate_queue(queue)}}}"
        return cls(
            queue=queue,
            base=base,
            ready=f"{base}:queue",
            delayed=f"{base}:delayed",
            running=f"{base}:running",
            failed=f"{base}:failed",
            dropped=f"{base}:dropped",
            wake=f"{base}:wake",
            job_prefix=f"{base}:j:",
        )

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def result(self, job_id: str) -> str:
        """A kept result (keep_result)."""
        return f"{self.base}:r:{job_id}"

    def ended(self, job_id: str) -> str:
        """The stream a waiter on a kept result blocks on."""
        return f"{self.base}:n:{job_id}"

    @property
    def aborted(self) -> str:
        """Runs aborted while running, as "<id> <token>" (abort.lua): their workers cancel them."""
        return f"{self.base}:aborted"

    @property
    def schedule_state(self) -> str:
        """Hash: each schedule's last tick, last run, skipped counts; _seen (schedules.py)."""
        return f"{self.base}:cron"

    @property
    def schedule_defs(self) -> str:
        """Hash: schedule id -> its definition as JSON, written by the workers declaring it."""
        return f"{self.base}:sched"

    @property
    def meta(self) -> str:
        """Hash: the queue's controls (paused, limits); see flow.py and claim.lua."""
        return f"{self.base}:meta"

    @property
    def waiting(self) -> str:
        """Zset: jobs waiting for their prerequisites (a flow) -> created ms."""
        return f"{self.base}:waiting"

    def dependents(self, job_id: str) -> str:
        """Set: the jobs that wait for job `job_id` (dispatch_flow.lua)."""
        return f"{self.base}:dep:{job_id}"

    def batch(self, batch_id: str) -> str:
        """Hash: a batch's counts and callback; with lists <key>:ok and <key>:ko of ids."""
        return f"{self.base}:batch:{batch_id}"

    def level(self, priority: int) -> str:
        """The list of ready jobs at a priority level other than 0 (claim.lua)."""
        return f"{self.ready}:p{priority}"

    @property
    def levels(self) -> str:
        """Zset: the priority levels whose lists hold jobs."""
        return f"{self.base}:levels"

    def group(self, group: str) -> str:
        """The list of claimable jobs of a rate group (claim.lua)."""
        return f"{self.base}:g:{group}"

    @property
    def ring(self) -> str:
        """List: the rate groups with claimable jobs that no limit holds, in turn order."""
        return f"{self.base}:ring"

    @property
    def group_wait(self) -> str:
        """Zset: rate groups a limit holds -> when (ms) to look at them again."""
        return f"{self.base}:gwait"

    @property
    def group_running(self) -> str:
        """Hash: rate group -> how many of its jobs run now."""
        return f"{self.base}:gst"

    def group_rate(self, group: str) -> str:
        """A rate group's GCRA theoretical arrival time (µs)."""
        return f"{self.base}:grl:{group}"

    @property
    def bad_queue(self) -> str:
        """Where claim.lua renames a queue key of another type than a list."""
        return f"{self.base}:bad:queue"

    def claim_receipt(self, worker_id: str) -> str:
        return f"{self.base}:claim:{worker_id}"

    @property
    def events(self) -> str:
        """The queue's stream of job events (telemetry)."""
        return f"{self.base}:events"

    @property
    def throughput(self) -> str:
        """The queue's runs per minute (telemetry)."""
        return f"{self.base}:tp"

    @property
    def totals(self) -> str:
        """The queue's runs since its totals began (telemetry)."""
        return f"{self.base}:totals"


def queues_key(prefix: str) -> str:
    return f"{prefix}queues"


def workers_key(prefix: str) -> str:
    """Alive workers: worker id -> when its heartbeat lapses (ms)."""
    return f"{prefix}workers"


def worker_key(prefix: str, worker_id: str) -> str:
    """A worker's heartbeat record."""
    return f"{prefix}worker:{worker_id}"


def format_key(prefix: str) -> str:
    return f"{prefix}format"


# How a run ended, as counted in the throughput and totals hashes.
SUCCEEDED, FAILED, RETRIED = "s", "f", "r"


def throughput_field(minute: int, kind: str) -> str:
    """A field of a queue's throughput hash: "<minute>:<kind>", kind SUCCEEDED, FAILED or RETRIED."""
    return f"{minute}:{kind}"


def parse_throughput_field(field: bytes) -> tuple[int, str] | None:
    """(minute, kind) of a throughput hash field; None if it names no minute (not ours).

    Any suffix other than "s" or "r" counts as failed, as it always has (older readers count
    "r" as failed too, as 0.1 counted retried runs).
    """
    minute, _, kind = field.decode("ascii", "replace").partition(":")
    try:
        return int(minute), kind if kind in (SUCCEEDED, RETRIED) else FAILED
    except ValueError:
        return None
