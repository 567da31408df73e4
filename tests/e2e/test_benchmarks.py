"""A tiny run of every benchmark workload for aiojobs-redis, to keep the harness working.

No timing is asserted here (machines are noisy); benchmarks/run.py reports the numbers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent.parent


def run_quick(output: Path, *args: str) -> tuple[dict[str, Any], str]:
    """benchmarks/run.py --quick for aiojobs-redis alone; its results file and printed tables."""
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/run.py",
            "--quick",
            "--libs",
            "aiojobs-redis",
            "--output",
            str(output),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(output.read_text()), done.stdout


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="the runner starts its own redis-server")
def test_quick_benchmark_run_measures_every_workload(tmp_path: Path) -> None:
    results, _ = run_quick(tmp_path / "quick.json")
    assert "error" not in results["libraries"]["aiojobs-redis"]
    for workload in ("W1", "W2", "W2-noop", "W2-noop CPU", "W3", "W4"):
        variants = results["workloads"][workload]
        medians = [v["aiojobs-redis"]["median"] for v in variants.values() if "aiojobs-redis" in v]
        assert medians and all(m > 0 for m in medians), f"{workload}: {variants}"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="the runner starts its own redis-server")
def test_a_priority_run_dispatches_every_aiojobs_redis_job_at_that_level(tmp_path: Path) -> None:
    results, _ = run_quick(tmp_path / "quick.json", "--n", "200", "--workloads", "w2,w4", "--priority", "3")
    assert results["meta"]["priority"] == 3
    assert results["libraries"]["aiojobs-redis"]["priority"] == 3  # what its job class says
    for workload in ("W2", "W4"):
        medians = [v["aiojobs-redis"]["median"] for v in results["workloads"][workload].values()]
        assert medians and all(m > 0 for m in medians), workload


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


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="the runner starts its own redis-server")
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="the baseline is taken from the git history")
def test_empty_handler_drain_side_by_side_with_a_baseline_ref(tmp_path: Path) -> None:
    baseline = ["--baseline-ref", "HEAD", "--baseline-dir", str(tmp_path / "base")]
    results, printed = run_quick(tmp_path / "quick.json", "--n", "200", "--workloads", "w2-noop", *baseline)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    assert results["meta"]["baseline"] == {"ref": "HEAD", "commit": head.strip(), "lib": "aiojobs-redis@HEAD"}
    base_source = results["libraries"]["aiojobs-redis@HEAD"]["source"]
    assert Path(base_source).is_relative_to(tmp_path / "base"), base_source
    for lib in ("aiojobs-redis", "aiojobs-redis@HEAD"):
        assert results["workloads"]["W2-noop"]["1 worker"][lib]["median"] > 0
        for variant in ("worker process", "Redis server"):
            assert results["workloads"]["W2-noop CPU"][variant][lib]["median"] > 0, (variant, lib)
    assert "### aiojobs-redis against HEAD" in printed
    assert "| W2-noop | 1 worker |" in printed


def test_a_baseline_that_imports_the_working_tree_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, run)  # its dataclasses look their module up
    spec.loader.exec_module(run)
    base = run.Lib("aiojobs-redis@old", Path(sys.executable), source=tmp_path / "old")
    base.info = {"source": str(tmp_path / "old" / "aiojobs_redis")}
    run.check_baseline_source(base)
    base.info = {"source": str(ROOT / "aiojobs_redis")}
    with pytest.raises(run.BenchError, match="not from"):
        run.check_baseline_source(base)
