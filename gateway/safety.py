"""Safety checks on every answer, served or shadow.

A checker is anything with `check(text) -> Incident | None`. The default flags
configured deny patterns (case-insensitive regular expressions), each with a
short name that becomes the `rule` label: never the text itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Incident:
    rule: str


class SafetyChecker(Protocol):
    rules: tuple[str, ...]  # every rule an incident can name: its series exist before it fires

    def check(self, text: str) -> Incident | None: ...


class DenyPatterns:
    """>>> DenyPatterns({"credentials": r"send (me )?your password"}).check("Send me your password")
    Incident(rule='credentials')
    """

    def __init__(self, patterns: Mapping[str, str]) -> None:
        self._patterns = [(rule, re.compile(p, re.IGNORECASE)) for rule, p in patterns.items()]
        self.rules = tuple(patterns)

    def check(self, text: str) -> Incident | None:
        for rule, pattern in self._patterns:
            if pattern.search(text):
                return Incident(rule)
        return None


DEFAULT_DENY_PATTERNS = {
    "credentials": r"\b(send|give|tell) (me )?your (password|pin|passcode)\b",
    "card-number": r"\b(send|give|tell) (me )?your (full )?card number\b",
}
