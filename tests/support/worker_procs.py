"""Worker processes for fault tests: start, signal, and clean up `aiojobs-redis work`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Worker processes run from here, so that `--import support.faultapp` finds the jobs.
TESTS = Path(__file__).resolve().parents[1]


class Workers:
    """`python -m aiojobs_redis work --import support.faultapp` processes on one server and prefix."""

    def __init__(self, url: str, prefix: str, log_dir: Path) -> None:
        self.url, self.prefix, self.log_dir = url, prefix, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, REDIS_URL=self.url, REDIS_JOB_PREFIX=self.prefix)
        env.pop("JOB_ENGINE", None)
        path = self.log_dir / f"worker-{len(self.procs)}.log"
        log = open(path, "wb")  # noqa: SIM115 - the process keeps it
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiojobs_redis",
                "work",
                "--import",
                "support.faultapp",
                "--queue",
                "faults",
                *args,
            ],
            cwd=TESTS,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        self._logs[proc.pid] = path
        return proc

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, str]:
        """Wait for `proc` to exit; its exit code and everything it logged."""
        code = proc.wait(timeout=timeout)
        return code, self.log_of(proc)

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        """What `proc` has logged so far."""
        return self._logs[proc.pid].read_text(errors="replace")

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("worker-*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")
