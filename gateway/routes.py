"""Routes and backends from a YAML file, and the table the hot path reads.

    backends:
      local: {url: "http://127.0.0.1:8000"}            # one replica
      pair: {urls: ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]}
      cluster: {dns: "rollgate-vllm:8000"}           # a headless Service's pods
    routes:
      - name: support
        stable: {backend: local, model: tiny-llama}
        candidate: {backend: local, model: acme-voice}
        rollout_id: r1
        weight_percent: 5

The control plane publishes a new `TrafficPlan` through `RoutingTable.publish`;
the hot path reads `RoutingTable.plan`, a plain attribute: no lock, no I/O.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.balancer import BalancerConfig
from rollout.traffic import RouteTraffic, TrafficPlan, Variant

URL = r"^http://[^/\s]+"  # the hot-path client speaks plain HTTP (TLS ends at the mesh)


class BalancingSpec(BaseModel):
    """Overrides of `BalancerConfig`'s defaults for one pool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    eject_after: int | None = Field(default=None, ge=1)
    ejection_s: float | None = Field(default=None, gt=0)
    max_ejection_s: float | None = Field(default=None, gt=0)
    unhealthy_after: int | None = Field(default=None, ge=1)
    max_waiting: float | None = Field(default=None, ge=0)
    max_kv_usage: float | None = Field(default=None, gt=0, le=1)
    load_ttl_s: float | None = Field(default=None, gt=0)

    def config(self) -> BalancerConfig:
        return BalancerConfig(**self.model_dump(exclude_none=True))


class BackendSpec(BaseModel):
    """A pool of vLLM replicas: one `url`, a static list of `urls`, or `dns` (host:port).

    A DNS name is resolved every `resolve_interval_s` to all of its addresses
    (a Kubernetes headless Service answers with its ready pods' IPs); each
    replica is probed every `probe_interval_s` (`/health`, `/v1/models`,
    vLLM's `/metrics`) in the background, never on a request's path.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = Field(default=None, pattern=URL)
    urls: list[str] | None = Field(default=None, min_length=1)
    dns: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")
    api_key_env: str | None = None  # the key itself never sits in the file
    resolve_interval_s: float = Field(default=10.0, gt=0)
    probe_interval_s: float = Field(default=2.0, gt=0)
    probe_timeout_s: float = Field(default=2.0, gt=0)
    balancing: BalancingSpec = BalancingSpec()

    @model_validator(mode="after")
    def _one_source(self) -> BackendSpec:
        given = [k for k in ("url", "urls", "dns") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of url, urls or dns (got {', '.join(given) or 'none'})"
            )
        for url in self.urls or ():
            if not re.match(URL, url):
                raise ValueError(f"urls: {url!r} is not an http:// URL")
        if self.urls is not None and len(set(self.urls)) != len(self.urls):
            raise ValueError("urls: each replica once")
        self.balancing.config()  # cross-field checks (cool-downs) fail here, at load time
        return self

    def static_urls(self) -> list[str] | None:
        """The replicas when they are listed; None when DNS discovers them."""
        return [self.url] if self.url is not None else self.urls

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class VariantSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str
    model: str = Field(min_length=1)
    name: str | None = None  # defaults to the model name

    def variant(self) -> Variant:
        return Variant(name=self.name or self.model, backend=self.backend, model=self.model)


class RouteSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    stable: VariantSpec
    candidate: VariantSpec | None = None
    rollout_id: str = ""
    weight_percent: float = Field(default=0.0, ge=0, le=100)
    shadow_sample: float = Field(default=0.0, ge=0, le=1)

    def traffic(self) -> RouteTraffic:
        return RouteTraffic(
            route=self.name,
            stable=self.stable.variant(),
            candidate=self.candidate.variant() if self.candidate else None,
            rollout_id=self.rollout_id,
            weight_bp=round(self.weight_percent * 100),
            shadow_sample=self.shadow_sample,
        )


class RoutesFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    backends: dict[str, BackendSpec]
    routes: list[RouteSpec]

    @model_validator(mode="after")
    def _consistent(self) -> RoutesFile:
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique")
        for route in self.routes:
            for spec in filter(None, (route.stable, route.candidate)):
                if spec.backend not in self.backends:
                    raise ValueError(f"route {route.name!r}: unknown backend {spec.backend!r}")
            if route.candidate is None and (route.weight_percent or route.shadow_sample):
                raise ValueError(f"route {route.name!r}: a weight or shadow needs a candidate")
        return self

    @classmethod
    def load(cls, path: Path) -> RoutesFile:
        return cls.model_validate(yaml.safe_load(path.read_text()))

    def plan(self) -> TrafficPlan:
        return TrafficPlan({r.name: r.traffic() for r in self.routes}, version=1)


class RoutingTable:
    """The current traffic plan, swapped whole on each publication."""

    def __init__(self, plan: TrafficPlan) -> None:
        self.plan = plan
        self._listeners: list[Callable[[TrafficPlan], None]] = []

    def publish(self, plan: TrafficPlan) -> None:
        self.plan = plan
        for listener in self._listeners:
            listener(plan)

    def subscribe(self, listener: Callable[[TrafficPlan], None]) -> None:
        listener(self.plan)
        self._listeners.append(listener)

    def route(self, name: str) -> RouteTraffic | None:
        return self.plan.routes.get(name)
