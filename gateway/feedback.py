"""Who answered which request, for as long as feedback about it is accepted.

Bounded in both memory (`capacity`, oldest dropped first) and time (`ttl`).

    >>> ledger = FeedbackLedger(capacity=100_000, ttl=3600, clock=time.monotonic)
    >>> ledger.served("req-1", route="support", variant="support-v2", role="candidate")
    >>> ledger.lookup("req-1").variant
    'support-v2'
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from gateway.exchange import Clock


@dataclass(frozen=True, slots=True)
class Served:
    route: str
    variant: str
    role: str
    at: float


class FeedbackLedger:
    def __init__(self, *, capacity: int, ttl: float, clock: Clock) -> None:
        self._entries: OrderedDict[str, Served] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl
        self._clock = clock

    def served(self, request_id: str, *, route: str, variant: str, role: str) -> None:
        self._entries[request_id] = Served(route, variant, role, self._clock())
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def lookup(self, request_id: str) -> Served | None:
        """The variant that answered, or None when unknown or older than the TTL."""
        self._expire()
        return self._entries.get(request_id)

    def _expire(self) -> None:
        horizon = self._clock() - self._ttl
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.at >= horizon:
                return
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
