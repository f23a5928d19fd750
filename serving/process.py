"""Start, health-check and stop a local vLLM server process.

    >>> with VllmServer(config, log_path=Path("vllm.log")) as server:
    ...     server.wait_ready(timeout=180)
    ...     ...  # talk to config.base_url

vLLM runs as an API server plus an engine-core process plus workers. The
server starts in a session of its own, so the whole group (engine included)
stops with one signal and nothing is orphaned; `stop()` makes sure of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from types import TracebackType

import httpx

from serving.adapters import validate_config
from serving.config import ServingConfig
from serving.errors import ServingError, VllmStartError

LOG_TAIL_LINES = 40
KILL_WAIT = 30.0


def _group_states(pgid: int) -> dict[int, str]:
    states = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[2]) == pgid:
            states[int(stat.parent.name)] = fields[0]
    return states


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (read from /proc; zombies and the dead excluded)."""
    return [pid for pid, state in _group_states(pgid).items() if state not in ("Z", "X")]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open(errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except FileNotFoundError:
        return "(no log written)"


class VllmServer:
    """One vLLM server process group, owned by this object."""

    def __init__(self, config: ServingConfig, log_path: Path, python: str = sys.executable) -> None:
        self.config = config
        self.log_path = log_path
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Validate the adapters (raising `InvalidAdapter`), then start the process group."""
        if self._proc is not None:
            raise RuntimeError("this vLLM server was already started")
        validate_config(self.config)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.config.command(self.python),
                env={**os.environ, **self.config.environment()},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float, poll: float = 0.5) -> None:
        """Block until `/health` answers 200; stop the server and raise if it cannot."""
        if self._proc is None:
            raise RuntimeError("start() the server first")
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.config.base_url, timeout=2.0) as http:
            while time.monotonic() < deadline:
                code = self._proc.poll()
                if code is not None:
                    raise VllmStartError(
                        f"vLLM exited with code {code} while starting", log_tail(self.log_path)
                    )
                try:
                    if http.get("/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet: the model is still loading
                time.sleep(poll)
        self.stop()
        raise VllmStartError(f"vLLM was not healthy after {timeout:.0f} s", log_tail(self.log_path))

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the whole group, SIGKILL what is left after `grace` seconds."""
        if self._proc is None:
            return
        pgid = self._proc.pid
        self._signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while group_members(pgid) and time.monotonic() < deadline:
            self._proc.poll()  # reap the leader so it does not linger as a zombie
            time.sleep(0.2)
        if group_members(pgid):
            self._signal_group(pgid, signal.SIGKILL)
        self._proc.wait()
        deadline = time.monotonic() + KILL_WAIT
        while group_members(pgid):  # exiting processes release their memory first
            if time.monotonic() > deadline:
                raise ServingError(f"vLLM processes outlived SIGKILL: {_group_states(pgid)}")
            time.sleep(0.05)
        self._proc = None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
