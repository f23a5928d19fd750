"""The demo's application users: locust, headless, as a child process.

Locust runs `loadtests/locustfile.py` with the headless profile, calling with
the client keys it is given (in its environment as `ROLLGATE_KEYS`, never on its
command line, which any local user can read). It runs in its own session (a
Ctrl-C reaches only the demo, which stops locust in order); on SIGTERM locust
stops its users and writes its per-variant figures as CSV.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.process import stop

PROFILE = Path("loadtests/profiles/headless.conf")


@dataclass(frozen=True, slots=True)
class UserFigures:
    """What the users saw of one kind of request (`chat [base]`, `stream [acme-voice]`, ...)."""

    name: str
    requests: int
    failures: int
    median_ms: float
    p95_ms: float


class LocustLoad:
    def __init__(
        self, host: str, workdir: Path, *, users: int, route: str, keys: Sequence[str]
    ) -> None:
        self._command = [
            sys.executable, "-m", "locust", "--config", str(PROFILE), "--host", host,
            "--users", str(users), "--spawn-rate", str(users), "--route", route,
            "--csv", str(workdir / "locust"), "--only-summary",
        ]  # fmt: skip
        self._env = {**os.environ, "ROLLGATE_KEYS": ",".join(keys)}
        self._stats = workdir / "locust_stats.csv"
        self.log = workdir / "locust.log"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> LocustLoad:
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                self._command,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *_) -> None:
        if self._proc is not None:
            stop(self._proc, timeout=30)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def figures(self) -> list[UserFigures]:
        """Per request name, from locust's CSV (written when it stops); [] before that."""
        if not self._stats.exists():
            return []
        with self._stats.open() as f:
            rows = [r for r in csv.DictReader(f) if r["Name"] != "Aggregated"]
        return [
            UserFigures(
                name=r["Name"],
                requests=int(r["Request Count"]),
                failures=int(r["Failure Count"]),
                median_ms=float(r["Median Response Time"] or 0),
                p95_ms=float(r["95%"] or 0) if r["95%"] != "N/A" else 0.0,
            )
            for r in rows
        ]
