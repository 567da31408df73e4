"""Importing a part whose extra is not installed says which `pip install` adds it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [
        ("aiojobs_redis.integrations.aiohttp", "aiohttp", "aiohttp"),
        ("aiojobs_redis.dashboard.app", "starlette", "dashboard"),
    ],
)
def test_the_error_names_the_extra_to_install(module: str, missing: str, extra: str) -> None:
    hide_and_import = f"import sys; sys.modules[{missing!r}] = None; import {module}"
    run = subprocess.run([sys.executable, "-c", hide_and_import], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    last_line = run.stderr.strip().splitlines()[-1]
    assert last_line.startswith("aiojobs_redis.errors.ConfigurationError: ")
    assert last_line.endswith(f"pip install 'aiojobs-redis[{extra}]'")
