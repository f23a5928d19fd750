"""The gateway as a child process (`python -m gateway`), and a reader of its /metrics:
for the demo and the tests.

It runs in its own session, so a Ctrl-C at the terminal reaches only the parent,
which stops its children in order.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from serving.process import free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

_LABEL = re.compile(r'(\w+)="([^"]*)"')


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` carrying `labels` in a /metrics text.

    A line scan rather than prometheus_client's parser: tests poll it every 50 ms
    on loaded machines, where the parser's cost would blur their timings.
    """
    total = 0.0
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        found, _, label_text = series.partition("{")
        if found == name and labels.items() <= dict(_LABEL.findall(label_text)).items():
            total += float(value)
    return total


def stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL if it outlasts `timeout`; returns once it has exited."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class GatewayProcess:
    """One gateway replica. `env` holds ROLLGATE_* settings beyond routes and the admin token."""

    def __init__(
        self,
        routes: dict,
        workdir: Path,
        env: dict[str, str],
        *,
        admin_token: str,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log = workdir / f"gateway-{self.port}.log"
        self._admin_token = admin_token
        self._routes = workdir / "routes.yaml"
        self._routes.write_text(yaml.safe_dump(routes))
        self._env = {
            **os.environ,
            "ROLLGATE_ROUTES_FILE": str(self._routes),
            "ROLLGATE_ADMIN_TOKEN": admin_token,
            **env,
        }
        self._proc: subprocess.Popen | None = None

    def start(self) -> GatewayProcess:
        command = [sys.executable, "-m", "gateway", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                command,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path.cwd(),
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._healthy():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the gateway did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a node dies."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc)

    def admin(self, url: str | None = None) -> httpx.Client:
        """A client of the admin API (on `url` when it has a port of its own)."""
        headers = {"authorization": f"Bearer {self._admin_token}"}
        return httpx.Client(base_url=url or self.url, headers=headers, timeout=10)

    def create_key(self, tenant: str, *, debug: bool = True, **spec: object) -> str:
        """A client key for `tenant`, created as an operator would (`rollgate keys create`)."""
        body = {"name": f"{tenant}-app", "tenant": tenant, **spec}
        if debug:
            body["scopes"] = ["debug"]  # the tests and the demo see which variant answered
        with self.admin() as admin:
            created = admin.post("/admin/keys", json=body)
        created.raise_for_status()
        return created.json()["key"]

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()
