"""The gateway as a real process, with the tests' admin token."""

from __future__ import annotations

from pathlib import Path

from gateway import process
from gateway.process import metric_sum, stop

ADMIN_TOKEN = "e2e-admin-token"
# The tests' server secret, so that they can compute which users a cohort holds.
SECRET = "e2e-server-secret"
__all__ = ["ADMIN_TOKEN", "SECRET", "GatewayProcess", "metric_sum", "stop"]


class GatewayProcess(process.GatewayProcess):
    def __init__(self, routes: dict, workdir: Path, env: dict[str, str], port: int | None = None):
        env = {"ROLLGATE_SECRET": SECRET, **env}
        super().__init__(routes, workdir, env, admin_token=ADMIN_TOKEN, port=port)
