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
