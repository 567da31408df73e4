"""Reading the per-process ledger files the fault jobs write, and checking them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    job_id: str
    attempt: int
    pid: int
    event: str
    at: float


def read_ledger(ledger_dir: Path) -> list[Run]:
    runs = []
    for path in ledger_dir.glob("*.log"):
        for line in path.read_text().splitlines():
            job_id, attempt, pid, event, at = line.split()
            runs.append(Run(job_id, int(attempt), int(pid), event, float(at)))
    return sorted(runs, key=lambda r: r.at)


def starts(runs: list[Run]) -> Counter[str]:
    return Counter(r.job_id for r in runs if r.event == "start")


def ends(runs: list[Run]) -> Counter[str]:
    return Counter(r.job_id for r in runs if r.event == "end")


@dataclass(frozen=True)
class LedgerReport:
    """What the ledger says about a run, against the ids whose dispatch was acknowledged."""

    lost: list[str]  # acknowledged, never finished
    duplicates: dict[str, int]  # job id -> runs beyond the first that finished
    unfinished_runs_by_pid: dict[int, int]  # runs that started and never ended, per process

    def summary(self) -> str:
        return (
            f"lost={len(self.lost)} duplicate_runs={sum(self.duplicates.values())} "
            f"unfinished_runs={sum(self.unfinished_runs_by_pid.values())}"
        )


def check(runs: list[Run], dispatched: set[str]) -> LedgerReport:
    """Lost jobs, duplicate runs, and runs cut short (by a killed process, say)."""
    finished = ends(runs)
    lost = sorted(job_id for job_id in dispatched if finished[job_id] == 0)
    started = starts(runs)
    duplicates = {job_id: n - 1 for job_id, n in started.items() if n > 1}
    open_runs: Counter[tuple[str, int]] = Counter()
    for run in runs:
        key = (run.job_id, run.pid)
        open_runs[key] += 1 if run.event == "start" else -1
    unfinished: Counter[int] = Counter()
    for (_, pid), count in open_runs.items():
        if count > 0:
            unfinished[pid] += count
    return LedgerReport(lost, duplicates, dict(unfinished))
