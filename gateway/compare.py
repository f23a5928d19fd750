"""Paired comparison of a stable answer and its shadow candidate answer. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher


@dataclass(frozen=True, slots=True)
class Comparison:
    latency_delta: float  # candidate minus stable, seconds
    length_ratio: float  # candidate length / stable length (characters)
    similarity: float  # 0 (nothing shared) .. 1 (same words in the same order)
    candidate_error: bool


def similarity(a: str, b: str) -> float:
    """Word-level sequence similarity: cheap, order-aware, good enough to spot divergence."""
    if not a and not b:
        return 1.0
    return SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


def compare(
    stable_text: str, stable_latency: float, candidate_text: str | None, candidate_latency: float
) -> Comparison:
    """`candidate_text` is None when the candidate failed."""
    if candidate_text is None:
        return Comparison(candidate_latency - stable_latency, 0.0, 0.0, candidate_error=True)
    ratio = len(candidate_text) / len(stable_text) if stable_text else float(bool(candidate_text))
    return Comparison(
        latency_delta=candidate_latency - stable_latency,
        length_ratio=ratio,
        similarity=similarity(stable_text, candidate_text),
        candidate_error=False,
    )
