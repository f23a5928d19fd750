"""The tiny Llama the project serves on CPU, built and briefly trained here (no model hub)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from serving import corpus, training
from serving.tokenizer import CONTEXT_LENGTH, IM_END, build_tokenizer

TINY_MODEL_NAME = "tiny-llama"


def model_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    # Head size 64 (128 / 2 heads) is one vLLM's CPU attention supports.
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT_LENGTH,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )


def build_base(out_dir: Path, *, seed: int, steps: int = 150) -> float:
    """Train the base on plain support answers and save it in Hugging Face format.

    Returns the final training loss.
    """
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(model_config(tokenizer))
    data = training.encode_all(tokenizer, corpus.examples(held_out=False))
    loss = training.train(
        model, data, pad_id=tokenizer.pad_token_id, steps=steps, lr=3e-3, batch_size=32, seed=seed
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    # Greedy by default is what the tests and the demo expect of an unconfigured request.
    (out_dir / "generation_config.json").write_text(
        json.dumps(
            {"eos_token_id": model.config.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
        )
    )
    return loss
