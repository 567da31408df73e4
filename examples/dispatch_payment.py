"""Dispatch one ProcessPayment, the fluent way, and print its id.

Run it from the repository root:

    python -m examples.dispatch_payment

The job waits five minutes (its class's delay) in the "payments" queue's delayed set before a
worker serving "payments" charges the card; `aiojobs-redis stats` shows it as delayed.
"""

from __future__ import annotations

import uuid

import anyio

from aiojobs_redis import connect
from examples.jobs import ProcessPayment


async def main() -> None:
    payment = {"id": f"pay-{uuid.uuid4().hex[:12]}", "amount_cents": 1250, "card": "4242"}
    async with connect():
        job_id = await ProcessPayment().set_payload({"payment": payment}).dispatch()
    print(job_id)


if __name__ == "__main__":
    anyio.run(main)
