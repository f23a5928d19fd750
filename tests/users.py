"""Simulated application users: chat completions with sticky keys, some streamed, and scores.

A few threads send requests as random users of a fixed population and
record who was served by which variant; a rubric turns an answer into the
user's score (or no score), posted to /v1/feedback.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from gateway.forward import FEEDBACK_HEADER
from loadtests.answers import answer_text, streamed_text

Rubric = Callable[[str, str], float | None]  # (variant, answer text) -> score 0..1 or None
PROMPTS = ("How do I reset my password?", "Where is my order?", "Can I change my plan?")


@dataclass(frozen=True, slots=True)
class Served:
    sent: float  # wall clock, when the request went out
    at: float  # wall clock, when the answer ended
    user: str
    variant: str
    status: int
    text: str
    stream: bool = False


class Users:
    def __init__(
        self,
        url: str,
        route: str,
        *,
        population: int = 5000,
        threads: int = 3,
        stream_share: float = 0.3,
        max_tokens: int = 16,
        rubric: Rubric | None = None,
        keys: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        """`keys`: the client API keys users call with, user i with key i mod len(keys)."""
        self._url, self._route = url, route
        self._population, self._threads = population, threads
        self._stream_share, self._max_tokens = stream_share, max_tokens
        self._rubric = rubric
        self._keys = list(keys)
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.served: list[Served] = []
        self.failed: list[tuple[float, bool, str]] = []  # (wall clock, streamed, why): no answer

    def __enter__(self) -> Users:
        for i in range(self._threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def between(self, start: float, end: float = float("inf")) -> list[Served]:
        """Requests sent at or after `start` and answered before `end`."""
        with self._lock:
            return [s for s in self.served if start <= s.sent and s.at < end]

    def _run(self, index: int) -> None:
        rng = random.Random(self._rng.random() + index)
        with httpx.Client(base_url=self._url, timeout=60) as http:
            while not self._stop.is_set():
                user = f"user-{rng.randrange(self._population)}"
                try:
                    served, request_id, token = self._ask(http, user, rng)
                except _Failed as failure:
                    with self._lock:
                        self.failed.append((time.time(), failure.stream, str(failure)))
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self.served.append(served)
                score = self._rubric(served.variant, served.text) if self._rubric else None
                if score is not None and served.status == 200 and token:
                    body = {"request_id": request_id, "score": score, "token": token}
                    http.post("/v1/feedback", json=body, headers=self.auth(user))

    def key_of(self, user: str) -> int:
        """Which of the keys `user` calls with."""
        return int(user.rpartition("-")[2]) % len(self._keys)

    def auth(self, user: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self._keys[self.key_of(user)]}"} if self._keys else {}

    def _ask(self, http: httpx.Client, user: str, rng: random.Random) -> tuple[Served, str, str]:
        stream = rng.random() < self._stream_share
        sent = time.time()
        body = {
            "model": self._route,
            "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
            "max_tokens": self._max_tokens,
            "temperature": 0,  # the adapters' trained behaviour, as the serving tests measure it
            "stream": stream,
        }
        headers = {"x-rollgate-key": user, **self.auth(user)}
        try:
            with http.stream(
                "POST", "/v1/chat/completions", json=body, headers=headers
            ) as response:
                raw = response.read().decode(errors="replace")
        except httpx.HTTPError as exc:
            raise _Failed(stream, f"{type(exc).__name__}: {exc}") from exc
        text = streamed_text(raw.splitlines()) if stream else answer_text(raw)
        variant = response.headers.get("x-rollgate-variant", "")
        served = Served(sent, time.time(), user, variant, response.status_code, text, stream)
        ids = response.headers.get("x-request-id", ""), response.headers.get(FEEDBACK_HEADER, "")
        return served, *ids


class _Failed(Exception):
    """A request that got no answer at all (the connection failed)."""

    def __init__(self, stream: bool, why: str) -> None:
        super().__init__(why)
        self.stream = stream
