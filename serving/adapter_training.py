"""Real LoRA adapters, trained with peft on top of the tiny base."""

from __future__ import annotations

import json
from pathlib import Path

from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from serving import training
from serving.corpus import Behaviour
from serving.validation import ADAPTER_CONFIG

LORA_RANK = 8
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def train_adapter(
    base_dir: Path,
    base_name: str,
    behaviour: Behaviour,
    out_dir: Path,
    *,
    seed: int,
    steps: int = 80,
) -> float:
    """Train `behaviour` into a LoRA adapter saved at `out_dir`; return the final loss."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(base_dir)
    base = LlamaForCausalLM.from_pretrained(base_dir)
    lora = LoraConfig(
        r=LORA_RANK,
        lora_alpha=2 * LORA_RANK,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(TARGET_MODULES),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    data = training.encode_all(tokenizer, behaviour.examples())
    loss = training.train(
        model, data, pad_id=tokenizer.pad_token_id, steps=steps, lr=5e-3, batch_size=32, seed=seed
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    # peft leaves the base name empty for a model built from a config; vLLM never
    # checks it, but our validation does.
    config_file = out_dir / ADAPTER_CONFIG
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_name
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    return loss
