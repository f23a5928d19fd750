"""Check a peft LoRA adapter against the base it will be served with, before vLLM sees it.

vLLM never checks an adapter's `base_model_name_or_path`, and its own refusals
arrive late (at load time) and vary by version; this module refuses early, with
an error naming the field.

    >>> base = BaseModelInfo.read(Path("/models/tiny"), served_name="tiny-llama")
    >>> validate_adapter("support-v2", Path("/adapters/support-v2"), base, max_lora_rank=8)
    AdapterInfo(name='support-v2', ...)

Reads only JSON and safetensors headers: no torch, so the gateway can call it.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from serving.errors import InvalidAdapter

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_HEADER_LIMIT = 100 * 1024 * 1024


def read_safetensors_keys(path: Path) -> list[str]:
    """Tensor names in a safetensors file, read from its header alone."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > _HEADER_LIMIT:
            raise ValueError(f"{path}: safetensors header of {size} bytes")
        header = json.loads(f.read(size))
    return [k for k in header if k != "__metadata__"]


def _module_paths(tensor_names: list[str]) -> set[str]:
    """'model.layers.0.self_attn.q_proj.weight' -> 'model.layers.0.self_attn.q_proj'."""
    return {name.rsplit(".", 1)[0] for name in tensor_names if "." in name}


@dataclass(frozen=True, slots=True)
class BaseModelInfo:
    """What validation needs to know of the base: its names and its module paths."""

    names: frozenset[str]
    module_paths: frozenset[str]

    @classmethod
    def read(cls, model_path: Path, served_name: str) -> BaseModelInfo:
        index = model_path / "model.safetensors.index.json"
        if index.is_file():
            tensors = list(json.loads(index.read_text())["weight_map"])
        else:
            files = sorted(model_path.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"no safetensors weights in base model {model_path}")
            tensors = [k for f in files for k in read_safetensors_keys(f)]
        names = {served_name, str(model_path), str(model_path.resolve())}
        return cls(names=frozenset(names), module_paths=frozenset(_module_paths(tensors)))

    def has_module(self, target: str) -> bool:
        """peft matches a list entry against a module path's tail ('q_proj', 'self_attn.q_proj')."""
        return any(p == target or p.endswith("." + target) for p in self.module_paths)


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    name: str
    path: Path
    rank: int
    target_modules: tuple[str, ...] | str
    base_model: str


def _load_config(name: str, path: Path) -> dict:
    config_file = path / ADAPTER_CONFIG
    if not path.is_dir():
        raise InvalidAdapter(name, "path", f"{path} is not a directory")
    if not config_file.is_file():
        raise InvalidAdapter(name, ADAPTER_CONFIG, f"missing in {path}")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidAdapter(name, ADAPTER_CONFIG, f"not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidAdapter(name, ADAPTER_CONFIG, "must hold a JSON object")
    return config


def _check_rank(name: str, config: dict, max_lora_rank: int) -> int:
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise InvalidAdapter(name, "r", f"must be a positive integer, got {rank!r}")
    if rank > max_lora_rank:
        raise InvalidAdapter(
            name, "r", f"rank {rank} exceeds the server's max LoRA rank {max_lora_rank}"
        )
    return rank


def _check_targets(name: str, config: dict, base: BaseModelInfo) -> tuple[str, ...] | str:
    targets = config.get("target_modules")
    if isinstance(targets, str):
        # peft treats a string as a regex over the full module path.
        if not any(re.fullmatch(targets, p) for p in base.module_paths):
            raise InvalidAdapter(
                name, "target_modules", f"pattern {targets!r} matches no module of the base"
            )
        return targets
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise InvalidAdapter(
            name, "target_modules", f"must be a non-empty list of names, got {targets!r}"
        )
    missing = sorted(t for t in targets if not base.has_module(t))
    if missing:
        raise InvalidAdapter(
            name, "target_modules", f"not modules of the base: {', '.join(missing)}"
        )
    return tuple(targets)


def _check_supported(name: str, config: dict) -> None:
    """Features vLLM refuses to serve."""
    if config.get("use_dora"):
        raise InvalidAdapter(name, "use_dora", "DoRA adapters are not supported by vLLM")
    if config.get("bias", "none") != "none":
        raise InvalidAdapter(name, "bias", f"must be 'none', got {config.get('bias')!r}")
    if config.get("modules_to_save"):
        raise InvalidAdapter(name, "modules_to_save", "vLLM does not serve extra trained modules")


def validate_adapter(
    name: str, path: Path, base: BaseModelInfo, *, max_lora_rank: int
) -> AdapterInfo:
    """Return what the adapter is, or raise `InvalidAdapter` naming the first bad field."""
    config = _load_config(name, path)
    if config.get("peft_type", "LORA") != "LORA":
        raise InvalidAdapter(name, "peft_type", f"must be 'LORA', got {config.get('peft_type')!r}")
    base_model = config.get("base_model_name_or_path")
    if base_model not in base.names:
        raise InvalidAdapter(
            name, "base_model_name_or_path",
            f"{base_model!r} does not match the served base ({', '.join(sorted(base.names))})",
        )  # fmt: skip
    rank = _check_rank(name, config, max_lora_rank)
    targets = _check_targets(name, config, base)
    _check_supported(name, config)
    weights = [path / w for w in ADAPTER_WEIGHTS if (path / w).is_file()]
    if not weights:
        raise InvalidAdapter(name, "weights", f"none of {', '.join(ADAPTER_WEIGHTS)} in {path}")
    return AdapterInfo(
        name=name, path=path, rank=rank, target_modules=targets, base_model=base_model
    )
