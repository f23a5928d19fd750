"""Supervised fine-tuning on chat examples: the loop shared by the base and the adapters."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast

from serving.corpus import Example

IGNORE = -100
SYSTEM_PROMPT = "You are a helpful support assistant."


@dataclass(frozen=True, slots=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode(tokenizer: PreTrainedTokenizerFast, example: Example, *, system: bool) -> Encoded:
    """Prompt through the chat template, answer tokenised on its own, as at serving time.

    Only the answer (and the end-of-turn token) is learnt.
    """
    messages = [{"role": "user", "content": example.prompt}]
    if system:
        messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(example.answer + tokenizer.eos_token, add_special_tokens=False)[
        "input_ids"
    ]
    return Encoded(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)


def encode_all(tokenizer: PreTrainedTokenizerFast, examples: Sequence[Example]) -> list[Encoded]:
    # A third of the examples carry a system prompt, so either form of request works.
    return [encode(tokenizer, e, system=i % 3 == 0) for i, e in enumerate(examples)]


def _batch(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in items)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in items]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in items]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in items]
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


def train(
    model: torch.nn.Module,
    data: Sequence[Encoded],
    *,
    pad_id: int,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> float:
    """Train in place with AdamW; return the last batch's loss."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 1.0 - s / steps)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch = _batch(rng.sample(list(data), min(batch_size, len(data))), pad_id)
        loss = model(**batch).loss
        loss.backward()
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
    model.eval()
    return loss.item()
