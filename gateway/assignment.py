"""Sticky weighted assignment of users to a route's stable or candidate variant.

    bucket = keyed-hash(server secret; route, rollout id, tenant, user) mod 10,000
    candidate  iff  bucket < min(weight, the key's blast radius) in basis points

Raising the weight only moves users from stable to candidate (the candidate's
buckets at 5% are a subset of those at 10%); a new rollout id reshuffles. The
hash is keyed with the server secret and takes the authenticated tenant, so a
client names its own users but cannot compute, or choose, which variant they
get; the response does not say either (only a key with the debug scope sees it).

A client can still guess the variant from what an answer says. `ShareGuard`
bounds what it gains: whatever user keys a tenant picks, the share of its
requests a candidate serves on a route stays near the weight (a minute's
sliding window, with room for honest chance). Beyond it a request goes to stable.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from rollout.traffic import FULL_WEIGHT_BP, Role, RouteTraffic

KEY_HEADER = "x-rollgate-key"
MAX_USER_KEY_CHARS = 256
GUARD_WINDOW_S = 60.0
GUARD_SIGMAS = 3.0  # honest traffic exceeds the bound about once in 740 requests' windows
GUARD_ROOM = 2.0  # requests: lets a handful of a small tenant's users keep their variant


def user_key(header: str | None, user: str | None, fallback: str) -> str:
    """The first of: explicit header, the OpenAI `user` field, `fallback` (the key's id)."""
    return (header or user or fallback)[:MAX_USER_KEY_CHARS]


def bucket(secret: bytes, route: str, rollout_id: str, tenant: str, user: str) -> int:
    message = f"{route}\0{rollout_id}\0{tenant}\0{user}".encode()
    digest = hashlib.blake2b(message, key=secret[:64], digest_size=8).digest()
    return int.from_bytes(digest, "big") % FULL_WEIGHT_BP


def choose_role(traffic: RouteTraffic, bucket_value: int, max_candidate_bp: int) -> Role:
    """Candidate for the buckets under the weight, never above the key's blast radius."""
    weight = min(traffic.weight_bp, max_candidate_bp)
    if traffic.candidate is None or bucket_value >= weight:
        return Role.STABLE
    return Role.CANDIDATE


def within_share(candidate: float, total: float, share: float) -> bool:
    """May one more request go to the candidate, `candidate` of `total` having gone there?

    >>> within_share(5, 100, 0.05), within_share(30, 100, 0.05)
    (True, False)
    """
    if share <= 0:
        return False
    n = total + 1
    room = GUARD_SIGMAS * math.sqrt(share * (1 - share) * n) + GUARD_ROOM
    return candidate + 1 <= share * n + room


@dataclass(slots=True)
class _Counts:
    window: int  # index of the current window
    total: float = 0.0
    candidate: float = 0.0
    previous_total: float = 0.0
    previous_candidate: float = 0.0


class ShareGuard:
    """Per route, rollout and tenant: how many requests went to the candidate lately.

    One replica's view (it bounds what each replica gives away); memory is one
    entry per active route and tenant, and tenants are created by admins.
    """

    def __init__(self, clock: Callable[[], float], window_s: float = GUARD_WINDOW_S) -> None:
        self._clock = clock
        self._window_s = window_s
        self._counts: dict[tuple[str, str, str], _Counts] = {}

    def decide(self, traffic: RouteTraffic, tenant: str, wanted: Role, share_bp: int) -> Role:
        """`wanted` unless it would take the tenant's candidate share past the weight."""
        now = self._clock()
        counts = self._current((traffic.route, traffic.rollout_id, tenant), now)
        # The previous window, weighted by how much of it still lies in the last minute.
        into = now / self._window_s - counts.window
        total = counts.total + counts.previous_total * (1 - into)
        candidate = counts.candidate + counts.previous_candidate * (1 - into)
        role = wanted
        if wanted is Role.CANDIDATE and not within_share(
            candidate, total, share_bp / FULL_WEIGHT_BP
        ):
            role = Role.STABLE
        counts.total += 1
        counts.candidate += role is Role.CANDIDATE
        return role

    def _current(self, key: tuple[str, str, str], now: float) -> _Counts:
        window = math.floor(now / self._window_s)
        counts = self._counts.get(key)
        if counts is None or counts.window < window - 1:
            if len(self._counts) > 1000:
                self._forget(window)
            counts = self._counts[key] = _Counts(window)
        elif counts.window == window - 1:
            counts.window = window
            counts.previous_total, counts.previous_candidate = counts.total, counts.candidate
            counts.total = counts.candidate = 0.0
        return counts

    def _forget(self, window: int) -> None:
        for key in [k for k, c in self._counts.items() if c.window < window - 1]:
            del self._counts[key]
