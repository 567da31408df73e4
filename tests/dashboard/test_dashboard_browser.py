"""The dashboard in a real headless Chromium: live numbers from a running worker, and a retry click.

Uses Debian's chromium (/usr/bin/chromium) driven by the playwright package; no browser is
downloaded. AIOJOBS_UPDATE_SCREENSHOT=1 also writes the screenshot to docs/dashboard.png.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import anyio
import httpx
import pytest
from playwright.async_api import async_playwright, expect
from support.dashkit import dashboard, running_worker
from support.wait import eventually

from aiojobs_redis import Job, RedisEngine

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-test-token"
DOCS = Path(__file__).resolve().parents[2] / "docs"


class SendReceipt(Job):
    name = "shopfront.SendReceipt"
    queue = "mail"

    async def handle(self) -> None:
        await anyio.sleep(0.005)


class ChargeCard(Job):
    name = "shopfront.ChargeCard"
    queue = "payments"
    gate: ClassVar[anyio.Event | None] = None

    async def handle(self) -> None:
        if self.payload.get("hold") and ChargeCard.gate is not None:
            await ChargeCard.gate.wait()


class SyncWarehouse(Job):
    """Fails on its first run (the warehouse API is down), succeeds when run again."""

    name = "shopfront.SyncWarehouse"
    queue = "payments"
    failed_once: ClassVar[set[str]] = set()

    async def handle(self) -> None:
        if self.id not in SyncWarehouse.failed_once:
            SyncWarehouse.failed_once.add(str(self.id))
            raise ConnectionError("warehouse API returned 503 Service Unavailable")


@pytest.fixture
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


async def test_the_page_shows_live_numbers_and_a_retry_runs_the_job(
    engine: RedisEngine, chromium: str, tmp_path: Path
) -> None:
    ChargeCard.gate = anyio.Event()
    SyncWarehouse.failed_once = set()
    await SendReceipt.dispatch_many([{"order": n} for n in range(40)])
    await ChargeCard.dispatch_many([{"order": n} for n in range(25)])
    await ChargeCard().dispatch({"order": 99}, delay="+2 hours")
    await ChargeCard().dispatch({"order": 98}, delay="+3 hours")
    held_id = await ChargeCard().dispatch({"hold": True})
    broken = [await SyncWarehouse().dispatch({"sku": n}) for n in range(2)]

    async with (
        running_worker(engine, ["payments", "mail"], concurrency=20) as worker,
        dashboard(engine, token=TOKEN, refresh_seconds=0.5) as url,
        httpx.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"}) as api,
    ):

        async def settled() -> bool:
            state = (await api.get(url + "api/state")).json()
            done = sum(sum(q["throughput"]["succeeded"]) for q in state["queues"])
            running = [j for j in state["running"] if j["run_ms"] is not None]
            return len(state["failed"]) == 2 and done == 65 and len(running) == 1

        await eventually(settled, what="the worker to settle with two failed jobs and one running")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1360, "height": 1000})
                await page.goto(f"{url}?token={TOKEN}")
                assert page.url == url, "logged in, and the token left the address bar"
                await expect(page.locator("#status")).to_contain_text("live", timeout=10_000)

                payments = page.locator('#queues-body tr[data-queue="payments"]')
                await expect(payments.locator("td.delayed")).to_have_text("2")
                await expect(payments.locator("td.running")).to_have_text("1")
                await expect(payments.locator("td.failed")).to_have_text("2")
                await expect(page.locator('#queues-body tr[data-queue="mail"] td.failed')).to_have_text("0")
                await expect(payments.locator(".caption")).to_have_text("25 succeeded, 2 failed")
                await expect(page.locator(f'#running-body tr[data-id="{held_id}"] td.worker')).to_have_text(
                    worker.worker_id
                )
                await expect(
                    page.locator(f'#workers-body tr[data-worker="{worker.worker_id}"]')
                ).to_have_count(1)
                row = page.locator(f'#failed-body tr[data-id="{broken[0]}"]')
                await expect(row.locator(".summary")).to_contain_text(
                    "ConnectionError: warehouse API returned 503"
                )
                await row.locator("summary").click()  # open the traceback; it stays open across refreshes
                await expect(row.locator("pre")).to_contain_text("raise ConnectionError")
                await anyio.sleep(0.6)
                await expect(row.locator("details")).to_have_attribute("open", "")

                shot = await page.screenshot(full_page=True)
                (tmp_path / "dashboard.png").write_bytes(shot)
                if os.environ.get("AIOJOBS_UPDATE_SCREENSHOT") == "1":
                    DOCS.mkdir(exist_ok=True)
                    (DOCS / "dashboard.png").write_bytes(shot)

                succeeded_before = worker.counters.succeeded
                await row.locator("button.retry").click()
                await expect(page.locator("#flash")).to_have_text("requeued 1 job(s)")
                await expect(row).to_have_count(0, timeout=10_000)
                await expect(payments.locator("td.failed")).to_have_text("1")
                ran = page.locator(f'#events-body tr.kind-succeeded:has(code:text-is("{broken[0]}"))')
                await expect(ran).to_have_count(1, timeout=10_000)
                assert worker.counters.succeeded == succeeded_before + 1
                assert await engine.get_job("payments", broken[0]) is None, "done and deleted"
            finally:
                await browser.close()
        ChargeCard.gate.set()
