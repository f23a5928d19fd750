"""Adapters go through validation before vLLM sees them, at start-up and at run time.

>>> base = BaseModelInfo.read(path, "tiny-llama")
>>> loader = AdapterLoader(VllmClient(http), base, max_lora_rank=8)
>>> await loader.load("support-v3", Path("/adapters/support-v3"))
"""

from __future__ import annotations

from pathlib import Path

from serving.client import VllmClient
from serving.config import ServingConfig
from serving.validation import AdapterInfo, BaseModelInfo, validate_adapter


def validate_config(config: ServingConfig) -> list[AdapterInfo]:
    """Validate every adapter a server would start with; raise on the first bad one."""
    base = BaseModelInfo.read(config.model_path, config.served_name)
    return [
        validate_adapter(a.name, a.path, base, max_lora_rank=config.max_lora_rank)
        for a in config.adapters
    ]


class AdapterLoader:
    """Loads and unloads adapters on one running server."""

    def __init__(self, client: VllmClient, base: BaseModelInfo, *, max_lora_rank: int) -> None:
        self._client = client
        self._base = base
        self._max_lora_rank = max_lora_rank

    async def load(self, name: str, path: Path) -> AdapterInfo:
        info = validate_adapter(name, path, self._base, max_lora_rank=self._max_lora_rank)
        await self._client.load_adapter(name, path)
        return info

    async def unload(self, name: str) -> None:
        await self._client.unload_adapter(name)
