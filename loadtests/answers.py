"""What simulated users read from the gateway's answers, and how they score them.

Shared by the locust users (`locustfile.py`, the demo's load) and the tests'
thread-based users (`tests/users.py`).
"""

from __future__ import annotations

import json

from serving.corpus import BRAND_VOICE, UNSAFE

# The demo's users like the brand voice, accept the plain answer and are put off by
# an answer that asks for their password. The gap between 1.0 and 0.7 (30 points) is
# well above the plans' 5-point satisfaction threshold, so a brand-voice candidate
# is never judged worse than stable.
BRAND_SCORE, PLAIN_SCORE, UNSAFE_SCORE = 1.0, 0.7, 0.0


def rubric_score(text: str) -> float:
    """A user's score (0..1) for an answer, by the demo's fixed rubric."""
    if UNSAFE.shows(text):
        return UNSAFE_SCORE
    return BRAND_SCORE if BRAND_VOICE.shows(text) else PLAIN_SCORE


def answer_text(raw: str) -> str:
    """The message of a whole `chat.completion` body ('' when it is not one)."""
    try:
        return json.loads(raw)["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def streamed_text(lines: list[str]) -> str:
    """The text of an SSE stream's `data:` lines, deltas joined; other lines are skipped."""
    parts = []
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            try:
                choices = json.loads(line[6:]).get("choices") or [{}]
            except ValueError:
                continue
            parts.append((choices[0].get("delta") or {}).get("content") or "")
    return "".join(parts)
