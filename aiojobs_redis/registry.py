"""Job name -> Job class.

Filled only by defining Job subclasses (which happens when the worker imports the modules
named on its command line). A name read from Redis is looked up here and nowhere else:
nothing is ever imported because stored data says so.

A class claims its name and its declared aliases; two different classes claiming one name
is a DuplicateJobName, raised where the second is defined. The same class defined again
from the same source (a module imported under two names, a script that is both __main__ and
imported, a test run twice) is no duplicate: the newer definition replaces the older.
Two kinds of claim are weak and give way, with no error, to any other claim: 0.1's default
name "module.QualName", kept as an implicit alias so jobs stored by 0.1 still run, and the
name of a class with no handle() of its own (an abstract base: it cannot run a job anyway).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import TYPE_CHECKING

from .errors import DuplicateJobName, UnknownJob

if TYPE_CHECKING:
    from .job import Job

log = logging.getLogger(__name__)

KNOWN_SHOWN = 20  # names listed in an unknown_job message, at most

_jobs: dict[str, type[Job]] = {}
_weak: set[str] = set()  # names held by a weak claim, which any other claim takes over


def register(cls: type[Job], names: tuple[str, ...], *, weak: tuple[str, ...] = ()) -> None:
    """Register `cls` under `names` (its name and declared aliases) and the weak `weak`.

    Raises DuplicateJobName, registering nothing, when another class holds one of `names`.
    """
    for name in names:
        holder = _jobs.get(name)
        if holder is not None and name not in _weak and not same_source(holder, cls):
            raise DuplicateJobName(_duplicate_message(name, holder, cls))
    for name in names:
        _replace(name, cls)
        _weak.discard(name)
    for name in weak:
        if name not in _jobs or name in _weak:
            _replace(name, cls)
            _weak.add(name)


def _replace(name: str, cls: type[Job]) -> None:
    previous = _jobs.get(name)
    if previous is not None and previous is not cls:
        log.debug("job name %s now refers to %s (was %s)", name, cls, previous)
    _jobs[name] = cls


def lookup(name: str) -> type[Job]:
    try:
        return _jobs[name]
    except KeyError:
        raise UnknownJob(f"no Job class is registered as {name!r}; {known_names()}") from None


def registered() -> dict[str, type[Job]]:
    """Every name this process knows (names, aliases and 0.1's names) and its class."""
    return dict(_jobs)


def classes() -> list[type[Job]]:
    """Each class once, sorted by name: those that answer to their own name here."""
    return sorted((cls for name, cls in _jobs.items() if name == cls.name), key=lambda cls: cls.name)


def known_names(limit: int = KNOWN_SHOWN) -> str:
    """The names this process knows, for an unknown_job message, with a hint at the fix."""
    names = [cls.name for cls in classes()]
    if not names:
        return "this process knows no job names (import the modules that define them)"
    shown = ", ".join(names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return (
        f"known: {shown}{more} (import the module that defines it; a class renamed since keeps "
        "its old name with `aliases = (...)`, and `name = ...` sets the name a class is stored under)"
    )


def same_source(a: type[Job], b: type[Job]) -> bool:
    """Whether two classes are one class defined again: the same qualname in the same file."""
    return a.__qualname__ == b.__qualname__ and _source(a) == _source(b)


def _source(cls: type) -> str:
    """The file that defines `cls`, or its module's name when it has none (a REPL)."""
    try:
        path = inspect.getsourcefile(cls) or inspect.getfile(cls)
    except (OSError, TypeError):
        return f"module {cls.__module__}"
    return os.path.realpath(path)


def describe(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__} ({_source(cls)})"


def _duplicate_message(name: str, holder: type[Job], cls: type[Job]) -> str:
    alias = name not in (holder.name, cls.name)
    return (
        f"job name {name!r} is claimed by two classes: {describe(holder)} and {describe(cls)}; "
        f'give one of them a name of its own (name = "..." in its class body)'
        + (", or drop the alias from its aliases" if alias else "")
    )


def job_queues() -> list[str]:
    """The queues the registered Job classes use, sorted: what a worker serves when told none.

    A sharded queue is named once; the worker adds its shards (sharding.members).
    """
    return sorted({cls.queue for cls in runnable()})


def runnable() -> list[type[Job]]:
    """The classes that can run a job (abstract bases left out), sorted by name."""
    return [cls for cls in classes() if cls.name not in _weak]
