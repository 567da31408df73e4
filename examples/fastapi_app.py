"""A FastAPI shop that hands the slow part of an order to jobs.

Run it from the repository root, with a worker beside it:

    uvicorn examples.fastapi_app:app --port 8000
    python -m examples.worker          # or: aiojobs-redis work --import examples.jobs

    curl -X POST localhost:8000/orders -H 'content-type: application/json' \\
         -d '{"order_id": "o-1", "email": "ada@example.com"}'

`lifespan()` opens the engine on start-up and closes it on shutdown (settings from REDIS_URL,
REDIS_JOB_PREFIX ...). The route just awaits `dispatch()`: the engine is installed for the
whole process, request tasks included. This app runs no worker; see aiohttp_app.py for one
inside the web process (`lifespan(worker_queues=[...])` does the same here).
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from aiojobs_redis.integrations.asgi import lifespan
from examples.jobs import SendReceipt

app = FastAPI(title="shop", lifespan=lifespan())


class Order(BaseModel):
    order_id: str
    email: str


class Accepted(BaseModel):
    job: str  # the receipt job's id


@app.post("/orders", status_code=202)
async def create_order(order: Order) -> Accepted:
    """Take the order; the receipt goes out from a worker once the job is stored."""
    job_id = await SendReceipt().dispatch({"order_id": order.order_id, "email": order.email})
    return Accepted(job=job_id)
