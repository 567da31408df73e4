#!/usr/bin/env python3
"""Run the benchmarks (W1-W5) for aiojobs-redis and its peers side by side, in one run.

    python3 benchmarks/run.py                      # everything: 20,000 jobs, 3 repeats
    python3 benchmarks/run.py --quick --libs aiojobs-redis
    python3 benchmarks/run.py --workloads W2,W3 --libs aiojobs-redis,arq --repeats 5
    python3 benchmarks/run.py --baseline-ref v0.1.0 --workloads W1,W2,W2-noop

Standard library only: every library runs in its own virtualenv (benchmarks/.venvs/<name>,
created from benchmarks/peers/<name>/requirements.txt when missing or out of date), through
benchmarks/peers/<name>/bench.py, as separate processes; the worker always has a process of
its own. Everything runs against a private redis-server started here on a free loopback
port and flushed before every measurement.

Prints one table per workload, writes benchmarks/results/latest.json (quick runs:
results/quick.json) and, for full runs, regenerates the results section of
benchmarks/README.md and benchmarks/results/chart.png.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENVS = HERE / ".venvs"
PEERS = HERE / "peers"
RESULTS = HERE / "results"
README = HERE / "README.md"

OURS = "aiojobs-redis"
LIBS = [OURS, "arq", "saq", "streaq", "taskiq", "rq", "bullmq"]
WORKLOADS = ["W1", "W2", "W2-noop", "W3", "W4", "W5"]
UNSUPPORTED = 3  # bench.py's exit code for a mode the library does not offer
RESULT_TAG = "BENCH-RESULT "
COUNTER, FIRST_START, LAST_END, LATENCIES = "bench:count", "bench:first", "bench:last", "bench:lat"
CONCURRENCY = 100

# A claim-like script for W5: take the oldest ready id, lease it in the running set, mark its
# record, then put it back so the ready set never empties (a steady state for the benchmark).
CLAIM_LIKE_LUA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped == 0 then return false end
local id = popped[1]
redis.call('ZADD', KEYS[2], now + 30000, id)
redis.call('HSET', KEYS[3], 'state', 'running', 'token', ARGV[1], 'claimed', now)
redis.call('ZREM', KEYS[2], id)
redis.call('ZADD', KEYS[1], now, id)
return id
"""


class BenchError(Exception):
    """A run that failed: the library errored, hung or could not be installed."""


class Unsupported(Exception):
    """The library has no such mode (bench.py exited with UNSUPPORTED)."""


# -- a minimal Redis client (the runner needs no third-party package) --------------------------


class RespClient:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __call__(self, *args: Any) -> Any:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> Any:
        line = self.reader.readline()
        if not line:
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise BenchError(f"Redis error: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.reader.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise BenchError(f"unexpected reply {line!r}")

    def info(self, section: str) -> dict[str, str]:
        text = self("INFO", section).decode()
        return dict(ln.split(":", 1) for ln in text.splitlines() if ":" in ln and not ln.startswith("#"))

    def get_float(self, key: str) -> float | None:
        value = self("GET", key)
        return None if value is None else float(value)


class PrivateRedis:
    """A redis-server of our own on a free loopback port: no persistence, nobody else's keys."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: RespClient | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--logfile", "redis.log",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client = RespClient(self.port)
                if self.client("PING") == "PONG":
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise BenchError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def r(self) -> RespClient:
        assert self.client is not None
        return self.client

    def flush(self) -> None:
        self.r("FLUSHALL")

    def version(self) -> str:
        return self.r.info("server").get("redis_version", "?")

    def cpu_seconds(self) -> float:
        """The server's CPU time so far, user plus system, all threads."""
        cpu = self.r.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the libraries' virtualenvs ---------------------------------------------------------------


def _stamp(lib: str) -> str:
    digest = hashlib.sha256((PEERS / lib / "requirements.txt").read_bytes())
    if lib == OURS:
        digest.update((REPO / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def ensure_venv(
    name: str, requirements: Path, stamp: str, log: Callable[[str], None], cwd: Path = REPO
) -> Path:
    """Create or refresh benchmarks/.venvs/<name>; return its python."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp_file = venv / ".bench-stamp"
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return python
    log(f"installing {name} into {venv.relative_to(REPO)} ...")
    if not python.exists():
        _checked([sys.executable, "-m", "venv", str(venv)], f"create the {name} virtualenv")
    _checked(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
        ],
        f"install {name}",
        cwd=cwd,
    )
    stamp_file.write_text(stamp)
    return python


def _checked(args: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise BenchError(f"{what} failed:\n{tail}")


def ours_is_importable_here() -> bool:
    """True when this interpreter imports aiojobs_redis from this repository (the project venv)."""
    try:
        import aiojobs_redis
    except ImportError:
        return False
    return Path(aiojobs_redis.__file__).resolve().is_relative_to(REPO)


# -- one library's processes ------------------------------------------------------------------


@dataclass
class Lib:
    name: str
    python: Path
    info: dict[str, Any] = field(default_factory=dict)
    fill_mode: str | None = None  # the fastest dispatch mode it supports, to fill queues
    home: str = ""  # the peers/ folder of its bench.py, when not its name (a baseline)
    source: Path | None = None  # a package tree imported ahead of the installed one (a baseline)

    @property
    def script(self) -> Path:
        return PEERS / (self.home or self.name) / "bench.py"


class Harness:
    def __init__(self, redis: PrivateRedis, logdir: Path, priority: int = 0) -> None:
        self.redis = redis
        self.logdir = logdir
        self.priority = priority  # aiojobs-redis's jobs' level (--priority); 0: the plain path
        self._seq = 0
        self._procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def env(self, lib: Lib, expect: int = 0, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "REDIS_JOB_PREFIX", "REDIS_JOB_DB", "JOB_ENGINE", "PYTHONPATH")
            and not k.startswith("BENCH_")
        }
        path = [str(lib.source)] if lib.source else []
        if self.priority and lib.name.split("@")[0] == OURS:
            env["BENCH_PRIORITY"] = str(self.priority)
        env.update(
            PYTHONPATH=os.pathsep.join([*path, str(HERE / "common")]),
            BENCH_REDIS_URL=self.redis.url,
            BENCH_EXPECT=str(expect),
            BENCH_CONCURRENCY=str(CONCURRENCY),
            PYTHONUNBUFFERED="1",
            **(extra or {}),
        )
        return env

    def role(self, lib: Lib, args: list[str], timeout: float = 600) -> dict[str, Any]:
        """Run bench.py with `args` to completion; return its result line."""
        try:
            proc = subprocess.run(
                [str(lib.python), str(lib.script), *args],
                env=self.env(lib),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=lib.script.parent,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"{lib.name} {' '.join(args)}: no answer within {timeout:.0f} s") from None
        if proc.returncode == UNSUPPORTED:
            raise Unsupported(proc.stderr.strip())
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith(RESULT_TAG):
                if proc.returncode == 0:
                    return dict(json.loads(line[len(RESULT_TAG) :]))
                break
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise BenchError(f"{lib.name} {' '.join(args)} exited {proc.returncode}:\n{tail}")

    @contextlib.contextmanager
    def workers(
        self,
        lib: Lib,
        count: int,
        expect: int,
        wrap: list[str] | None = None,
        stop_signal: int = signal.SIGTERM,
        extra_env: dict[str, str] | None = None,
    ) -> Iterator[float]:
        """Start `count` worker processes; yield the time they were started; stop them after."""
        procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        started = time.time()
        try:
            for _ in range(count):
                self._seq += 1
                log = self.logdir / f"{lib.name.replace('/', '_')}-worker-{self._seq}.log"
                with log.open("wb") as out:
                    cmd = [str(lib.python), str(lib.script), "worker", "--concurrency", str(CONCURRENCY)]
                    proc = subprocess.Popen(
                        [*(wrap or []), *cmd],
                        env=self.env(lib, expect, extra_env),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=lib.script.parent,
                        start_new_session=True,  # its own process group: children are stopped too
                    )
                procs.append((proc, log))
            self._procs = procs
            yield started
        finally:
            self._procs = []
            for proc, _ in procs:
                _signal_group(proc, stop_signal)
            deadline = time.monotonic() + 3  # the results are in: no need to wait long
            for proc, _ in procs:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
                _signal_group(proc, signal.SIGKILL)  # anything the worker left behind

    def check_workers_alive(self, lib: Lib) -> None:
        procs = self._procs
        if procs and all(p.poll() is not None for p, _ in procs):
            tail = "\n".join(procs[0][1].read_text(errors="replace").strip().splitlines()[-8:])
            raise BenchError(f"{lib.name} worker exited {procs[0][0].returncode}:\n{tail}")

    def wait_for_count(self, lib: Lib, target: int, timeout: float, stall: float = 30.0) -> None:
        """Poll the handlers' counter until it reaches `target`."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while True:
            raw = self.redis.r("GET", COUNTER)
            count = int(raw) if raw is not None else 0
            if count >= target:
                return
            now = time.monotonic()
            if count != last:
                last, last_change = count, now
            self.check_workers_alive(lib)
            if now > deadline or now - last_change > stall:
                raise BenchError(f"{lib.name}: {count} of {target} jobs ran before giving up")
            time.sleep(0.02)

    def done_file(self) -> Path:
        self._seq += 1
        path = self.logdir / f"done-{self._seq}.json"
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".count").unlink(missing_ok=True)
        return path

    def wait_for_file(self, lib: Lib, path: Path, timeout: float, stall: float = 30.0) -> dict[str, Any]:
        """Wait for a W2-noop worker's report of its drain (no Redis call is made meanwhile);
        give up when its count (noted every 1,000 jobs in <path>.count) stops moving."""
        deadline = time.monotonic() + timeout
        count_file = path.with_name(path.name + ".count")
        last, last_change = "", time.monotonic()
        while not path.exists():
            now = time.monotonic()
            with contextlib.suppress(OSError):
                count = count_file.read_text()
                if count and count != last:
                    last, last_change = count, now
            self.check_workers_alive(lib)
            if now > deadline or now - last_change > stall:
                raise BenchError(f"{lib.name}: {last or 'fewer than 1,000'} jobs ran before giving up")
            time.sleep(0.02)
        return dict(json.loads(path.read_text()))

    def wait_for_key(self, key: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while (value := self.redis.r.get_float(key)) is None:
            if time.monotonic() > deadline:
                raise BenchError(f"the handlers never set {key}")
            time.sleep(0.01)
        return value

    def fill(self, lib: Lib, n: int, payload_bytes: int) -> None:
        """Queue n jobs with the library's fastest dispatch mode (bulk, else concurrent, else seq)."""
        modes = [lib.fill_mode] if lib.fill_mode else ["bulk", "concurrent", "seq"]
        for mode in modes:
            try:
                self.role(
                    lib, ["dispatch", "--mode", mode, "--n", str(n), "--payload-bytes", str(payload_bytes)]
                )
            except Unsupported:
                continue
            lib.fill_mode = mode
            return
        raise BenchError(f"{lib.name}: no dispatch mode works")


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


# -- the workloads ----------------------------------------------------------------------------
# Each returns {variant: {lib: [sample, ...]}} (or an "error"/"n/a" marker per lib), samples
# being numbers or, for W3, dicts of percentiles.

Samples = dict[str, dict[str, Any]]


@dataclass
class Plan:
    n: int
    repeats: int
    latency_n: int
    latency_rate: float
    memory_n: int
    memory_payload: int
    redis_bench_n: int
    worker_counts: tuple[int, ...] = (1, 2, 4)
    big_payload: int = 1024


def _add(samples: Samples, variant: str, lib: str, value: Any) -> None:
    cell = samples.setdefault(variant, {}).setdefault(lib, {"samples": []})
    if isinstance(value, Exception):
        if isinstance(value, Unsupported):
            cell["na"] = str(value) or "not offered"
        else:
            cell.setdefault("errors", []).append(str(value))
    else:
        cell["samples"].append(value)


def _skip(samples: Samples, variant: str, lib: str) -> bool:
    """Stop repeating a variant that the library does not offer, or that failed twice."""
    cell = samples.get(variant, {}).get(lib, {})
    return "na" in cell or len(cell.get("errors", [])) >= 2


def w1_dispatch(h: Harness, libs: list[Lib], plan: Plan, say: Callable[[str], None]) -> Samples:
    samples: Samples = {}
    for mode in ("seq", "concurrent", "bulk"):
        for rep in range(plan.repeats):
            for lib in libs:
                if _skip(samples, mode, lib.name):
                    continue
                h.redis.flush()
                try:
                    result = h.role(lib, ["dispatch", "--mode", mode, "--n", str(plan.n)])
                    value: Any = plan.n / result["seconds"]
                except (BenchError, Unsupported) as exc:
                    value = exc
                _add(samples, mode, lib.name, value)
                say(f"W1 {mode:<10} #{rep + 1} {lib.name:<20} {_show(value, '{:,.0f} jobs/s')}")
    return samples


def drain_once(h: Harness, lib: Lib, plan: Plan, workers: int, payload_bytes: int) -> dict[str, float]:
    h.redis.flush()
    h.fill(lib, plan.n, payload_bytes)
    with h.workers(lib, workers, expect=plan.n) as started:
        h.wait_for_count(lib, plan.n, timeout=60 + plan.n / 50)
        first = h.wait_for_key(FIRST_START)
        last = h.wait_for_key(LAST_END)
    return {"drain": plan.n / (last - first), "from_start": plan.n / (last - started)}


def w2_drain(h: Harness, libs: list[Lib], plan: Plan, say: Callable[[str], None]) -> Samples:
    samples: Samples = {}
    variants = [(f"{w} worker{'s' if w > 1 else ''}", w, 0) for w in plan.worker_counts]
    variants.insert(1, ("1 worker, from process start", 1, 0))
    variants.append((f"1 worker, {plan.big_payload // 1024} KiB payload", 1, plan.big_payload))
    for rep in range(plan.repeats):
        for name, workers, payload in variants:
            if name.endswith("from process start"):
                continue  # measured by the "1 worker" runs
            for lib in libs:
                if _skip(samples, name, lib.name):
                    continue
                try:
                    result: Any = drain_once(h, lib, plan, workers, payload)
                except BenchError as exc:
                    result = exc
                if isinstance(result, dict):
                    _add(samples, name, lib.name, result["drain"])
                    if workers == 1 and payload == 0:
                        _add(samples, "1 worker, from process start", lib.name, result["from_start"])
                    shown = f"{result['drain']:,.0f} jobs/s ({result['from_start']:,.0f} from process start)"
                else:
                    _add(samples, name, lib.name, result)
                    if workers == 1 and payload == 0:
                        _add(samples, "1 worker, from process start", lib.name, result)
                    shown = _show(result, "")
                say(f"W2 {name:<22} #{rep + 1} {lib.name:<20} {shown}")
    return {name: samples.get(name, {}) for name, _, _ in variants}


def noop_drain_once(h: Harness, lib: Lib, plan: Plan) -> dict[str, float]:
    """W2's one-worker drain with a handler that makes no Redis call; the worker process
    detects the end itself and reports its times and CPU; Redis's CPU is read around it."""
    h.redis.flush()
    h.fill(lib, plan.n, 0)
    done = h.done_file()
    before = h.redis.cpu_seconds()
    env = {"BENCH_HANDLER": "noop", "BENCH_DONE_FILE": str(done)}
    with h.workers(lib, 1, expect=plan.n, extra_env=env):
        result = h.wait_for_file(lib, done, timeout=120 + plan.n / 10)
        time.sleep(0.2)  # the last acknowledgements reach Redis
        after = h.redis.cpu_seconds()
    if result["jobs"] != plan.n:
        raise BenchError(f"{lib.name}: the worker counted {result['jobs']} of {plan.n} jobs")
    return {
        "drain": plan.n / (result["last"] - result["first"]),
        "worker_cpu": 1e6 * result["cpu_s"] / plan.n,
        "redis_cpu": 1e6 * (after - before) / plan.n,
    }


def w2_noop(h: Harness, libs: list[Lib], plan: Plan, say: Callable[[str], None]) -> dict[str, Samples]:
    rate: Samples = {}
    cpu: Samples = {}
    for rep in range(plan.repeats):
        for lib in libs:
            if _skip(rate, "1 worker", lib.name):
                continue
            try:
                result = noop_drain_once(h, lib, plan)
            except BenchError as exc:
                for samples, variant in ((rate, "1 worker"), (cpu, "worker process"), (cpu, "Redis server")):
                    _add(samples, variant, lib.name, exc)
                say(f"W2-noop #{rep + 1} {lib.name:<20} {_show(exc, '')}")
                continue
            _add(rate, "1 worker", lib.name, result["drain"])
            _add(cpu, "worker process", lib.name, result["worker_cpu"])
            _add(cpu, "Redis server", lib.name, result["redis_cpu"])
            say(
                f"W2-noop #{rep + 1} {lib.name:<20} {result['drain']:,.0f} jobs/s, CPU per job: worker "
                f"{result['worker_cpu']:,.0f} us, Redis {result['redis_cpu']:,.0f} us"
            )
    return {"W2-noop": rate, "W2-noop CPU": cpu}


def latency_once(h: Harness, lib: Lib, plan: Plan) -> dict[str, float]:
    h.redis.flush()
    with h.workers(lib, 1, expect=plan.latency_n + 1):
        # A first job proves the worker is up; then it idles a second before the paced run.
        h.role(lib, ["dispatch", "--mode", "seq", "--n", "1"])
        h.wait_for_count(lib, 1, timeout=60)
        time.sleep(1.0)
        sent = h.role(lib, ["latency-dispatch", "--n", str(plan.latency_n), "--rate", str(plan.latency_rate)])
        h.wait_for_count(lib, plan.latency_n + 1, timeout=60 + plan.latency_n / 20)
    delays = sorted(float(x) * 1000 for x in h.redis.r("LRANGE", LATENCIES, 0, -1))
    if len(delays) != plan.latency_n:
        raise BenchError(f"{lib.name}: {len(delays)} latencies recorded, {plan.latency_n} expected")
    return {
        "p50": _percentile(delays, 50),
        "p99": _percentile(delays, 99),
        "max": delays[-1],
        "sent_rate": sent["rate"],
    }


def _percentile(ordered: list[float], pct: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def w3_latency(h: Harness, libs: list[Lib], plan: Plan, say: Callable[[str], None]) -> Samples:
    samples: Samples = {}
    for rep in range(plan.repeats):
        for lib in libs:
            if _skip(samples, "p50", lib.name):
                continue
            try:
                result = latency_once(h, lib, plan)
            except BenchError as exc:
                for key in ("p50", "p99", "max"):
                    _add(samples, key, lib.name, exc)
                say(f"W3 #{rep + 1} {lib.name:<20} {_show(exc, '')}")
                continue
            for key in ("p50", "p99", "max"):
                _add(samples, key, lib.name, result[key])
            say(
                f"W3 #{rep + 1} {lib.name:<20} p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
                f"max {result['max']:.2f} ms (sent at {result['sent_rate']:.0f}/s)"
            )
    return samples


def w4_memory(h: Harness, libs: list[Lib], plan: Plan, say: Callable[[str], None]) -> Samples:
    samples: Samples = {}
    for rep in range(plan.repeats):
        for lib in libs:
            if _skip(samples, "bytes per job", lib.name):
                continue
            try:
                h.redis.flush()
                time.sleep(0.2)
                before = int(h.redis.r.info("memory")["used_memory"])
                h.fill(lib, plan.memory_n, plan.memory_payload)
                time.sleep(0.2)  # the dispatcher's connections are closed: their buffers freed
                after = int(h.redis.r.info("memory")["used_memory"])
                value: Any = (after - before) / plan.memory_n
            except BenchError as exc:
                value = exc
            _add(samples, "bytes per job", lib.name, value)
            say(f"W4 #{rep + 1} {lib.name:<20} {_show(value, '{:,.0f} bytes/job')}")
    return samples


def w5_ceiling(h: Harness, plan: Plan, say: Callable[[str], None]) -> Samples:
    samples: Samples = {}
    redis_benchmark = shutil.which("redis-benchmark")
    if redis_benchmark is None:
        _add(samples, "redis-benchmark", "redis", BenchError("redis-benchmark not found on PATH"))
        return samples
    base = [redis_benchmark, "-h", "127.0.0.1", "-p", str(h.redis.port), "-q", "-n", str(plan.redis_bench_n)]
    for rep in range(plan.repeats):
        for pipeline in (1, 32):
            h.redis.flush()
            sha = h.redis.r("SCRIPT", "LOAD", CLAIM_LIKE_LUA).decode()
            for i in range(1000):
                h.redis.r("ZADD", "w5:ready", i, f"job{i}")
            runs = [
                ([*base, "-P", str(pipeline), "-t", "set,lpush,zadd"], None),
                ([*base, "-P", str(pipeline), "EVALSHA", sha, "3", "w5:ready", "w5:running", "w5:job", "tok"],
                 "EVALSHA claim-like script"),
            ]  # fmt: skip
            for args, label in runs:
                out = subprocess.run(args, capture_output=True, text=True, timeout=600).stdout
                for command, rate in _parse_redis_benchmark(out):
                    name = f"{label or command}, -P {pipeline}"
                    _add(samples, name, "redis", rate)
                    say(f"W5 #{rep + 1} {name:<32} {rate:,.0f} ops/s")
    return samples


def _parse_redis_benchmark(output: str) -> list[tuple[str, float]]:
    found = []
    for chunk in re.split(r"[\r\n]+", output):
        m = re.match(r"^\s*(.+?): ([\d.]+) requests per second", chunk)
        if m:
            found.append((m.group(1).split()[0], float(m.group(2))))
    return found


def _show(value: Any, fmt: str) -> str:
    if isinstance(value, Unsupported):
        return "n/a"
    if isinstance(value, Exception):
        return "FAILED: " + str(value).splitlines()[0]
    return fmt.format(value)


# -- summaries and tables ---------------------------------------------------------------------


def summarise(samples: Samples) -> dict[str, dict[str, Any]]:
    """Median and range of each cell."""
    out: dict[str, dict[str, Any]] = {}
    for variant, cells in samples.items():
        for lib, cell in cells.items():
            entry: dict[str, Any] = {"samples": cell["samples"]}
            if cell["samples"]:
                entry.update(
                    median=statistics.median(cell["samples"]),
                    min=min(cell["samples"]),
                    max=max(cell["samples"]),
                )
            if "na" in cell:
                entry["na"] = cell["na"]
            if cell.get("errors"):
                entry["errors"] = cell["errors"]
            out.setdefault(variant, {})[lib] = entry
    return out


@dataclass
class TableSpec:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    number: str  # format of one number


TABLES = [
    TableSpec("W1", "W1 dispatch throughput", "jobs/s", True, "{:,.0f}"),
    TableSpec(
        "W2", "W2 drain throughput (first job start to last job end unless noted)", "jobs/s", True, "{:,.0f}"
    ),
    TableSpec(
        "W2-noop",
        "W2-noop drain throughput, empty handler, 1 worker (first job start to last job end)",
        "jobs/s",
        True,
        "{:,.0f}",
    ),
    TableSpec("W2-noop CPU", "W2-noop CPU time per job during the drain", "us", False, "{:,.1f}"),
    TableSpec("W3", "W3 latency, dispatch to handler start", "ms", False, "{:,.1f}"),
    TableSpec("W4", "W4 Redis memory per queued job", "bytes", False, "{:,.0f}"),
]


def _cell(entry: dict[str, Any] | None, number: str) -> str:
    if entry is None:
        return "-"
    if "median" in entry:
        text = number.format(entry["median"])
        if len(entry["samples"]) > 1:
            text += f" ({number.format(entry['min'])}-{number.format(entry['max'])})"
        if entry.get("errors"):
            text += " [some runs failed]"
        return text
    if "na" in entry:
        return "n/a"
    return "failed"


def is_ours(lib: str) -> bool:
    """aiojobs-redis, at the working tree or at a baseline ref ("aiojobs-redis@<ref>")."""
    return lib == OURS or lib.startswith(OURS + "@")


def _ratio(row: dict[str, Any], spec: TableSpec) -> str:
    ours = row.get(OURS, {}).get("median")
    peers = {lib: e["median"] for lib, e in row.items() if not is_ours(lib) and "median" in e}
    if ours is None or not peers:
        return "n/a"
    pick = max if spec.higher_is_better else min
    best = pick(peers, key=lambda lib: peers[lib])
    if peers[best] == 0:
        return "n/a"
    return f"{ours / peers[best]:.2f} ({best})"


def _base_ratio(row: dict[str, Any], base: str) -> float | None:
    ours, then = row.get(OURS, {}).get("median"), row.get(base, {}).get("median")
    return ours / then if ours is not None and then else None


def render_table(spec: TableSpec, summary: dict[str, dict[str, Any]], libs: list[str]) -> str:
    better = "higher" if spec.higher_is_better else "lower"
    reads = ">1: aiojobs-redis faster" if spec.higher_is_better else "<1: aiojobs-redis better"
    bases = [lib for lib in libs if is_ours(lib) and lib != OURS]
    lines = [
        f"### {spec.title}, {spec.unit} ({better} is better)",
        "",
        f"Median (min-max). Ratio = aiojobs-redis ÷ best peer; {reads}."
        + "".join(f" ÷ {base}: this tree's figure ÷ {base}'s." for base in bases),
        "",
        "| " + " | ".join(["variant", *libs, "ratio", *(f"÷ {b}" for b in bases)]) + " |",
        "|" + "---|" * (len(libs) + 2 + len(bases)),
    ]
    for variant, row in summary.items():
        cells = [_cell(row.get(lib), spec.number) for lib in libs]
        against = [f"{r:.2f}" if (r := _base_ratio(row, b)) is not None else "n/a" for b in bases]
        lines.append("| " + " | ".join([variant, *cells, _ratio(row, spec), *against]) + " |")
    if spec.key == "W2-noop":
        ratio = _ratio(summary.get("1 worker", {}), spec)
        lines += ["", f"Goal: at least 5x the best peer in the same run; measured {ratio}."]
    return "\n".join(lines)


BASELINE_MIN = 0.97  # the working tree's throughput against the baseline's, at least


def render_baseline(report: dict[str, Any], base: str) -> str:
    """Every W1/W2 figure of the working tree against the same figure of the baseline ref."""
    b = report["meta"]["baseline"]
    lines = [
        f"### aiojobs-redis against {b['ref']} (commit {b['commit'][:12]}), same run",
        "",
        f"This tree's median ÷ {b['ref']}'s. Throughput passes at {BASELINE_MIN} or more; CPU per job"
        f" at {1 / BASELINE_MIN:.2f} or less.",
        "",
        f"| workload | variant | {OURS} | {base} | ratio | |",
        "|---|---|---|---|---|---|",
    ]
    for spec in TABLES:
        if spec.key not in ("W1", "W2", "W2-noop", "W2-noop CPU"):
            continue
        for variant, row in report["workloads"].get(spec.key, {}).items():
            ratio = _base_ratio(row, base)
            if ratio is None:
                verdict = "n/a"
            elif spec.higher_is_better:
                verdict = "ok" if ratio >= BASELINE_MIN else "BELOW"
            else:
                verdict = "ok" if ratio <= 1 / BASELINE_MIN else "ABOVE"
            cells = [_cell(row.get(OURS), spec.number), _cell(row.get(base), spec.number)]
            shown = "n/a" if ratio is None else f"{ratio:.3f}"
            lines.append(f"| {spec.key} | {variant} | {cells[0]} | {cells[1]} | {shown} | {verdict} |")
    return "\n".join(lines)


def render_w5(summary: dict[str, dict[str, Any]], drain: dict[str, Any] | None) -> str:
    lines = [
        "### W5 the ceiling: one Redis core (redis-benchmark, 50 clients), ops/s",
        "",
        "| command | ops/s, median (min-max) |",
        "|---|---|",
    ]
    for variant, row in summary.items():
        lines.append(f"| {variant} | {_cell(row.get('redis'), '{:,.0f}')} |")
    eval_p1 = summary.get("EVALSHA claim-like script, -P 1", {}).get("redis", {}).get("median")
    ours = (drain or {}).get(OURS, {}).get("median")
    if eval_p1 and ours:
        lines += [
            "",
            f"aiojobs-redis drains {ours:,.0f} jobs/s with one worker: 1/{eval_p1 / ours:.1f} of the "
            f"claim-like EVALSHA rate at -P 1 ({eval_p1:,.0f}/s).",
        ]
    return "\n".join(lines)


# -- machine, report --------------------------------------------------------------------------


def machine_facts(redis: PrivateRedis) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    git = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_version": redis.version(),
        "redis_server": "private redis-server on a loopback port, --save '' --appendonly no",
        "git": git.stdout.strip() or "?",
    }


def busy_processes() -> list[str]:
    """The processes using the most CPU right now, other than ours: what else was running."""
    out = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True, text=True
    ).stdout
    return [" ".join(line.split()) for line in out.splitlines()[:6]]


RESULTS_START = "<!-- results:start (generated by run.py; edits here are overwritten) -->"
RESULTS_END = "<!-- results:end -->"


def write_readme(report: dict[str, Any], tables_md: str) -> None:
    meta = report["meta"]
    m = meta["machine"]
    libs = report["libraries"]
    lines = [
        RESULTS_START,
        "",
        f"Measured {meta['started']} in {meta['duration_s'] / 60:.1f} minutes: {meta['n']:,} jobs per "
        f"W1/W2 run, {meta['repeats']} repeat(s) per cell, commit `{m['git']}`.",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, Linux {m['kernel']}, Python "
        f"{m['python']}, Redis {m['redis_version']} ({m['redis_server']}). Load average "
        f"{meta['loadavg_start']} at the start and {meta['loadavg_end']} at the end; busiest "
        f"processes at the start: {'; '.join(meta['busy_at_start'][:4])}.",
        "",
        *([meta["note"], ""] if meta.get("note") else []),
        *(
            [
                f"{OURS}@{b['ref']} is the package at {b['ref']} (commit `{b['commit'][:12]}`), run by the "
                f"same interpreter with the same dependencies and benchmark scripts as {OURS}.",
                "",
            ]
            if (b := meta.get("baseline"))
            else []
        ),
        "| library | version | concurrency | idle wait (W3) | notes |",
        "|---|---|---|---|---|",
    ]
    for name, info in libs.items():
        if "error" in info:
            lines.append(f"| {name} | - | - | - | could not run: {info['error'].splitlines()[0]} |")
        else:
            lines.append(
                f"| {name} | {info.get('version', '?')} | {info.get('concurrency_knob', '?')} | "
                f"{info.get('polling', '?')} | {info.get('notes', '')} |"
            )
    lines += ["", tables_md, "", "![W2 drain and W3 latency](results/chart.png)", "", RESULTS_END]
    block = "\n".join(lines)
    text = README.read_text() if README.exists() else ""
    if RESULTS_START in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_START, 1)
        tail = rest.split(RESULTS_END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    README.write_text(text)


def make_chart(json_path: Path, png: Path, say: Callable[[str], None]) -> None:
    req = HERE / "report" / "requirements.txt"
    try:
        python = ensure_venv("report", req, hashlib.sha256(req.read_bytes()).hexdigest(), say)
        _checked([str(python), str(HERE / "report" / "chart.py"), str(json_path), str(png)], "draw the chart")
    except BenchError as exc:
        say(f"chart not drawn: {exc}")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--libs", default=",".join(LIBS), help=f"comma-separated, from: {', '.join(LIBS)}")
    p.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated, from: {','.join(WORKLOADS)}"
    )
    p.add_argument("--repeats", type=int, help="runs per cell (default 3; --quick: 1)")
    p.add_argument("--n", type=int, help="jobs per W1/W2 run (default 20,000; --quick: 500)")
    p.add_argument("--quick", action="store_true", help="a smoke run: few jobs, one repeat, no report")
    p.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        help="regenerate README results + chart (default: on unless --quick)",
    )
    p.add_argument(
        "--output", type=Path, help="results JSON (default results/latest.json; --quick: results/quick.json)"
    )
    p.add_argument("--redis-server", default="redis-server", help="the redis-server binary to start")
    p.add_argument(
        "--aiojobs-python",
        type=Path,
        help="interpreter for aiojobs-redis (default: this one if it imports the package from this "
        "repository, else benchmarks/.venvs/aiojobs-redis)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also record aiojobs-redis's 1-worker W2 drain with py-spy (results/drain-profile.svg)",
    )
    p.add_argument(
        "--baseline-ref",
        metavar="REF",
        help="also measure aiojobs-redis at this git ref (e.g. v0.1.0), side by side, as "
        "aiojobs-redis@REF: same interpreter and dependencies, only the package's code differs",
    )
    p.add_argument(
        "--baseline-dir",
        type=Path,
        default=HERE / ".baseline",
        help="where the baseline's package files are extracted (default benchmarks/.baseline)",
    )
    p.add_argument(
        "--priority",
        type=int,
        default=0,
        help="dispatch aiojobs-redis's jobs at this priority level (-10..10; default 0, the plain "
        "path); the other libraries ignore it",
    )
    p.add_argument("--note", help="a sentence for the report, e.g. where the measured package came from")
    p.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: regenerate the tables, README section and chart from a results file",
    )
    args = p.parse_args(argv)
    args.libs = [x.strip() for x in args.libs.split(",") if x.strip()]
    canonical = {w.upper(): w for w in WORKLOADS}
    args.workloads = [
        canonical.get(x.strip().upper(), x.strip()) for x in args.workloads.split(",") if x.strip()
    ]
    unknown = [x for x in args.libs if x not in LIBS] + [x for x in args.workloads if x not in WORKLOADS]
    if unknown:
        p.error(f"unknown: {', '.join(unknown)}")
    if not -10 <= args.priority <= 10:
        p.error(f"--priority must be from -10 to 10, not {args.priority}")
    if args.baseline_ref and OURS not in args.libs:
        p.error(f"--baseline-ref needs {OURS} in --libs")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        return Plan(
            n=args.n or 500, repeats=args.repeats or 1, latency_n=200, latency_rate=500,
            memory_n=2_000, memory_payload=100, redis_bench_n=20_000,
        )  # fmt: skip
    return Plan(
        n=args.n or 20_000, repeats=args.repeats or 3, latency_n=2_000, latency_rate=500,
        memory_n=100_000, memory_payload=100, redis_bench_n=200_000,
    )  # fmt: skip


def prepare_libs(
    names: list[str], args: argparse.Namespace, say: Callable[[str], None]
) -> tuple[list[Lib], dict[str, Any]]:
    libs, infos = [], {}
    for name in names:
        try:
            if name == OURS and args.aiojobs_python:
                python = args.aiojobs_python
            elif name == OURS and ours_is_importable_here():
                python = Path(sys.executable)
            else:
                python = ensure_venv(name, PEERS / name / "requirements.txt", _stamp(name), say)
            libs.append(Lib(name, python))
        except BenchError as exc:
            infos[name] = {"error": str(exc)}
            say(f"{name}: {exc}")
    return libs, infos


def _git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True)
    if proc.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {proc.stderr.decode().strip()}")
    return proc.stdout.decode().strip()


def baseline_lib(ref: str, ours: Lib, where: Path, say: Callable[[str], None]) -> tuple[Lib, str]:
    """aiojobs-redis at `ref`: the package's files at that commit (<where>/<commit>), imported
    ahead of the working tree's by the same interpreter, through the same bench.py."""
    commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    source = where.resolve() / commit[:12]
    if not (source / "aiojobs_redis" / "__init__.py").exists():
        say(f"extracting aiojobs_redis at {ref} ({commit[:12]}) into {source}")
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit, "aiojobs_redis"], capture_output=True
        )
        if archive.returncode != 0:
            raise BenchError(f"git archive {commit}: {archive.stderr.decode().strip()}")
        partial = source.with_name(source.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(partial, filter="data")
        # Compiled now, so that no run counts the compiling in its "from process start" figure.
        _checked([str(ours.python), "-m", "compileall", "-q", str(partial)], "compile the baseline")
        shutil.rmtree(source, ignore_errors=True)
        partial.rename(source)
    return Lib(f"{OURS}@{ref}", ours.python, home=OURS, source=source), commit


def check_baseline_source(lib: Lib) -> None:
    """Refuse to compare the working tree with itself: the baseline must import its own tree."""
    found = lib.info.get("source")
    assert lib.source is not None
    if not found or not Path(found).resolve().is_relative_to(lib.source.resolve()):
        raise BenchError(f"{lib.name} imported aiojobs_redis from {found}, not from {lib.source}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return render_only(args.render, args.note)
    plan = make_plan(args)
    report_on = args.report if args.report is not None else not args.quick
    output = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")
    t0 = time.monotonic()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    def say(message: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    libs, infos = prepare_libs(args.libs, args, say)
    baseline: dict[str, str] | None = None
    ours = next((lib for lib in libs if lib.name == OURS), None)
    if ours is not None:
        # The working tree compiled too, as the baseline is: with PYTHONDONTWRITEBYTECODE set,
        # every run would otherwise count compiling the package in "from process start".
        package = str(REPO / "aiojobs_redis")
        _checked([str(ours.python), "-m", "compileall", "-q", package], "compile the package")
    if args.baseline_ref and ours is not None:
        try:
            base, commit = baseline_lib(args.baseline_ref, ours, args.baseline_dir, say)
            libs.insert(libs.index(ours) + 1, base)  # the two take turns next to each other
            baseline = {"ref": args.baseline_ref, "commit": commit, "lib": base.name}
        except BenchError as exc:
            infos[f"{OURS}@{args.baseline_ref}"] = {"error": str(exc)}
            say(f"baseline: {exc}")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        redis = PrivateRedis(args.redis_server, Path(tmp))
        redis.start()
        try:
            say(f"private Redis {redis.version()} on port {redis.port}")
            h = Harness(redis, Path(tmp), args.priority)
            for lib in list(libs):
                try:
                    lib.info = h.role(lib, ["info"], timeout=120)
                    if lib.source is not None:
                        check_baseline_source(lib)
                    infos[lib.name] = lib.info
                except (BenchError, Unsupported) as exc:
                    infos[lib.name] = {"error": str(exc)}
                    libs.remove(lib)
                    say(f"{lib.name}: {exc}")
            meta: dict[str, Any] = {
                "started": started,
                "n": plan.n,
                "repeats": plan.repeats,
                "plan": plan.__dict__,
                "quick": args.quick,
                "note": args.note,
                "baseline": baseline,
                "priority": args.priority,
                "machine": machine_facts(redis),
                "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                "busy_at_start": busy_processes(),
            }
            raw: dict[str, Samples] = {}
            steps: dict[str, Callable[[], dict[str, Samples]]] = {
                "W1": lambda: {"W1": w1_dispatch(h, libs, plan, say)},
                "W2": lambda: {"W2": w2_drain(h, libs, plan, say)},
                "W2-noop": lambda: w2_noop(h, libs, plan, say),
                "W3": lambda: {"W3": w3_latency(h, libs, plan, say)},
                "W4": lambda: {"W4": w4_memory(h, libs, plan, say)},
                "W5": lambda: {"W5": w5_ceiling(h, plan, say)},
            }
            for key in WORKLOADS:
                if key in args.workloads:
                    say(f"--- {key}")
                    raw.update(steps[key]())
            if args.profile:
                profile_drain(h, [lib for lib in libs if lib.name == OURS], plan, say)
            meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        finally:
            redis.stop()
    meta["duration_s"] = time.monotonic() - t0

    meta["libs_order"] = [lib.name for lib in libs] + [n for n in infos if n not in {x.name for x in libs}]
    summary = {key: summarise(samples) for key, samples in raw.items()}
    report = {"meta": meta, "libraries": infos, "workloads": summary}
    publish(report, output, report_on, say)
    return 1 if failed_runs(report) else 0


def failed_runs(report: dict[str, Any]) -> list[str]:
    """What failed (a library that could not run, a run that errored); "n/a" is no failure."""
    failed = [f"{name}: {info['error']}" for name, info in report["libraries"].items() if "error" in info]
    for key, variants in report["workloads"].items():
        for variant, cells in variants.items():
            for lib, entry in cells.items():
                failed += [f"{key} {variant} {lib}: {error}" for error in entry.get("errors", [])]
    return failed


def publish(report: dict[str, Any], output: Path, report_on: bool, say: Callable[[str], None]) -> None:
    """Print the tables; write the results JSON and, if asked, README's results and the chart."""
    meta, summary = report["meta"], report["workloads"]
    names = meta.get("libs_order") or list(report["libraries"])
    sections = [render_table(spec, summary[spec.key], names) for spec in TABLES if spec.key in summary]
    if "W5" in summary:
        sections.append(render_w5(summary["W5"], summary.get("W2", {}).get("1 worker")))
    base = (meta.get("baseline") or {}).get("lib")
    if base:
        sections.append(render_baseline(report, base))
    tables_md = "\n\n".join(sections)
    print("\n" + tables_md + "\n")
    for failure in failed_runs(report):
        print("FAILED " + failure.replace("\n", "\n    "))
    print(f"Total time: {meta['duration_s'] / 60:.1f} min")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    say(f"wrote {output.relative_to(REPO) if output.is_relative_to(REPO) else output}")
    if report_on:
        write_readme(report, tables_md)
        make_chart(output, RESULTS / "chart.png", say)
        say("regenerated benchmarks/README.md and results/chart.png")


def render_only(path: Path, note: str | None) -> int:
    """Re-publish an earlier run's results (README section, chart, tables) without measuring."""
    report = json.loads(path.read_text())
    if note is not None:
        report["meta"]["note"] = note
    publish(report, path, True, lambda message: print(message, file=sys.stderr))
    return 0


def profile_drain(h: Harness, libs: list[Lib], plan: Plan, say: Callable[[str], None]) -> None:
    """Record aiojobs-redis's one-worker drain under py-spy (needs py-spy in its virtualenv)."""
    if not libs:
        return
    lib = libs[0]
    py_spy = lib.python.parent / "py-spy"
    if not py_spy.exists():
        found = shutil.which("py-spy")
        if found is None:
            say("profile skipped: py-spy is not installed")
            return
        py_spy = Path(found)
    svg = RESULTS / "drain-profile.svg"
    speedscope = RESULTS / "drain-profile.speedscope.json"
    for out, fmt in ((svg, "flamegraph"), (speedscope, "speedscope")):
        h.redis.flush()
        h.fill(lib, plan.n, 0)
        wrap = [str(py_spy), "record", "--subprocesses", "--rate", "250", "--format", fmt, "-o", str(out)]
        wrap.append("--")
        # SIGINT: py-spy writes its profile, and the worker drains and exits.
        with h.workers(lib, 1, expect=plan.n, wrap=wrap, stop_signal=signal.SIGINT):
            h.wait_for_count(lib, plan.n, timeout=120 + plan.n / 20)
            first, last = h.wait_for_key(FIRST_START), h.wait_for_key(LAST_END)
        say(f"profiled drain ({fmt}): {plan.n / (last - first):,.0f} jobs/s under py-spy -> {out.name}")


if __name__ == "__main__":
    sys.exit(main())
