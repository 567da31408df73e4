"""Redis going away under a running worker and a dispatcher, then coming back."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest
from support.faultapp import Record
from support.ledger import ends, read_ledger
from support.redis_server import RedisServer
from support.wait import eventually
from support.worker_procs import Workers

from aiojobs_redis import EngineUnavailable, RedisEngine, Settings, use_engine

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

HERE = Path(__file__).parent


async def test_worker_survives_redis_restart_and_dispatch_fails_fast_meanwhile(tmp_path: Path) -> None:
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    workers = Workers(server.url, "outage:", tmp_path)
    worker = workers.start("--lease", "2", "--reap-interval", "0.5")
    settings = Settings(url=server.url, prefix="outage:", socket_timeout=0.5, dispatch_timeout=2)
    try:
        async with RedisEngine(settings) as engine:
            with use_engine(engine):
                before = {await Record().dispatch({"ledger": str(ledger_dir)}) for _ in range(20)}
                await eventually(lambda: before <= set(ends(read_ledger(ledger_dir))), 15, "the jobs to end")

                server.kill()
                started = time.monotonic()
                with pytest.raises(EngineUnavailable):
                    await Record().dispatch({"ledger": str(ledger_dir)})
                failed_after = time.monotonic() - started
                print(f"dispatch with Redis down failed after {failed_after:.2f} s")
                assert failed_after < settings.dispatch_timeout + 1

                await anyio.sleep(3)  # the worker keeps trying meanwhile and must not exit
                assert worker.poll() is None, "the worker exited while Redis was down"

                server.start()
                back = time.monotonic()
                after = {await Record().dispatch({"ledger": str(ledger_dir)}) for _ in range(20)}
                await eventually(lambda: after <= set(ends(read_ledger(ledger_dir))), 15, "the jobs to end")
                print(
                    f"worker resumed: 20 new jobs done {time.monotonic() - back:.2f} s after Redis came back"
                )
                with anyio.fail_after(5):  # handlers have ended; their acks follow
                    while (stats := (await engine.stats("faults"))[0]).running:
                        await anyio.sleep(0.05)
                assert (stats.ready, stats.running, stats.failed) == (0, 0, 0)
        worker.send_signal(signal.SIGTERM)
        code, log = workers.finish(worker)
        assert code == 0, log
        assert "Traceback" not in log
    finally:
        workers.stop_all()
        server.kill()
