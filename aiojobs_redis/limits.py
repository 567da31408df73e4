"""Queue-wide limits on job starts, declared once next to the jobs, like a ShardedQueue::

    EMAILS = QueueLimits("emails", rate="100/second", burst=20, max_running=50)

* `rate` limits how many jobs of the queue start, across every worker: at most
  rate * W + burst over any span of W seconds (a GCRA in claim.lua, no window edge).
  "N/second", "N/minute", "N/hour" (or "N/s", "N/min", "N/h"), or a number per second.
* `burst` is how many may start at once after a quiet spell (default 1; needs a rate).
* `max_running` caps the jobs of the queue running at once across all workers; a crashed
  worker's slots come back when the reaper takes its jobs back (lease + reap interval).
* `group_rate`, `group_burst`, `group_max_running` are the same for every group of a
  grouped queue; they are stored with the others for the claim of grouped queues.

A limited job is never claimed: no lease, no run, no attempt used; it keeps its place.

Workers serving the queue write the declaration into the queue's control hash
(``jobs:{q}:meta``: `rate` as µs between starts, `burst`, `maxrun`, `grate`, `gburst`,
`gmaxrun`) when they start, with `v`, the sha1 of what they write, so that it is rewritten
only when it changed; a limit the declaration leaves out is cleared. A worker that serves the
queue with no declaration leaves the hash alone: it cannot tell a limit removed from the code
from one declared in a module it does not import, and dropping a limit by accident is the
worse mistake. Declare ``QueueLimits("emails")`` (no limits) to clear them, or run
``aiojobs-redis limits clear emails --declared``.

Overrides set at run time (``aiojobs-redis limits set``) are the ``o:<field>`` fields and win
over the code until cleared; '0' there lifts that limit.

A sharded queue (sharding.py) is served as the queue itself and its shards, each with its own
limiter (one Cluster slot each): the rate, burst and max_running are divided evenly among them,
so the total never exceeds the declaration; each gets at least a burst of 1, and
max_running must be at least their number.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import sharding
from .errors import ConfigurationError
from .keys import validate_queue


class InvalidLimit(ConfigurationError):
    """A queue limit that cannot be used: a rate not like '100/second', a burst below 1, ..."""


# The fields of the control hash a declaration owns, in the order shown.
DECLARED_FIELDS = ("rate", "burst", "maxrun", "grate", "gburst", "gmaxrun")
LIMIT_NAMES = {
    "rate": "rate",
    "burst": "burst",
    "maxrun": "max_running",
    "grate": "group_rate",
    "gburst": "group_burst",
    "gmaxrun": "group_max_running",
}
_RATE_FIELDS = ("rate", "grate")

_UNIT_SECONDS = {
    "second": 1,
    "s": 1,
    "sec": 1,
    "minute": 60,
    "min": 60,
    "hour": 3600,
    "h": 3600,
}
_RATE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*/\s*([a-z]+)", re.ASCII)
MAX_RATE = 1_000_000.0  # starts per second: one per µs, the limiter's resolution
MIN_RATE = 1 / 86_400  # one a day


def parse_rate(value: object, *, what: str = "rate") -> float:
    """`value` ("N/second|minute|hour", "N/s|min|h", or a number) as starts per second."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidLimit(f"invalid {what} {value!r}: expected e.g. '100/second' or a number per second")
    if isinstance(value, str):
        match = _RATE_RE.fullmatch(value.strip().lower())
        unit = match and (_UNIT_SECONDS.get(match[2]) or _UNIT_SECONDS.get(match[2].removesuffix("s")))
        if match is None or unit is None:
            raise InvalidLimit(
                f"invalid {what} {value!r}: expected 'N/second', 'N/minute' or 'N/hour' "
                "(or N/s, N/min, N/h), e.g. '100/second'"
            )
        per_second = float(match[1]) / unit
    else:
        per_second = float(value)
    if not math.isfinite(per_second) or per_second <= 0:
        raise InvalidLimit(f"invalid {what} {value!r}: must be more than 0 (leave it out for no limit)")
    if not MIN_RATE <= per_second <= MAX_RATE:
        raise InvalidLimit(f"invalid {what} {value!r}: must be from one a day to {MAX_RATE:,.0f}/second")
    return per_second


def interval_us(per_second: float) -> float:
    """The GCRA emission interval: µs between starts at `per_second` (rounded when written)."""
    return 1_000_000 / per_second


def whole_number(value: object, *, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidLimit(f"invalid {what} {value!r}: must be a whole number >= {minimum}")
    return value


def share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split into `parts` as evenly as whole numbers go."""
    return total // parts + (1 if index < total % parts else 0)


@dataclass(frozen=True)
class Limits:
    """Limits in the control hash's units (None: no limit): one queue's, or a declaration's."""

    rate_us: float | None = None
    burst: int | None = None
    max_running: int | None = None
    group_rate_us: float | None = None
    group_burst: int | None = None
    group_max_running: int | None = None

    def fields(self) -> dict[str, str | None]:
        """The declared fields of the control hash (None: clear it)."""
        values = (
            self.rate_us,
            self.burst,
            self.max_running,
            self.group_rate_us,
            self.group_burst,
            self.group_max_running,
        )
        return {f: None if v is None else str(round(v)) for f, v in zip(DECLARED_FIELDS, values, strict=True)}

    def divided(self, parts: int, index: int, queue: str) -> Limits:
        """Member `index`'s part when the queue is served as `parts` queues (its shards).
        A 0 (an override lifting a limit) stays 0."""
        if parts == 1:
            return self
        running = self.max_running
        if running:
            if running < parts:
                raise InvalidLimit(
                    f"max_running={self.max_running} of queue {queue!r} cannot be divided among the "
                    f"{parts} queues that serve it (the queue and its shards): it must be at least {parts}"
                )
            running = share(running, parts, index)
        return Limits(
            rate_us=None if self.rate_us is None else self.rate_us * parts,
            burst=max(1, share(self.burst, parts, index)) if self.burst else self.burst,
            max_running=running,
            # Groups are routed to one shard each: their limits stay whole.
            group_rate_us=self.group_rate_us,
            group_burst=self.group_burst,
            group_max_running=self.group_max_running,
        )


_declared: dict[str, QueueLimits] = {}


class QueueLimits:
    """Limits on the starts of a queue's jobs across all workers; declaring it is enough."""

    def __init__(
        self,
        queue: str,
        *,
        rate: str | float | None = None,
        burst: int | None = None,
        max_running: int | None = None,
        group_rate: str | float | None = None,
        group_burst: int | None = None,
        group_max_running: int | None = None,
    ) -> None:
        validate_queue(queue)
        if sharding.SEPARATOR in queue:
            raise InvalidLimit(f"declare the limits of the whole queue, not of a shard: {queue!r}")
        self.queue = queue
        self.limits = Limits(
            rate_us=None if rate is None else interval_us(parse_rate(rate)),
            burst=_burst(burst, rate, "burst", "rate"),
            max_running=None if max_running is None else whole_number(max_running, what="max_running"),
            group_rate_us=None
            if group_rate is None
            else interval_us(parse_rate(group_rate, what="group_rate")),
            group_burst=_burst(group_burst, group_rate, "group_burst", "group_rate"),
            group_max_running=None
            if group_max_running is None
            else whole_number(group_max_running, what="group_max_running"),
        )
        self._given = {
            "rate": rate,
            "burst": burst,
            "max_running": max_running,
            "group_rate": group_rate,
            "group_burst": group_burst,
            "group_max_running": group_max_running,
        }
        previous = _declared.get(queue)
        if previous is not None and previous.limits != self.limits:
            raise ConfigurationError(f"queue {queue!r} already has limits declared: {previous!r}")
        _declared[queue] = self

    def __repr__(self) -> str:
        given = "".join(f", {k}={v!r}" for k, v in self._given.items() if v is not None)
        return f"QueueLimits({self.queue!r}{given})"


def _burst(burst: int | None, rate: object, what: str, rate_name: str) -> int | None:
    if burst is None:
        return None
    if rate is None:
        raise InvalidLimit(f"{what}={burst!r} needs a {rate_name}")
    return whole_number(burst, what=what)


def declared(queue: str) -> QueueLimits | None:
    """The limits declared for `queue` (a whole queue's name), if any."""
    return _declared.get(queue)


def forget(queue: str) -> None:
    """Drop a declaration (tests declare and drop their own)."""
    _declared.pop(queue, None)


def version(fields: Mapping[str, str | None]) -> str:
    """The `v` of what a declaration writes into one queue's control hash."""
    text = "\n".join(f"{field}={fields.get(field) or ''}" for field in DECLARED_FIELDS)
    return hashlib.sha1(text.encode()).hexdigest()


def controls_to_write(queues: Sequence[str]) -> dict[str, tuple[Limits, dict[str, str | None]]]:
    """For each of `queues` (served by a worker) whose queue has limits declared: its part
    of them and the control fields to write (with `v`). A sharded queue's limits are divided
    among the queue and its shards."""
    out: dict[str, tuple[Limits, dict[str, str | None]]] = {}
    for queue in queues:
        whole = queue.split(sharding.SEPARATOR, 1)[0]
        declaration = _declared.get(whole)
        if declaration is None:
            continue
        members = sharding.members(whole)
        index = members.index(queue) if queue in members else 0
        part = declaration.limits.divided(len(members), index, whole)
        fields = part.fields()
        fields["v"] = version(fields)
        out[queue] = (part, fields)
    return out


def describe_part(queue: str, part: Limits) -> str:
    """`part` of the limits, and when `queue` is one of a sharded queue's, that they are divided."""
    whole = queue.split(sharding.SEPARATOR, 1)[0]
    members = len(sharding.members(whole))
    if members == 1:
        return describe(part)
    return f"{describe(part)} (a part: {whole}'s limits are divided among it and its {members - 1} shards)"


# -- reading a control hash -------------------------------------------------------------------


def effective(meta: Mapping[str, str]) -> Limits:
    """The limits in force from a control hash: an override (o:<field>) wins; '0' lifts."""

    def value(field: str) -> int | None:
        raw = meta.get(f"o:{field}", meta.get(field))
        try:
            number = int(float(raw)) if raw is not None else 0
        except ValueError:
            return None
        return number if number > 0 else None

    rate_us, grate_us = value("rate"), value("grate")
    return Limits(
        rate_us=rate_us,
        burst=(value("burst") or 1) if rate_us else None,
        max_running=value("maxrun"),
        group_rate_us=grate_us,
        group_burst=(value("gburst") or 1) if grate_us else None,
        group_max_running=value("gmaxrun"),
    )


def describe_field(field: str, raw: str | None) -> str:
    """A control field's value for people: a rate as starts per second, '-' when absent."""
    if raw is None or raw == "":
        return "-"
    if field in _RATE_FIELDS:
        try:
            us = float(raw)
        except ValueError:
            return raw
        return "no limit" if us <= 0 else f"{describe_rate(us)}"
    return "no limit" if raw == "0" else raw


def describe_rate(us: float) -> str:
    per_second = 1_000_000 / us
    if per_second >= 1:
        return f"{per_second:g}/second"
    if per_second * 60 >= 1:
        return f"{per_second * 60:g}/minute"
    return f"{per_second * 3600:g}/hour"


def describe(limits: Limits) -> str:
    """e.g. "rate 100/second, burst 20, max_running 50"; "no limits" when there are none."""
    parts = []
    for field, raw in limits.fields().items():
        if raw is not None:
            parts.append(f"{LIMIT_NAMES[field]} {describe_field(field, raw)}")
    return ", ".join(parts) or "no limits"
