"""Who is calling, and may they: client keys, admin tokens, the server secret.

`Access` is what the handlers ask. It holds the current `KeyRing` (swapped by
`KeySync` when the store changes), the server secret and the feedback tokens
sealed with it (cohorts are keyed with it too), and the failure counts that
slow down guessing.

    access = Access(settings, AccessMetrics(registry), clock=time.monotonic)
    client = access.client(bearer)             # raises Unauthorized
    who = access.admin(bearer, Role.OPERATOR, peer="10.0.0.7")

With `ROLLGATE_AUTH=none` every data-plane caller is the one anonymous client
(no limits, no debug scope); the admin API always needs a token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from gateway.errors import Forbidden, RateLimited, Unauthorized
from gateway.feedback import FeedbackTokens
from gateway.key_store import KeyStore, KeyStoreError, split
from gateway.keys import EMPTY_RING, AdminIdentity, Client, KeyRing, Role
from gateway.limits import Limits
from gateway.settings import AuthMode, GatewaySettings
from rollout.traffic import FULL_WEIGHT_BP

log = logging.getLogger("rollgate.access")

ANONYMOUS = Client(
    key_id=None,
    name="anonymous",
    tenant="anonymous",
    scopes=frozenset(),
    limits=Limits(),
    max_candidate_bp=FULL_WEIGHT_BP,
)
FAILURES_PER_WINDOW = 20  # failed admin authentications per peer and minute, then 429
FAILURE_WINDOW_S = 60.0
MAX_PEERS_TRACKED = 10_000


class AccessMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # `tenant` is bounded: tenants exist only as admins create keys for them.
        self.requests = Counter(
            "rollgate_client_requests_total",
            "Data-plane requests by tenant and whether they were admitted.",
            ("tenant", "outcome"),
            registry=registry,
        )
        self.admin_failures = Counter(
            "rollgate_admin_auth_failures_total",
            "Admin API calls refused for their credential.",
            ("reason",),
            registry=registry,
        )


@dataclass(slots=True)
class _Failures:
    window: int
    count: int = 0


class Access:
    def __init__(
        self,
        settings: GatewaySettings,
        metrics: AccessMetrics,
        clock: Callable[[], float],
    ) -> None:
        self._mode = settings.auth
        self._bootstrap = settings.admin_token
        self._bootstrap_name = settings.admin_token_name
        self.metrics = metrics
        self._clock = clock
        self.ring: KeyRing = EMPTY_RING
        self._feedback_ttl = settings.feedback_ttl
        self._failures: dict[str, _Failures] = {}
        # Replaced at start by the shared secret (settings or store); random until then.
        self.use_secret(secrets.token_bytes(32))

    def use_secret(self, secret: bytes) -> None:
        """Key cohorts and feedback tokens with `secret` (every replica must share it)."""
        self.secret = secret
        # Wall clock: a token sealed on one replica expires on every other at the same time.
        self.tokens = FeedbackTokens(secret, ttl_s=self._feedback_ttl, clock=time.time)

    @property
    def keys_required(self) -> bool:
        return self._mode is AuthMode.KEYS

    def client(self, bearer: str | None) -> Client:
        if not self.keys_required:
            return ANONYMOUS
        client = self.ring.client(bearer) if bearer else None
        if client is None:
            self.metrics.requests.labels("", "unauthorized").inc()
            why = "is not valid or was revoked" if bearer else "is missing"
            raise Unauthorized(
                f"the API key {why}: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
        return client

    def admin(self, bearer: str | None, needed: Role, peer: str) -> AdminIdentity:
        """The caller's admin identity, if it has `needed`; failures are counted per peer."""
        self._slow_down(peer)
        who = self._admin(bearer) if bearer else None
        if who is None:
            self._failed(peer, "invalid" if bearer else "missing")
            raise Unauthorized("the admin API needs 'Authorization: Bearer <admin token>'")
        if not who.role.allows(needed):
            self.metrics.admin_failures.labels("role").inc()
            raise Forbidden(f"token {who.name!r} is a {who.role.value}; this needs an {needed}")
        return who

    def _admin(self, bearer: str) -> AdminIdentity | None:
        if self._bootstrap is not None and hmac.compare_digest(
            bearer.encode(), self._bootstrap.get_secret_value().encode()
        ):
            return AdminIdentity(self._bootstrap_name, Role.OPERATOR)
        return self.ring.admin(bearer)

    def _slow_down(self, peer: str) -> None:
        failures = self._failures.get(peer)
        if (
            failures is not None
            and failures.window == self._window()
            and failures.count >= FAILURES_PER_WINDOW
        ):
            self.metrics.admin_failures.labels("throttled").inc()
            left = FAILURE_WINDOW_S - self._clock() % FAILURE_WINDOW_S
            raise RateLimited(
                "too many failed admin authentications from this address",
                retry_after_s=left,
                code="admin_auth_throttled",
            )

    def _failed(self, peer: str, reason: str) -> None:
        self.metrics.admin_failures.labels(reason).inc()
        window = self._window()
        failures = self._failures.get(peer)
        if failures is None or failures.window != window:
            if len(self._failures) >= MAX_PEERS_TRACKED:
                self._failures.clear()  # a flood of addresses: start counting afresh
            failures = self._failures[peer] = _Failures(window)
        failures.count += 1

    def _window(self) -> int:
        return int(self._clock() // FAILURE_WINDOW_S)


class KeySync:
    """Keeps one replica's `KeyRing` in step with the store (polled like the rollouts)."""

    def __init__(
        self,
        store: KeyStore,
        access: Access,
        on_tenants: Callable[[frozenset[str]], None] = lambda _: None,
    ) -> None:
        self._store = store
        self._access = access
        self._on_tenants = on_tenants  # the score series of every tenant start at 0
        self._seen: int | None = None

    async def refresh(self) -> None:
        changes = await self._store.changes()
        if changes == self._seen:
            return
        keys, tokens = split(await self._store.list())
        # A ring of up to 10,000 keys is built off the event loop, like their parsing.
        ring = await asyncio.to_thread(KeyRing, keys, tokens)
        if ring.tenants != self._access.ring.tenants:
            self._on_tenants(ring.tenants)
        self._access.ring = ring
        self._seen = changes

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.refresh()
            except KeyStoreError as exc:
                # The last ring stays: keys keep working, a revocation waits for the store.
                log.warning("key sync: %s", exc)
            except Exception:
                log.exception("key sync failed; trying again in %g s", interval_s)
            await asyncio.sleep(interval_s)
