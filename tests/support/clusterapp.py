"""Jobs for the worker processes of the failover tests: a sharded queue, each run in the ledger.

Worker processes import this module (`--import support.clusterapp`), so they learn that `hops` has
six shards from the same declaration the test's dispatchers use.
"""

from __future__ import annotations

import anyio

from aiojobs_redis import Job
from aiojobs_redis.sharding import ShardedQueue
from support.faultapp import record

HOPS = ShardedQueue("hops", shards=6)


class Hop(Job):
    """Sleeps payload["sleep"] seconds; records start and end."""

    name = "clusterapp.Hop"
    queue = "hops"

    async def handle(self) -> None:
        record(self.payload["ledger"], self, "start")
        await anyio.sleep(self.payload.get("sleep", 0))
        record(self.payload["ledger"], self, "end")
