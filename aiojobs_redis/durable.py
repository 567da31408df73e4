"""Durable dispatch: after the dispatch scripts, WAIT for replicas on the same connection.

Redis replicates asynchronously: a write the primary acknowledged is lost if the primary
fails before a replica received it. `WAIT n t`, sent on the connection that made the
writes, blocks until n replicas acknowledged everything that connection wrote, or t ms
passed, and answers how many did.

So each node's scripts and their WAIT travel as one pipeline on one connection, and
without client replays: a replay on a fresh connection (after the first one broke) would
find the jobs already stored, write nothing, and its WAIT would vouch for nothing. A call
answered NOSCRIPT, MOVED, ASK, TRYAGAIN or CLUSTERDOWN did not run: it is sent again (to
the node now owning its slot) with a WAIT of its own. A connection error leaves the outcome
unknown and is returned as the call's reply.

Upgrading redis-py: this is one of the three modules that use its internals (wire.py,
durable.py, topology.py); read them, and run tests/faults/test_wire.py and the Cluster
suite, before anything else. Here: `PipelineCommand`, a pool's `get_connection()` and the
connection's `read_response()`, and a Cluster's `nodes_manager`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster

from .errors import NotReplicated
from .scripts import ScriptCall, evalsha_command
from .topology import is_cluster

if TYPE_CHECKING:
    from .config import Settings

# Answers meaning the call did not run (MovedError is an AskError).
_NOT_RUN = (rex.NoScriptError, rex.AskError, rex.TryAgainError, rex.ClusterDownError)
_ROUNDS = 3


async def run(
    client: Redis, calls: Sequence[ScriptCall], replicas: int, timeout_ms: int
) -> tuple[list[Any], list[int]]:
    """Run script calls, each node's followed by WAIT; return (replies, replicas that acked).

    A reply is the script's result or the exception it ended with; the count is what the
    WAIT after it answered (0 when the call failed or the WAIT did).
    """
    replies: list[Any] = [None] * len(calls)
    acked = [0] * len(calls)
    pending = list(range(len(calls)))
    for _ in range(_ROUNDS):
        groups = await _by_node(client, calls, pending)
        results: list[tuple[list[int], list[Any], int]] = []
        async with anyio.create_task_group() as tg:
            for node, indices in groups:
                commands = [evalsha_command(*calls[i]) for i in indices]
                commands.append(("WAIT", replicas, timeout_ms))
                tg.start_soon(_send_group, client, node, indices, commands, results)
        pending = []
        for indices, answers, waited in results:
            for index, answer in zip(indices, answers, strict=True):
                replies[index] = answer
                if isinstance(answer, _NOT_RUN):
                    pending.append(index)
                elif not isinstance(answer, Exception):
                    acked[index] = waited
        if not pending:
            if any(isinstance(r, rex.ConnectionError | rex.TimeoutError) for r in replies):
                await _refresh(client)  # a node may be gone: ask the Cluster who owns what now
            break
        await _prepare_retry(client, [calls[i] for i in pending], [replies[i] for i in pending])
    return replies, acked


async def _send_group(
    client: Redis,
    node: ClusterNode | None,
    indices: list[int],
    commands: list[tuple[Any, ...]],
    results: list[tuple[list[int], list[Any], int]],
) -> None:
    """Send one node's commands (the last a WAIT); append (indices, replies, replicas acked)."""
    try:
        answers = await (_send_to_node(node, commands) if node else _send(client, commands))
    except Exception as exc:  # the outcome of every call is unknown
        answers = [exc] * len(commands)
    waited = answers[-1]
    results.append((indices, answers[:-1], waited if isinstance(waited, int) else 0))


async def dispatch(
    client: Redis, calls: Sequence[ScriptCall], job_ids: Sequence[list[str]], settings: Settings
) -> list[Any]:
    """Dispatch calls, each node's followed by WAIT; NotReplicated where too few replicas acked.

    `job_ids` are each call's jobs, named in its NotReplicated.
    """
    replicas = settings.durable_replicas
    wait_ms = round(1000 * min(settings.durable_timeout, 0.8 * settings.socket_timeout))
    replies, acked = await run(client, calls, replicas, wait_ms)
    return [
        check(reply, count, replicas, wait_ms, ids)
        for reply, count, ids in zip(replies, acked, job_ids, strict=True)
    ]


def check(reply: Any, acked: int, replicas: int, timeout_ms: int, job_ids: list[str]) -> Any:
    """The reply, or NotReplicated when the call stored jobs fewer replicas acknowledged."""
    if isinstance(reply, Exception) or acked >= replicas:
        return reply
    return NotReplicated(
        f"dispatch: stored on the primary, but {acked} of {replicas} replica(s) acknowledged it "
        f"within {timeout_ms} ms; it is lost if the primary fails before replicating it",
        job_ids=job_ids,
    )


async def _by_node(
    client: Redis, calls: Sequence[ScriptCall], indices: list[int]
) -> list[tuple[ClusterNode | None, list[int]]]:
    if not is_cluster(client):
        return [(None, indices)]
    cluster: RedisCluster = client  # type: ignore[assignment]
    await cluster.initialize()
    groups: dict[str, tuple[ClusterNode | None, list[int]]] = {}
    for index in indices:
        node = cluster.get_node_from_key(calls[index][1][0])
        assert node is not None
        groups.setdefault(node.name, (node, []))[1].append(index)
    return list(groups.values())


async def _send(client: Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Commands on one pooled connection, one write, no replays; errors in place of replies."""
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        answers: list[Any] = []
        for _ in commands:
            try:
                answers.append(await connection.read_response())
            except rex.ResponseError as exc:
                answers.append(exc)
        return answers
    except BaseException:
        with anyio.CancelScope(shield=True):
            await connection.disconnect()
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await pool.release(connection)


async def _send_to_node(node: ClusterNode, commands: list[tuple[Any, ...]]) -> list[Any]:
    piped = [PipelineCommand(position, *command) for position, command in enumerate(commands)]
    await node.execute_pipeline(piped)  # one connection; errors land in .result
    return [command.result for command in piped]


async def _prepare_retry(client: Redis, retried: list[ScriptCall], errors: list[Any]) -> None:
    """Load scripts a node lacked; refresh a Cluster's slot map after a redirection."""
    missing = {
        id(call[0]): call[0]
        for call, error in zip(retried, errors, strict=True)
        if isinstance(error, rex.NoScriptError)
    }
    for script in missing.values():
        script.sha = await client.script_load(script.script)
    if any(not isinstance(e, rex.NoScriptError) for e in errors):
        await anyio.sleep(0.05)
        await _refresh(client)


async def _refresh(client: Redis) -> None:
    """Re-read a Cluster's slot map (no-op for other clients); errors wait for the next call."""
    if is_cluster(client):
        cluster: RedisCluster = client  # type: ignore[assignment]
        with contextlib.suppress(rex.RedisError, rex.RedisClusterException):
            await cluster.nodes_manager.initialize()
