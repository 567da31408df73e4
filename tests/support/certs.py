"""Test certificates made with `openssl`, and private redis-servers started with extra options.

make_certs(directory) writes a test CA, a server certificate for 127.0.0.1/localhost signed
by it, a client certificate signed by it, and a second CA that signed nothing (the "wrong"
CA). Keys are P-256, so making them takes milliseconds.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from support.redis_server import free_port, server_binary


@dataclass(frozen=True, slots=True)
class Certs:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca_cert: Path


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN=aiojobs-redis {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _make_leaf(directory: Path, name: str, ca: tuple[Path, Path], usage: str, san: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (directory / f"{name}.{x}" for x in ("crt", "key", "csr", "ext"))
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext,
        cwd=directory,
    )  # fmt: skip
    return cert, key


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(directory, "ca")
    wrong_ca = _make_ca(directory, "wrong-ca")
    server = _make_leaf(directory, "server", ca, "serverAuth", "IP:127.0.0.1,DNS:localhost")
    client = _make_leaf(directory, "client", ca, "clientAuth", "")
    return Certs(ca[0], ca[1], server[0], server[1], client[0], client[1], wrong_ca[0])


class TLSUnsupported(RuntimeError):
    """The server binary was built without TLS (the embedded Valkey, for one)."""


class ConfiguredServer:
    """A redis-server on 127.0.0.1 started with extra options (no AOF unless asked).

    With `certs`, it listens with TLS only (plain port 0) and `url` is a rediss:// URL.
    `password` sets requirepass.
    """

    def __init__(
        self,
        directory: Path,
        *extra: str,
        certs: Certs | None = None,
        password: str | None = None,
    ) -> None:
        self.directory = directory
        self.extra = extra
        self.certs = certs
        self.password = password
        self.port = free_port()
        # A cluster node's bus listens on port + 10,000, so its port must stay below 55,536.
        while "--cluster-enabled" in extra and self.port > 55_535:
            self.port = free_port()
        self.binary = server_binary()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.certs is not None else "redis"
        auth = f":{self.password}@" if self.password is not None else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--bind", "127.0.0.1", "--save", "", "--dir", str(self.directory)]
        args += ["--logfile", str(self.directory / "redis.log")]
        if self.certs is None:
            args += ["--port", str(self.port)]
        else:
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += [
                "--tls-cert-file",
                str(self.certs.server_cert),
                "--tls-key-file",
                str(self.certs.server_key),
            ]
            args += ["--tls-ca-cert-file", str(self.certs.ca_cert), "--tls-auth-clients", "no"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen([*args, *self.extra])
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                if self.certs is not None and "TLS support" in log:
                    raise TLSUnsupported(f"{self.binary} was built without TLS")
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                if self.certs is None:
                    raw.sendall(b"PING\r\n")
                    return raw.recv(64)[:1] in (b"+", b"-")  # PONG, or NOAUTH with a password
                context = ssl.create_default_context(cafile=str(self.certs.ca_cert))
                context.load_cert_chain(self.certs.client_cert, self.certs.client_key)
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"PING\r\n")
                    return tls.recv(64)[:1] in (b"+", b"-")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> ConfiguredServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
