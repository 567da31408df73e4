"""Job name -> Job class.

Filled only by defining Job subclasses (which happens when the worker imports the modules
named on its command line). A name read from Redis is looked up here and nowhere else:
nothing is ever imported because stored data says so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .errors import UnknownJob

if TYPE_CHECKING:
    from .job import Job

log = logging.getLogger(__name__)

_jobs: dict[str, type[Job]] = {}


def register(cls: type[Job]) -> None:
    previous = _jobs.get(cls.name)
    if previous is not None and previous is not cls:
        log.debug("job name %s now refers to %s (was %s)", cls.name, cls, previous)
    _jobs[cls.name] = cls


def lookup(name: str) -> type[Job]:
    try:
        return _jobs[name]
    except KeyError:
        raise UnknownJob(f"no Job class is registered as {name!r}") from None


def registered() -> dict[str, type[Job]]:
    return dict(_jobs)


def job_queues() -> list[str]:
    """The queues the registered Job classes use, sorted: what a worker serves when told none.

    A sharded queue is named once; the worker adds its shards (sharding.members).
    """
    return sorted({cls.queue for cls in _jobs.values()})
