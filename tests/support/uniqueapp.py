"""A process that dispatches one unique key many times at once, for the cross-process test.

python -m support.uniqueapp URL PREFIX START COUNT: at wall-clock time START (so that all the
processes start together), COUNT concurrent dispatches; prints the ids returned, one a line.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiojobs_redis import Job, RedisEngine, Settings, use_engine

QUEUE = "unique-procs"


class OneOrder(Job):
    queue = QUEUE
    unique = True
    unique_key = "order"

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


async def main(url: str, prefix: str, start: float, count: int) -> None:
    async with RedisEngine(Settings(url=url, prefix=prefix)) as engine:
        with use_engine(engine):
            await engine.register_queues([QUEUE])  # connected and ready before the start
            await asyncio.sleep(max(0.0, start - time.time()))
            ids = await asyncio.gather(*(OneOrder.dispatch({"order": 1, "n": n}) for n in range(count)))
    print("\n".join(ids))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
