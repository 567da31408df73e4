"""The jobs of a small shop: payments, receipts, a flaky warehouse API and refunds.

Every example imports this module; a worker for its queues, from the repository root:

    python -m examples.worker
    aiojobs-redis work --import examples.jobs --queue payments --queue warehouse --queue default

The handlers stand in for real work and record what they did in Redis, next to the jobs
(under REDIS_JOB_PREFIX, default "jobs:"), so you can watch it happen:

    <prefix>example:receipts    string  receipts sent
    <prefix>example:sent        hash    order id -> the email its receipt went to
    <prefix>example:payments    hash    payment id -> amount charged (cents)
    <prefix>example:warehouse   hash    order id -> the attempt that reached the warehouse
    <prefix>example:refunds     hash    payment id -> amount refunded (cents)

Each class sets `name`: the name stored with a queued job, so renaming the class does not
orphan jobs already queued (the default name is the class's own; `aliases` keeps old names).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from aiojobs_redis import Job, PermanentFailure, Settings


def ledger_key(name: str, prefix: str | None = None) -> str:
    """`<prefix>example:<name>`, the prefix from the environment unless given."""
    return f"{Settings.from_env().prefix if prefix is None else prefix}example:{name}"


@asynccontextmanager
async def shop_redis() -> AsyncIterator[Redis]:
    """A Redis client on the jobs' server and database (a real app would keep one pool)."""
    settings = Settings.from_env()
    options: dict[str, Any] = {} if settings.db is None else {"db": settings.db}
    async with Redis.from_url(settings.url, **options) as client:
        yield client


class ProcessPayment(Job):
    """Charge a card five minutes after the order. A stolen card fails for good.

    Payload: {"payment": {"id": str, "amount_cents": int, "card": str}}
    """

    name = "shop.ProcessPayment"
    queue = "payments"
    delay = "+5 minutes"
    attempts = 3
    retry_after = "+30 seconds"

    async def handle(self) -> None:
        payment = self.payload["payment"]
        if payment["card"] == "stolen":
            raise PermanentFailure("card reported stolen")  # failed at once, attempts left or not
        async with shop_redis() as redis, redis.pipeline(transaction=False) as pipe:
            pipe.hset(ledger_key("payments"), payment["id"], payment["amount_cents"])
            await pipe.execute()


class SendReceipt(Job):
    """Email a receipt. Payload: {"order_id": str, "email": str}"""

    name = "shop.SendReceipt"  # queue "default"

    async def handle(self) -> None:
        async with shop_redis() as redis, redis.pipeline(transaction=True) as pipe:
            pipe.incr(ledger_key("receipts"))
            pipe.hset(ledger_key("sent"), self.payload["order_id"], self.payload["email"])
            await pipe.execute()


class NotifyWarehouse(Job):
    """Tell the warehouse to ship an order, through an API that times out now and then.

    Payload: {"order_id": str, "items": [str], "flaky_attempts": int}. The first
    `flaky_attempts` calls fail (a stand-in for the API's timeouts); each failure is retried a
    second later, up to four attempts in all.
    """

    name = "shop.NotifyWarehouse"
    queue = "warehouse"
    attempts = 4
    retry_after = "+1 second"

    async def handle(self) -> None:
        if self.attempt <= self.payload.get("flaky_attempts", 0):
            raise TimeoutError("the warehouse API did not answer")  # retried, using an attempt
        async with shop_redis() as redis, redis.pipeline(transaction=False) as pipe:
            pipe.hset(ledger_key("warehouse"), self.payload["order_id"], self.attempt)
            await pipe.execute()


class IssueRefund(Job):
    """Refund (part of) a payment; refusing a refund larger than the charge, for good.

    Payload: {"payment_id": str, "amount_cents": int, "charged_cents": int}
    """

    name = "shop.IssueRefund"
    queue = "payments"
    attempts = 3
    retry_after = "+10 seconds"

    async def handle(self) -> None:
        amount, charged = self.payload["amount_cents"], self.payload["charged_cents"]
        if not 0 < amount <= charged:
            # Retrying cannot make this right: fail now instead of using the other attempts.
            raise PermanentFailure(f"cannot refund {amount} of a {charged} cents charge")
        async with shop_redis() as redis, redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(ledger_key("refunds"), self.payload["payment_id"], amount)
            await pipe.execute()
