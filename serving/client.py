"""Management calls to a running vLLM server: models, adapters, health, metrics.

    >>> async with httpx.AsyncClient(base_url="http://127.0.0.1:8000") as http:
    ...     vllm = VllmClient(http)
    ...     await vllm.load_adapter("support-v2", Path("/adapters/support-v2"))
    ...     [m.id for m in await vllm.models()]
    ['tiny-llama', 'support-v2']

Runtime loading needs `VLLM_ALLOW_RUNTIME_LORA_UPDATING=true` on the server.
Adapters loaded at run time live only in that process: after a restart they
must be loaded again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serving.errors import VllmRequestError


@dataclass(frozen=True, slots=True)
class ServedModel:
    id: str
    parent: str | None  # the base's served name for an adapter, None for the base
    root: str


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class VllmMetrics:
    """A parsed `/metrics` page."""

    samples: tuple[Sample, ...]

    @classmethod
    def parse(cls, text: str) -> VllmMetrics:
        return cls(
            tuple(
                Sample(s.name, dict(s.labels), s.value)
                for family in text_string_to_metric_families(text)
                for s in family.samples
            )
        )

    def value(self, name: str, **labels: str) -> float | None:
        """Sum of the samples named `name` whose labels include `labels`; None if there are none."""
        matching = [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return sum(matching) if matching else None


class VllmClient:
    """Async management client; the caller owns the `httpx.AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def healthy(self) -> bool:
        try:
            return (await self._http.get("/health")).status_code == 200
        except httpx.TransportError:
            return False

    async def models(self) -> list[ServedModel]:
        response = await self._http.get("/v1/models")
        _raise_for(response, "list models")
        try:
            return [
                ServedModel(id=m["id"], parent=m.get("parent"), root=m.get("root", ""))
                for m in response.json()["data"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Not vLLM's list (a proxy's error page, another server): as good as a refusal.
            raise VllmRequestError("list models", response.status_code, response.text) from exc

    async def load_adapter(self, name: str, path: Path) -> None:
        response = await self._http.post(
            "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}
        )
        _raise_for(response, f"load adapter {name!r}")

    async def unload_adapter(self, name: str) -> None:
        response = await self._http.post("/v1/unload_lora_adapter", json={"lora_name": name})
        _raise_for(response, f"unload adapter {name!r}")

    async def metrics(self) -> VllmMetrics:
        response = await self._http.get("/metrics")
        _raise_for(response, "read metrics")
        return VllmMetrics.parse(response.text)


def _raise_for(response: httpx.Response, action: str) -> None:
    # Success on the adapter endpoints is a plain-text 200; anything else is failure.
    if response.status_code != 200:
        raise VllmRequestError(action, response.status_code, response.text)
