"""Sharded queues: one logical queue split into N sub-queues, each under its own hash tag.

All keys of a queue share one Cluster slot, so one queue lives on one primary however big
the Cluster is. A hot queue can be split: the shards of ``payments`` are the queues
``payments#0`` ... ``payments#7``, keyed ``jobs:{payments#0}:...``, whose slots the Cluster
spreads over its primaries. Dispatch sends each job to the next shard in turn; a worker
serving ``payments`` serves every shard (and ``payments`` itself, for jobs queued before it
was split or by a Job class that does not say it is sharded), claiming from them fairly.

Declare it once, where the Job classes are, so both dispatchers and workers see it::

    PAYMENTS = ShardedQueue("payments", shards=8)

    class ProcessPayment(Job):
        queue = "payments"

or on the Job class itself: ``shards = 8``. The order between jobs of different shards is
not kept (each shard is FIFO on its own). Before lowering a queue's shard count, drain the
shards that go away: a worker only serves the shards it is told about.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from . import registry
from .errors import ConfigurationError
from .keys import validate_queue

if TYPE_CHECKING:
    from .job import Job

SEPARATOR = "#"
MAX_SHARDS = 1024

_declared: dict[str, int] = {}


class ShardedQueue:
    """A queue split into `shards` sub-queues; declaring it makes dispatch and workers use them."""

    def __init__(self, name: str, shards: int) -> None:
        validate_queue(name)
        if SEPARATOR in name:
            raise ConfigurationError(f"a sharded queue's name cannot contain {SEPARATOR!r}: {name!r}")
        _check_count(shards, name)
        previous = _declared.get(name)
        if previous is not None and previous != shards:
            raise ConfigurationError(f"queue {name!r} is already declared with {previous} shards")
        _declared[name] = shards
        self.name = name
        self.shards = shards

    @property
    def names(self) -> list[str]:
        """The sub-queues, in order."""
        return shard_names(self.name, self.shards)

    def __repr__(self) -> str:
        return f"ShardedQueue({self.name!r}, shards={self.shards})"


def _check_count(shards: object, name: str) -> int:
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= MAX_SHARDS:
        raise ConfigurationError(f"shards of {name!r} must be an int from 1 to {MAX_SHARDS}, not {shards!r}")
    return shards


def shard_names(queue: str, shards: int) -> list[str]:
    return [f"{queue}{SEPARATOR}{i}" for i in range(shards)]


def _class_shards(cls: type[Job]) -> int:
    return _check_count(cls.shards, cls.queue)


def shard_count(queue: str) -> int:
    """How many shards `queue` has: declared, or the most any registered Job class of it asks."""
    counts = [_class_shards(cls) for cls in registry.registered().values() if cls.queue == queue]
    return max([_declared.get(queue, 1), *counts])


def members(queue: str) -> list[str]:
    """What serving `queue` means: itself, then its shards if it has any."""
    shards = shard_count(queue) if SEPARATOR not in queue else 1
    return [queue] if shards <= 1 else [queue, *shard_names(queue, shards)]


def expand(queues: Sequence[str], *, fair: bool = False) -> list[list[str]]:
    """Queues as priority groups: one group per queue given (a sharded one with its shards).

    Groups are served in order; the queues inside a group are served fairly. `fair=True`
    puts every queue in one group.
    """
    groups: list[list[str]] = []
    seen: set[str] = set()
    for queue in dict.fromkeys(queues):
        group = [q for q in members(validate_queue(queue)) if q not in seen]
        seen.update(group)
        if group:
            groups.append(group)
    if fair:
        return [[q for group in groups for q in group]]
    return groups


class Router:
    """Picks the shard for each dispatched job: the next one in turn, per queue and process;
    for a unique job, the shard its lock key hashes to, so that every duplicate meets the lock."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def route(self, job: Job, unique_lock: str = "") -> str:
        queue = job.queue
        shards = _declared.get(queue) or _class_shards(type(job))
        if shards <= 1 or SEPARATOR in queue:
            return queue
        if unique_lock:
            digest = hashlib.sha1(unique_lock.encode()).digest()
            return f"{queue}{SEPARATOR}{int.from_bytes(digest[:4], 'big') % shards}"
        turn = self._next.get(queue)
        if turn is None:
            turn = random.randrange(shards)  # processes start at different shards
        self._next[queue] = turn + 1
        return f"{queue}{SEPARATOR}{turn % shards}"


def plan_claims(
    groups: Sequence[Sequence[str]], ready: Mapping[str, int], wanted: int, turn: int
) -> list[tuple[str, int]]:
    """How many jobs to claim from which queue: (queue, count) pairs, at most `wanted` in all.

    Groups are taken in priority order: a later group gets only what the earlier ones
    could not fill. Inside a group, the queues with ready jobs share equally (a queue with
    fewer ready jobs than its share leaves the rest to the others); `turn` rotates which
    queue gets the remainder and comes first, so no queue is favoured over time.
    """
    plan: list[tuple[str, int]] = []
    left = wanted
    for group in groups:
        if left <= 0:
            break
        start = turn % len(group)
        rotated = [*group[start:], *group[:start]]
        candidates = [q for q in rotated if ready.get(q, 0) > 0]
        shares = fair_shares(left, [ready[q] for q in candidates])
        for queue, share in zip(candidates, shares, strict=True):
            if share > 0:
                plan.append((queue, share))
                left -= share
    return plan


def fair_shares(total: int, caps: Sequence[int]) -> list[int]:
    """Split `total` over queues holding `caps` jobs: equal shares, no queue above its cap."""
    shares = [0] * len(caps)
    open_ = [i for i, cap in enumerate(caps) if cap > 0]
    left = total
    while left > 0 and open_:
        share = max(1, left // len(open_))
        for i in list(open_):
            give = min(share, caps[i] - shares[i], left)
            shares[i] += give
            left -= give
            if shares[i] >= caps[i]:
                open_.remove(i)
            if left == 0:
                break
    return shares
