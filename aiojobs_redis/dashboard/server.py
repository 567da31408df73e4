"""Serving the dashboard with uvicorn inside the caller's event loop (`aiojobs-redis dashboard`).

The caller handles signals (the CLI calls `stop()`); uvicorn's own handlers stay out.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ..engine import RedisEngine
from ..errors import ConfigurationError
from ..topology import is_loopback as is_loopback  # the one rule, also the doctor's
from .app import create_app

try:
    import uvicorn
except ImportError:  # pragma: no cover - depends on the environment
    raise ConfigurationError(
        "the dashboard command needs the 'dashboard' extra: pip install 'aiojobs-redis[dashboard]'"
    ) from None

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the caller owns signal handling


class DashboardServer:
    """`create_app(engine, ...)` served on host:port until `stop()`.

    Binding anything but a loopback address needs a token or basic auth, unless
    `allow_unauthenticated` says otherwise. On loopback, requests must name a loopback host
    (see create_app's `allowed_hosts`). `port=0` picks a free port (see `port` once bound).
    """

    def __init__(
        self,
        engine: RedisEngine,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        basic_auth: tuple[str, str] | str | None = None,
        allow_unauthenticated: bool = False,
        **app_options: Any,
    ) -> None:
        if not is_loopback(host) and token is None and basic_auth is None and not allow_unauthenticated:
            raise ConfigurationError(
                f"the dashboard on {host} would be open to the network: give it a token or basic auth"
            )
        self.host, self.port = host, port
        if is_loopback(host):
            app_options.setdefault("allowed_hosts", {"127.0.0.1", "localhost", "::1", host})
        self.app = create_app(engine, token=token, basic_auth=basic_auth, **app_options)
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._stop_requested = False

    def __repr__(self) -> str:
        return f"<DashboardServer http://{self.host}:{self.port}/>"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def bind(self) -> None:
        """Open the listening socket now, so a busy port is a clear error before serving."""
        if self._socket is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConfigurationError(f"cannot serve the dashboard on {self.host}:{self.port}: {exc}") from exc
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._socket = sock

    async def run(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until `stop()`; `task_status.started(url)` once requests are answered."""
        self.bind()
        assert self._socket is not None
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        server = self._server = _Server(config)
        if self._stop_requested:
            server.should_exit = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [self._socket])
                # uvicorn only offers a flag for "started"
                while not server.started and not server.should_exit:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                log.info("dashboard on %s", self.url)
                task_status.started(self.url)
        finally:
            self._socket.close()
            self._socket = None

    def stop(self) -> None:
        self._stop_requested = True
        if self._server is not None:
            self._server.should_exit = True
