"""Users' scores that cannot be forged, replayed or aimed.

Every answer carries a feedback token: the request id, the route, the variant
that answered and its role, the key and tenant that asked, and an expiry,
sealed with AES-GCM under a key derived from the server secret. The client
can neither read the variant out of it nor change a field; any replica can
open it (no per-replica ledger, so a score may reach another replica than the
answer came from).

    >>> tokens = FeedbackTokens(secret, ttl_s=3600, clock=time.time)
    >>> answered = Answered("chatcmpl-1", "support", "acme-voice", "candidate", None, "acme")
    >>> token = tokens.seal(answered)
    >>> tokens.open(token).variant
    'acme-voice'

`ScoredOnce` makes the first score for a request id the only one: a second
is refused (409), not added and not a replacement, so one answer is one
sample of the evidence however often its token is sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import redis.asyncio as redis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.exceptions import RedisError

from gateway.errors import Unavailable

TOKEN_PREFIX = "rgf1."
MAX_TOKEN_CHARS = 1024  # a sealed token is a few hundred; longer is not ours
_NONCE_BYTES = 12


class InvalidToken(Exception):
    """Not a token this gateway sealed, tampered with, or expired."""


@dataclass(frozen=True, slots=True)
class Answered:
    """What a feedback token vouches for."""

    request_id: str
    route: str
    variant: str
    role: str
    key_id: str | None  # None: the gateway ran without keys
    tenant: str
    expires_at: float = 0.0  # wall clock; set by `seal`


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose: the cohort hash and feedback tokens never share one."""
    return hmac.new(secret, f"rollgate {purpose}".encode(), hashlib.sha256).digest()


class FeedbackTokens:
    def __init__(self, secret: bytes, *, ttl_s: float, clock: Callable[[], float]) -> None:
        self._aead = AESGCM(derive_key(secret, "feedback token v1"))
        self._ttl_s = ttl_s
        self._clock = clock

    def seal(self, answered: Answered) -> str:
        claims = asdict(answered) | {"expires_at": self._clock() + self._ttl_s}
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, json.dumps(claims).encode(), None)
        return TOKEN_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, token: str) -> Answered:
        if len(token) > MAX_TOKEN_CHARS or not token.startswith(TOKEN_PREFIX):
            raise InvalidToken("not a feedback token")
        body = token.removeprefix(TOKEN_PREFIX)
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise InvalidToken("the feedback token is not valid") from exc
        answered = Answered(**json.loads(plain))
        if answered.expires_at <= self._clock():
            raise InvalidToken("the feedback token has expired")
        return answered


class ScoredOnce(Protocol):
    async def first(self, request_id: str, ttl_s: float) -> bool:
        """True the first time a request id is scored within `ttl_s`; False after."""
        ...

    async def close(self) -> None: ...


class LocalScoredOnce:
    """One gateway's memory of scored request ids, bounded in size and time.

    With several replicas use `RedisScoredOnce`: a token can be sent to each.
    """

    def __init__(self, capacity: int, clock: Callable[[], float]) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()  # request id -> forget after
        self._capacity = capacity
        self._clock = clock

    async def first(self, request_id: str, ttl_s: float) -> bool:
        now = self._clock()
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if request_id in self._seen:
            return False
        self._seen[request_id] = now + ttl_s
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    async def close(self) -> None:
        """Nothing to release."""


class RedisScoredOnce:
    """Scored request ids shared by every replica: `{prefix}:scored:{request id}`, expiring."""

    def __init__(self, url: str, prefix: str = "rollgate") -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._prefix = prefix

    async def first(self, request_id: str, ttl_s: float) -> bool:
        # A store that cannot say refuses the score (503): a lost score costs one
        # sample, a duplicate counted twice could decide a rollout.
        try:
            key = f"{self._prefix}:scored:{request_id}"
            return bool(await self._redis.set(key, 1, nx=True, px=max(1, round(ttl_s * 1000))))
        except RedisError as exc:
            raise Unavailable("scores cannot be recorded now; try again") from exc

    async def close(self) -> None:
        await self._redis.aclose()
