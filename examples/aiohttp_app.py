"""An aiohttp shop with the worker inside the web process.

Run it from the repository root:

    python -m examples.aiohttp_app --port 8080
    python -m aiohttp.web -H 127.0.0.1 -P 8080 examples.aiohttp_app:create_app   # the same

    curl -X POST localhost:8080/orders -d '{"order_id": "o-1", "email": "ada@example.com"}'
    curl localhost:8080/stats

`setup()` opens the engine on start-up (settings from REDIS_URL, REDIS_JOB_PREFIX ...) and
runs a worker for the "default" and "warehouse" queues in the same event loop. Ctrl-C or
SIGTERM drains it: running jobs get up to 10 s to finish before the engine closes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence

from aiohttp import web

from aiojobs_redis import RedisEngine
from aiojobs_redis.integrations.aiohttp import ENGINE_KEY, setup
from examples.jobs import NotifyWarehouse, SendReceipt

routes = web.RouteTableDef()


@routes.post("/orders")
async def create_order(request: web.Request) -> web.Response:
    """Take the order: one job sends the receipt, another tells the warehouse to ship it."""
    try:
        order = await request.json()
    except ValueError:  # not JSON: the client's mistake, not a server error
        raise web.HTTPBadRequest(text="expected a JSON object with order_id and email") from None
    if not isinstance(order, dict) or not {"order_id", "email"} <= order.keys():
        raise web.HTTPBadRequest(text="expected a JSON object with order_id and email")
    receipt = await SendReceipt().dispatch({"order_id": order["order_id"], "email": order["email"]})
    shipping = await NotifyWarehouse().dispatch(
        {"order_id": order["order_id"], "items": order.get("items", [])}
    )
    return web.json_response({"receipt_job": receipt, "shipping_job": shipping}, status=202)


@routes.get("/stats")
async def stats(request: web.Request) -> web.Response:
    """Jobs per queue and state (failed: in the failed set), from the engine `setup()` stored on the app."""
    engine = request.app[ENGINE_KEY]
    if not isinstance(engine, RedisEngine):  # JOB_ENGINE=sync keeps no queues
        return web.json_response([])
    rows = await engine.stats()
    return web.json_response([dataclasses.asdict(row) for row in rows])


def create_app(argv: Sequence[str] = ()) -> web.Application:
    app = web.Application()
    app.add_routes(routes)
    setup(app, worker_queues=["default", "warehouse"], concurrency=20, worker_options={"grace": 10})
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(create_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
