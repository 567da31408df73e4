"""The Lua scripts, loaded from lua/*.lua by name, each with the shared prelude in front."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from .keys import FORMAT_VERSION

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .wire import Wire

ScriptCall = tuple["Script", Sequence[Any], Sequence[Any]]  # script, keys, args


@cache
def source(name: str) -> str:
    if name not in SCRIPT_NAMES:
        raise KeyError(f"no Lua script named {name!r}")
    lua = resources.files(__package__) / "lua"
    prelude = (lua / "_prelude.lua").read_text("utf-8")
    version = f"local FORMAT_VERSION = {FORMAT_VERSION}\n"
    return version + prelude + "\n" + (lua / f"{name}.lua").read_text("utf-8")


class Script:
    """A Lua script called by its SHA1, loaded again after NOSCRIPT (cache flushed, restart,
    failover). Sent over the engine's wire when it has one, else through redis-py.
    """

    def __init__(self, redis: Redis, wire: Wire | None, script: str) -> None:
        self.redis, self.wire, self.script = redis, wire, script
        self.sha = hashlib.sha1(script.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        [reply] = await run_pipelined(self.redis, [(self, keys, args)])
        return reply

    async def load(self) -> None:
        if self.wire is not None:
            self.sha = (await self.wire.call("SCRIPT", "LOAD", self.script)).decode()
        else:
            self.sha = await self.redis.script_load(self.script)


class Scripts:
    """One script object per file in lua/ (the prelude aside), named after it.

    With a wire, the calls each job makes (dispatch, claim, and how its run ends) go over
    it; housekeeping (renew, promote, reap), the failed-set commands and telemetry use
    redis-py's pool, so a stalled housekeeping call never holds up the jobs' calls, nor they it.
    """

    # The one list of scripts: lua/<name>.lua each.
    dispatch: Script
    dispatch_ex: Script
    claim: Script
    ack: Script
    retry: Script
    fail: Script
    release: Script
    defer: Script
    throttle: Script
    renew: Script
    promote: Script
    reap: Script
    requeue_failed: Script
    forget_failed: Script
    record_events: Script
    format: Script
    abort: Script
    fire: Script
    progress: Script
    queue_ctl: Script
    dispatch_flow: Script

    def __init__(self, redis: Redis, wire: Wire | None = None) -> None:
        for name in SCRIPT_NAMES:
            setattr(self, name, Script(redis, wire if name in _ON_THE_WIRE else None, source(name)))


SCRIPT_NAMES = tuple(Scripts.__annotations__)
_ON_THE_WIRE = frozenset({"dispatch", "dispatch_ex", "claim", "ack", "retry", "fail", "release"})


def evalsha_command(script: Script, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


async def _send(commands: list[tuple[Any, ...]], redis: Redis, wire: Wire | None) -> list[Any]:
    """One round trip; error replies in place."""
    if wire is not None:
        return await wire.call_many(commands)
    async with redis.pipeline(transaction=False) as pipe:
        for command in commands:
            # execute_command, not evalsha(): a Cluster pipeline refuses the method, not the
            # command (it sends each node's calls on one of its connections).
            pipe.execute_command(*command)
        return await pipe.execute(raise_on_error=False)


async def run_pipelined(redis: Redis, calls: Sequence[ScriptCall], *, raise_errors: bool = True) -> list[Any]:
    """Run several script calls in one round trip and return their replies in order.

    Unlike redis-py's pipelined scripts, this does not send SCRIPT EXISTS first: a call
    answered NOSCRIPT did not run, so it is loaded and sent again. An error reply from a
    script is raised after every call has been sent, or with `raise_errors=False` returned
    in its place.
    """
    replies: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    wire = calls[0][0].wire if calls else None
    if wire is not None and any(call[0].wire is not wire for call in calls):
        wire = None  # scripts of both kinds: all through redis-py
    for _ in range(2):
        results = await _send([evalsha_command(*calls[i]) for i in pending], redis, wire)
        missing = []
        for index, result in zip(pending, results, strict=True):
            if isinstance(result, NoScriptError):
                missing.append(index)
            else:
                replies[index] = result
        if not missing:
            break
        for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
            await script.load()
        pending = missing
    if raise_errors:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies
