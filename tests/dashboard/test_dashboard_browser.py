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
from playwright.async_api import Dialog, async_playwright, expect
from support.dashkit import dashboard, running_worker
from support.engine_calls import fail_new_jobs
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


class Refund(Job):
    """Failed directly through the engine (no worker): its name, error and payload carry markup."""

    name = "shopfront.<script>Refund"
    queue = "refunds"


async def fail_refunds(engine: RedisEngine, count: int, message: str) -> list[str]:
    payloads = [{"order": n, "note": "<script>alert(1)</script>"} for n in range(count)]
    error = {"reason": "error", "type": "builtins.RuntimeError", "message": f"{message} <script>x</script>"}
    return await fail_new_jobs(engine, Refund, payloads, lambda _: error)


async def test_failed_paging_filter_job_and_queue_pages_and_retry_all_asks(
    engine: RedisEngine, chromium: str
) -> None:
    declined = await fail_refunds(engine, 55, "card declined")
    expired = await fail_refunds(engine, 5, "card expired")
    waiting = await Refund().dispatch({"order": "waiting"})
    due_later = await Refund().dispatch({"order": "later"}, delay="+2 hours")
    dialogs: list[str] = []

    async with dashboard(engine, refresh_seconds=0.5) as url, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 1000})

            async def answer_no(dialog: Dialog) -> None:
                dialogs.append(dialog.message)
                await dialog.dismiss()

            page.on("dialog", answer_no)
            await page.goto(url)
            await expect(page.locator("#status")).to_contain_text("live", timeout=10_000)

            # The real total, kept by the live refresh, and paging to the older ones.
            count = page.locator("#failed-count")
            await expect(count).to_have_text("1-50 of 60")
            await expect(page.locator("#failed-body tr")).to_have_count(50)
            await page.locator("#failed-pager a.older").click()
            await expect(count).to_have_text("51-60 of 60")
            await expect(page.locator("#failed-body tr")).to_have_count(10)
            await anyio.sleep(0.8)  # a refresh or two: still the second page
            await expect(page.locator("#failed-body tr")).to_have_count(10)

            # The filter: by error text, with the name field too.
            await page.goto(url)
            await page.locator('form.filter input[name="error"]').fill("EXPIRED")
            await page.locator('form.filter input[name="name"]').fill("refund")
            await page.locator("form.filter button").click()
            await expect(count).to_have_text("1-5 of 5 matching (60 failed)")
            listed = await page.locator("#failed-body tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
            assert sorted(listed) == sorted(expired)
            name = page.locator(f'#failed-body tr[data-id="{expired[0]}"] span.job')
            await expect(name).to_have_text("shopfront.<script>Refund")

            # Retry all asks first; dismissed, nothing is requeued.
            retry_all = page.locator('#queues-body tr[data-queue="refunds"] button.retry-all')
            await retry_all.click()
            await anyio.sleep(0.5)
            assert dialogs == ["Retry every failed job of queue refunds?"]
            assert (await engine.stats("refunds"))[0].failed == 60

            # A job's page: its record and last error; no payload (not enabled).
            await page.locator(f'#failed-body tr[data-id="{expired[0]}"] a').click()
            await expect(page.locator("#job td.name")).to_have_text("shopfront.<script>Refund")
            await expect(page.locator("#job td.state")).to_have_text("failed")
            await expect(page.locator("#last-error .summary")).to_contain_text(
                "card expired <script>x</script>"
            )
            await expect(page.locator("#job .payload")).to_have_count(0)

            # A queue's page: the ready job, and the delayed one with when it is due.
            await page.goto(url)
            await page.locator('#queues-body tr[data-queue="refunds"] td.name a').click()
            await expect(page.locator(f'#ready-body tr[data-id="{waiting}"] span.job')).to_have_text(
                "shopfront.<script>Refund"
            )
            await expect(page.locator(f'#delayed-body tr[data-id="{due_later}"] td.due')).to_contain_text(
                "in 1 h"
            )
            await expect(page.locator("#latency")).to_contain_text("oldest ready job waiting")

            assert dialogs == ["Retry every failed job of queue refunds?"], "no script from Redis ran"
        finally:
            await browser.close()
    assert len(declined) == 55
