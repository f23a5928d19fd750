"""Run a real, throwaway Prometheus on a loopback port, scraping given targets every second.

Prometheus 2.42 hands new targets to its scrapers on a 5 s tick, so the first
scrape of a target comes about 5 s after the server is ready.

>>> with prometheus_server(["http://127.0.0.1:8080"], tmp_path) as url:
...     source = PrometheusSource(url)
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from serving.process import free_port
from tests.processes import stop

JOB = "rollgate"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@contextmanager
def prometheus_server(
    targets: Sequence[str], workdir: Path, port: int | None = None
) -> Iterator[str]:
    """Yield the URL of a Prometheus that scrapes each target's /metrics (job `JOB`).

    `targets` are base URLs ("http://127.0.0.1:8080"); config, data and log go in
    `workdir`. Started again with the same `workdir` and `port`, it is the same
    server back from an outage, with the data it had.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed")
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(_config(targets)))
    log = workdir / "prometheus.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, url, log)
        yield url
    finally:
        stop(proc, timeout=STOP_TIMEOUT_S)
    if _ready(url):
        raise RuntimeError(f"Prometheus at {url} still answers after it was stopped")


def _config(targets: Sequence[str]) -> dict:
    hosts = [httpx.URL(t).netloc.decode() for t in targets]
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": hosts}]}],
    }


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"Prometheus did not start at {url}:\n{log.read_text(errors='replace')}"
            )
        time.sleep(0.05)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
