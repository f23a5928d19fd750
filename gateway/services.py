"""Everything a request handler needs, built once per app and owned by its lifespan."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.exchange import Clock
from gateway.feedback import FeedbackLedger
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
    feedback: FeedbackLedger
    clock: Clock
    rng: random.Random
