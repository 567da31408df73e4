"""`python -m build` gives a wheel that installs into a clean venv and runs a job end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent.parent

SCRIPT = """
import anyio
from aiojobs_redis import Job, Worker, connect

ran = []

class Hello(Job):
    queue = "wheel"
    async def handle(self) -> None:
        ran.append(self.payload["n"])

async def main() -> None:
    async with connect() as engine:
        await Hello().dispatch({"n": 1})
        await Hello.dispatch_many([{"n": 2}, {"n": 3}])
        await Worker(engine, ["wheel"], burst=True).run()
        async for key in engine.redis.scan_iter(match=engine.settings.prefix + "*"):
            await engine.redis.delete(key)
    print("ran", sorted(ran))

anyio.run(main)
"""


def test_wheel_installs_and_runs_in_a_clean_venv(tmp_path: Path, redis_url: str, prefix: str) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("aiojobs_redis-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "aiojobs_redis/lua/claim.lua" in names and "aiojobs_redis/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))]

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True, timeout=600
    )
    env = dict(os.environ, REDIS_URL=redis_url, REDIS_JOB_PREFIX=prefix)
    env.pop("JOB_ENGINE", None)
    cli = subprocess.run(
        [str(env_dir / "bin" / "aiojobs-redis"), "stats"], env=env, capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 0, cli.stderr
    run = subprocess.run(
        [str(python), "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "ran [1, 2, 3]" in run.stdout
