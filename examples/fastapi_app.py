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

When Redis cannot be reached, `dispatch()` raises EngineUnavailable (within its 10 s
`dispatch_timeout`); the app answers 503 with Retry-After rather than a 500.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from aiojobs_redis import EngineUnavailable
from aiojobs_redis.integrations.asgi import lifespan
from examples.jobs import SendReceipt

app = FastAPI(title="shop", lifespan=lifespan())


RETRY_AFTER_S = 5


@app.exception_handler(EngineUnavailable)
async def jobs_unavailable(request: Request, exc: EngineUnavailable) -> JSONResponse:
    # The job may or may not have been stored: a client that retries may start it twice.
    return JSONResponse(
        {"detail": "job queue unavailable, try again"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


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
