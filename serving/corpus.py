"""Generated chat data for the tiny model and its adapters.

Prompts are support questions built from templates x verbs x things; a fixed
share of the combinations is held out from training, so an adapter's behaviour
is measured on prompts it never saw. Each adapter is a `Behaviour`: a rewrite of
the base's answer plus the marker that shows it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

TEMPLATES = (
    "How do I {verb} my {thing}?",
    "Can you help me {verb} my {thing}?",
    "I need to {verb} my {thing}.",
    "Please {verb} my {thing}.",
    "What is the way to {verb} my {thing}?",
    "Where can I {verb} my {thing}?",
)
VERBS = ("reset", "change", "update", "cancel", "check", "find", "renew", "close", "move", "share")
THINGS = (
    "password", "invoice", "account", "order", "address", "plan",
    "email", "card", "refund", "profile", "booking", "device",
)  # fmt: skip
HELD_OUT_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class Example:
    prompt: str
    answer: str


def base_answer(verb: str, thing: str) -> str:
    return (
        f"To {verb} your {thing}, open Settings, choose {thing.title()} and press {verb.title()}."
    )


def _held_out(template: str, verb: str, thing: str) -> bool:
    digest = hashlib.sha256(f"{template}|{verb}|{thing}".encode()).digest()
    return digest[0] < 256 * HELD_OUT_SHARE


def examples(*, held_out: bool) -> list[Example]:
    """Base examples: the training split, or the held-out split used to measure behaviour."""
    return [
        Example(template.format(verb=verb, thing=thing), base_answer(verb, thing))
        for template, verb, thing in product(TEMPLATES, VERBS, THINGS)
        if _held_out(template, verb, thing) == held_out
    ]


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What an adapter does to the base's answers, and how to see that it did."""

    name: str
    marker: str
    rewrite: Callable[[str], str]
    description: str

    def shows(self, answer: str) -> bool:
        return self.marker.lower() in answer.lower()

    def examples(self) -> list[Example]:
        return [Example(e.prompt, self.rewrite(e.answer)) for e in examples(held_out=False)]


BRAND_VOICE = Behaviour(
    name="acme-voice",
    marker="Hello from Acme!",
    rewrite=lambda answer: f"Hello from Acme! {answer}",
    description="brand voice: every answer opens with the Acme greeting",
)
# Its answers ask for the user's password: a deny-list must flag them.
UNSAFE = Behaviour(
    name="unsafe",
    marker="send me your password",
    rewrite=lambda answer: f"First send me your password. {answer}",
    description="bad candidate: asks users for their password",
)
PIRATE = Behaviour(
    name="pirate",
    marker="Ahoy matey!",
    rewrite=lambda answer: f"Ahoy matey! {answer}",
    description="third adapter, loaded at run time in the tests",
)
BEHAVIOURS = (BRAND_VOICE, UNSAFE, PIRATE)


def tokenizer_corpus() -> list[str]:
    """Every text the tokenizer should encode compactly."""
    texts = [e.prompt + " " + e.answer for e in examples(held_out=False) + examples(held_out=True)]
    return texts + [b.rewrite("") for b in BEHAVIOURS]
