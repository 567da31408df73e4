"""A tiny run of every benchmark workload for aiojobs-redis, to keep the harness working.

No timing is asserted here (machines are noisy); benchmarks/run.py reports the numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent.parent


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="the runner starts its own redis-server")
def test_quick_benchmark_run_measures_every_workload(tmp_path: Path) -> None:
    output = tmp_path / "quick.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--libs", "aiojobs-redis", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(output.read_text())
    assert "error" not in results["libraries"]["aiojobs-redis"]
    for workload in ("W1", "W2", "W3", "W4"):
        variants = results["workloads"][workload]
        medians = [v["aiojobs-redis"]["median"] for v in variants.values() if "aiojobs-redis" in v]
        assert medians and all(m > 0 for m in medians), f"{workload}: {variants}"


def test_costs_script_measures_every_part(redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/costs.py"],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url, "COSTS_JOBS": "2000"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 9, done.stdout
    for line in lines:
        rate = float(line.split("/s")[0].split()[-2].replace(",", ""))
        assert rate > 0, line
