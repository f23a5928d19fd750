"""Everything a request handler needs, built once per app and owned by its lifespan."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.access import Access
from gateway.assignment import ShareGuard
from gateway.exchange import Clock
from gateway.feedback import ScoredOnce
from gateway.limits import Limiter
from gateway.pool import BackendPool
from gateway.recorder import Recorder
from gateway.routes import RoutingTable
from gateway.settings import GatewaySettings
from gateway.shadow import ShadowMirror


@dataclass(slots=True)
class Services:
    settings: GatewaySettings
    table: RoutingTable
    backends: dict[str, BackendPool]
    recorder: Recorder
    shadow: ShadowMirror
    access: Access
    limiter: Limiter
    guard: ShareGuard
    scored_once: ScoredOnce
    clock: Clock
    rng: random.Random
