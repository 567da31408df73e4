"""The Lua scripts, loaded from lua/*.lua by name, each with the shared prelude in front."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

ScriptCall = tuple["AsyncScript", Sequence[Any], Sequence[Any]]  # script, keys, args

SCRIPT_NAMES = (
    "dispatch",
    "claim",
    "renew",
    "ack",
    "retry",
    "fail",
    "release",
    "promote",
    "reap",
    "requeue_failed",
    "forget_failed",
)


@cache
def source(name: str) -> str:
    if name not in SCRIPT_NAMES:
        raise KeyError(f"no Lua script named {name!r}")
    lua = resources.files(__package__) / "lua"
    prelude = (lua / "_prelude.lua").read_text("utf-8")
    return prelude + "\n" + (lua / f"{name}.lua").read_text("utf-8")


class Scripts:
    """One registered script object per state transition.

    The script objects reload themselves after NOSCRIPT (cache flushed, restart, failover),
    in pipelines too.
    """

    def __init__(self, redis: Redis) -> None:
        self.dispatch = self._load(redis, "dispatch")
        self.claim = self._load(redis, "claim")
        self.renew = self._load(redis, "renew")
        self.ack = self._load(redis, "ack")
        self.retry = self._load(redis, "retry")
        self.fail = self._load(redis, "fail")
        self.release = self._load(redis, "release")
        self.promote = self._load(redis, "promote")
        self.reap = self._load(redis, "reap")
        self.requeue_failed = self._load(redis, "requeue_failed")
        self.forget_failed = self._load(redis, "forget_failed")

    @staticmethod
    def _load(redis: Redis, name: str) -> AsyncScript:
        return redis.register_script(source(name))


async def run_pipelined(redis: Redis, calls: Sequence[ScriptCall], *, raise_errors: bool = True) -> list[Any]:
    """Run several script calls in one round trip and return their replies in order.

    Unlike redis-py's pipelined scripts, this does not send SCRIPT EXISTS first: a call
    answered NOSCRIPT did not run, so it is loaded and sent again. An error reply from a
    script is raised after every call has been sent, or with `raise_errors=False` returned
    in its place.
    """
    replies: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    for _ in range(2):
        async with redis.pipeline(transaction=False) as pipe:
            for index in pending:
                script, keys, args = calls[index]
                # execute_command, not evalsha(): a Cluster pipeline refuses the method, not
                # the command (it sends each node's calls on one of its connections).
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        missing = []
        for index, result in zip(pending, results, strict=True):
            if isinstance(result, NoScriptError):
                missing.append(index)
            else:
                replies[index] = result
        if not missing:
            break
        for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
            script.sha = await redis.script_load(script.script)
        pending = missing
    if raise_errors:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies
