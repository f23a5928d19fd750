"""Tenants: whom users' scores come from, and the cap that keeps any one from deciding alone.

Scores (`POST /v1/feedback`) are recorded with the tenant of the key that made the
request; the satisfaction check then counts each tenant's scores only up to a
common cap, so that no tenant holds more than `max_tenant_share` of a variant's
evidence. The cap is a water level: tenants below it count whole, tenants above
it count as many scores as the level, with their own mean kept.

    >>> tenant_cap([300.0, 100.0, 50.0], untracked=0.0, max_share=0.5)
    150.0
    >>> tenant_cap([300.0], untracked=0.0, max_share=0.5)  # one tenant alone decides nothing
    0.0

Scores a source did not break down by tenant ("untracked": evidence stored before
tenants were recorded, series of a gateway that predates the label, the smallest
tenants beyond `MAX_TENANTS`) count as they are, as if each came from a tenant of
its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# The tenant of requests made without a client key.
ANONYMOUS_TENANT = "anonymous"
# Blind reviews of shadow pairs come from authenticated admins; they are not capped.
REVIEW_TENANT = "review"
# Tenants kept per window: a stored rollout record must not grow without bound.
# The smallest beyond it become untracked; each of those has fewer scores than any
# kept tenant, so at most 1/(MAX_TENANTS + 1) of the capped evidence.
MAX_TENANTS = 1000


@dataclass(frozen=True, slots=True)
class TenantScores:
    """One tenant's users' scores in a window: how many, and their sum (each 0..1)."""

    tenant: str
    count: float
    total: float


def merge(*groups: Iterable[TenantScores]) -> tuple[TenantScores, ...]:
    """Scores added up per tenant; the `MAX_TENANTS` largest kept, sorted by tenant."""
    sums: dict[str, tuple[float, float]] = {}
    for group in groups:
        for s in group:
            count, total = sums.get(s.tenant, (0.0, 0.0))
            sums[s.tenant] = (count + s.count, total + s.total)
    kept = sorted(sums.items(), key=lambda item: (-item[1][0], item[0]))[:MAX_TENANTS]
    return tuple(TenantScores(tenant, count, total) for tenant, (count, total) in sorted(kept))


def tenant_cap(counts: Iterable[float], untracked: float, max_share: float) -> float:
    """The most scores any tenant may count; `math.inf` when no tenant needs a cap.

    The largest c such that every tenant's min(n, c) is at most `max_share` of the
    capped total, untracked + sum of min(n, c). The share a tenant at the cap holds
    falls as c rises, so the level is found segment by segment from the top: with
    the j largest tenants at c and the rest whole (their sum plus untracked: `rest`),
    c is allowed while c * (1 - max_share * j) <= max_share * rest.
    """
    ordered = sorted((n for n in counts if n > 0), reverse=True)
    # rests[j]: untracked plus all but the j largest, summed from the smallest up: a running
    # difference could dip below zero and lose the last segment.
    rests = list(itertools.accumulate(reversed(ordered), initial=untracked))[::-1]
    for j, n in enumerate(ordered, start=1):
        rest = rests[j]
        slack = 1 - max_share * j
        level = math.inf if slack <= 0 else max_share * rest / slack
        if level >= n:
            return math.inf if j == 1 else n
        below = ordered[j] if j < len(ordered) else 0.0
        if level >= below:
            return level
    return math.inf


@dataclass(frozen=True, slots=True)
class Capped:
    """A variant's scores as the satisfaction check counts them."""

    count: float
    total: float
    tenants: int  # tenants the scores were broken down by
    cap: float  # per tenant; math.inf when none was needed


def capped(count: float, total: float, tenants: Sequence[TenantScores], max_share: float) -> Capped:
    """`count` scores summing to `total`, of which `tenants` are broken down, once capped.

    A capped tenant keeps its mean: its sum is scaled with its count.
    """
    tracked = sum(t.count for t in tenants)
    untracked = max(count - tracked, 0.0)
    untracked_total = min(max(total - sum(t.total for t in tenants), 0.0), untracked)
    cap = tenant_cap((t.count for t in tenants), untracked, max_share)
    kept = [(min(t.count, cap), t) for t in tenants if t.count > 0]
    return Capped(
        count=untracked + sum(n for n, _ in kept),
        total=untracked_total + sum(t.total * n / t.count for n, t in kept),
        tenants=len(tenants),
        cap=cap,
    )
