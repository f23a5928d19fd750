"""Sticky weighted assignment of users to a route's stable or candidate variant.

    bucket = hash(route, rollout id, user key) mod 10,000
    candidate  iff  bucket < weight in basis points

Raising the weight only moves users from stable to candidate (the candidate's
buckets at 5% are a subset of those at 10%); a new rollout id reshuffles.
"""

from __future__ import annotations

import hashlib

from rollout.traffic import FULL_WEIGHT_BP, Role, RouteTraffic

KEY_HEADER = "x-rollgate-key"


def user_key(header: str | None, user: str | None, api_key: str | None) -> str | None:
    """The first of: explicit header, the OpenAI `user` field, the API key."""
    return header or user or api_key or None


def bucket(route: str, rollout_id: str, key: str) -> int:
    digest = hashlib.blake2b(f"{route}\0{rollout_id}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % FULL_WEIGHT_BP


def choose_role(traffic: RouteTraffic, key: str) -> Role:
    if traffic.candidate is None or traffic.weight_bp == 0:
        return Role.STABLE
    if bucket(traffic.route, traffic.rollout_id, key) < traffic.weight_bp:
        return Role.CANDIDATE
    return Role.STABLE
