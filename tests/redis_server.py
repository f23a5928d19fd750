"""Run a real, throwaway redis-server on a loopback port, for tests.

>>> with redis_server() as url:
...     store = RedisStore(url)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serving.process import free_port
from tests.processes import stop

START_TIMEOUT_S = 10.0


@contextmanager
def redis_server() -> Iterator[str]:
    """Yield the URL of a fresh redis-server (nothing persisted) and stop it afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="redis-") as tmp:
        log = Path(tmp) / "redis.log"
        command = [binary, "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", tmp, "--logfile", str(log)]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_for_ping(proc, port, log)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(proc, timeout=START_TIMEOUT_S)
        if _pong(port):
            raise RuntimeError(f"redis-server on port {port} still answers after it was stopped")


def _wait_for_ping(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _pong(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            raise RuntimeError(f"redis-server did not start on port {port}:\n{text}")
        time.sleep(0.01)


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False
