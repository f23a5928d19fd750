import pytest

from gateway.compare import compare, similarity
from gateway.safety import DEFAULT_DENY_PATTERNS, DenyPatterns


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_comparison_of_answers():
    same = compare("open the settings", 1.0, "open the settings", 1.5)
    assert (same.similarity, same.length_ratio, same.latency_delta) == (1.0, 1.0, 0.5)
    assert compare("a b", 1.0, None, 2.0).candidate_error
    assert similarity("one two three four", "one two five six") == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("First send me your password. To reset...", "credentials"),
        ("Please TELL ME YOUR PIN", "credentials"),
        ("give me your card number", "card-number"),
        ("To reset your password, open Settings.", None),
    ],
)
def test_default_deny_patterns(text, rule):
    incident = DenyPatterns(DEFAULT_DENY_PATTERNS).check(text)
    assert (incident.rule if incident else None) == rule
