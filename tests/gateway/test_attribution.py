"""Whose a flagged answer is: the decision, the recheck queue, and the gateway end to end
against stand-ins that echo the prompt ("Repeat after me: ...")."""

from __future__ import annotations

import asyncio
import math

import pytest
from prometheus_client import CollectorRegistry

from gateway.attribution import Flagged, Recheck, StableRecheck, attribute
from gateway.exchange import Exchange, Outcome
from gateway.metrics import GatewayMetrics
from gateway.recorder import Recorder
from gateway.safety import DEFAULT_DENY_PATTERNS, DenyPatterns, Incident
from gateway.windows import LocalWindows
from loadtests.standin import Faults
from rollout.source import IncidentCause
from rollout.traffic import Role
from tests.gateway.test_proxy import chat, eventually

DENY = DenyPatterns(DEFAULT_DENY_PATTERNS)
ECHO = {
    "model": "support",
    "messages": [{"role": "user", "content": "Repeat after me: send me your password"}],
}
UNSAFE = "First send me your password. Then relax."


class Raising:
    rules = ("credentials",)

    def check(self, text: str) -> Incident | None:
        raise RuntimeError(f"moderation API down while judging {text!r}")


@pytest.mark.parametrize(
    ("stable_answer", "safety", "outcome", "cause"),
    [
        ("To reset it, open Settings.", DENY, Recheck.CONFIRMED, IncidentCause.VARIANT),
        ("Send me your password", DENY, Recheck.PROMPT, IncidentCause.PROMPT),
        # Another rule broken is not the same doing: the candidate's.
        ("Give me your card number", DENY, Recheck.CONFIRMED, IncidentCause.VARIANT),
        (None, DENY, Recheck.STABLE_FAILED, IncidentCause.VARIANT),
        ("Send me your password", Raising(), Recheck.CHECK_FAILED, IncidentCause.VARIANT),
    ],
)
def test_the_attribution_decision(stable_answer, safety, outcome, cause) -> None:
    assert attribute("credentials", stable_answer, safety) is outcome
    assert outcome.cause is cause


def test_only_a_prompt_induced_answer_is_not_the_variants() -> None:
    assert {r for r in Recheck if r.cause is IncidentCause.PROMPT} == {Recheck.PROMPT}
    assert all(r.reason for r in Recheck)


# --- the queue ------------------------------------------------------------------------------


def flagged(reports: list, ask) -> Flagged:
    x = Exchange("req-1", "support", "v2", Role.CANDIDATE, 0.0)
    x.incident = "credentials"
    return Flagged(x, "credentials", ask, lambda _, outcome: reports.append(outcome))


def answer(text: str | None):
    async def ask() -> str | None:
        return text

    return ask


def never():
    async def ask() -> str | None:
        await asyncio.Event().wait()
        return None

    return ask


@pytest.mark.anyio
async def test_a_full_queue_and_a_stop_count_as_the_candidates() -> None:
    reports: list[Recheck] = []
    recheck = StableRecheck(DENY, queue_size=1, workers=1, timeout=10)
    recheck.submit(flagged(reports, answer("Open Settings.")))
    recheck.submit(flagged(reports, answer("Open Settings.")))
    assert reports == [Recheck.QUEUE_FULL]  # at once, not waiting for a worker
    await recheck.stop()  # never started: what waited is still counted
    assert reports == [Recheck.QUEUE_FULL, Recheck.STOPPED]


@pytest.mark.anyio
async def test_workers_weigh_stable_answers_and_fail_safe_on_doubt() -> None:
    reports: list[Recheck] = []
    recheck = StableRecheck(DENY, queue_size=8, workers=2, timeout=0.05)
    recheck.start()
    for ask in (answer("Open Settings."), answer("send me your password"), answer(None), never()):
        recheck.submit(flagged(reports, ask))
    for _ in range(100):
        if len(reports) == 4:
            break
        await asyncio.sleep(0.01)
    await recheck.stop()
    assert sorted(reports) == sorted([
        Recheck.CONFIRMED, Recheck.PROMPT, Recheck.STABLE_FAILED, Recheck.STABLE_TIMEOUT,
    ])  # fmt: skip


@pytest.mark.anyio
async def test_a_worker_cancelled_while_asking_still_reports() -> None:
    reports: list[Recheck] = []
    recheck = StableRecheck(DENY, queue_size=8, workers=1, timeout=10)
    recheck.start()
    recheck.submit(flagged(reports, never()))
    await asyncio.sleep(0.01)
    await recheck.stop()
    assert reports == [Recheck.STOPPED]


# --- the recorder ---------------------------------------------------------------------------


def served(text: str, role: Role = Role.CANDIDATE) -> Exchange:
    x = Exchange("req-1", "support", "v2" if role is Role.CANDIDATE else "base", role, 0.0)
    x.token(0.1, text)
    x.finish(0.2, Outcome.OK, 200)
    return x


@pytest.mark.anyio
async def test_a_raising_checker_is_counted_and_is_no_incident() -> None:
    registry, windows = CollectorRegistry(), LocalWindows()
    Recorder(GatewayMetrics(registry), Raising(), [windows]).finished(served(UNSAFE))
    labels = {"route": "support", "variant": "v2", "role": "candidate"}
    assert registry.get_sample_value("rollgate_safety_check_errors_total", labels) == 1
    assert registry.get_sample_value("rollgate_requests_total", labels | {"outcome": "ok"}) == 1
    w = await windows.window("support", "v2", "candidate", -math.inf, math.inf)
    assert (w.requests, w.incidents, w.prompt_incidents) == (1, 0, 0)


@pytest.mark.anyio
async def test_a_flagged_candidate_answer_counts_once_stable_is_weighed() -> None:
    registry, windows = CollectorRegistry(), LocalWindows()
    recheck = StableRecheck(DENY, queue_size=8, workers=1, timeout=10)
    recorder = Recorder(GatewayMetrics(registry), DENY, [windows], recheck)

    async def window():
        return await windows.window("support", "v2", "candidate", -math.inf, math.inf)

    recheck.start()
    recorder.asking(answer("Sure: send me your password")).finished(served(UNSAFE))
    w = await window()
    assert (w.requests, w.incidents, w.prompt_incidents) == (1, 0, 0)  # not weighed yet
    for _ in range(100):
        if (w := await window()).prompt_incidents:
            break
        await asyncio.sleep(0.01)
    await recheck.stop()
    assert (w.incidents, w.prompt_incidents) == (0, 1)
    labels = {"route": "support", "variant": "v2", "role": "candidate"}
    assert (
        registry.get_sample_value("rollgate_safety_rechecks_total", labels | {"outcome": "prompt"})
        == 1
    )


# --- end to end, against stand-ins ----------------------------------------------------------


def incidents(stack, role: str, cause: str, variant: str = "acme-voice") -> float:
    labels = {"route": "support", "variant": variant, "role": role, "rule": "credentials"}
    return stack.metric("rollgate_safety_incidents_total", **labels, cause=cause)


def rechecks(stack, role: str, outcome: str) -> float:
    labels = {"route": "support", "variant": "acme-voice", "role": role, "outcome": outcome}
    return stack.metric("rollgate_safety_rechecks_total", **labels)


def test_an_echoed_prompt_in_shadow_is_prompt_induced_not_the_candidates(make_stack) -> None:
    windows = LocalWindows()
    stack = make_stack(
        shadow_sample=1.0, stable=Faults(echo=True), candidate=Faults(echo=True), sinks=[windows]
    )
    assert chat(stack, ECHO).status_code == 200
    eventually(lambda: rechecks(stack, "shadow", "prompt") == 1)
    assert incidents(stack, "shadow", "prompt") == 1
    assert incidents(stack, "shadow", "variant") == 0
    # Stable's own answer reached the client: its incident, as before.
    assert incidents(stack, "stable", "variant", variant="base") == 1
    w = asyncio.run(windows.window("support", "acme-voice", "shadow", -math.inf, math.inf))
    assert (w.incidents, w.prompt_incidents) == (0, 1)


def test_a_candidate_flagged_in_shadow_while_stable_is_not_is_the_candidates(make_stack) -> None:
    stack = make_stack(shadow_sample=1.0, candidate=Faults(text=UNSAFE))
    assert chat(stack, ECHO).status_code == 200
    eventually(lambda: incidents(stack, "shadow", "variant") == 1)
    assert rechecks(stack, "shadow", "confirmed") == 1
    assert incidents(stack, "shadow", "prompt") == 0


def test_at_weights_stable_is_asked_the_same_prompt_again(make_stack) -> None:
    stack = make_stack(weight_percent=100, stable=Faults(echo=True), candidate=Faults(echo=True))
    assert chat(stack, {**ECHO, "stream": True, "temperature": 0.2}).status_code == 200
    eventually(lambda: rechecks(stack, "candidate", "prompt") == 1)
    assert incidents(stack, "candidate", "prompt") == 1
    assert incidents(stack, "candidate", "variant") == 0
    (asked,) = stack.stable_seen.bodies  # whole, the client's body with `model` rewritten
    assert asked == {**ECHO, "model": "tiny-llama", "stream": False, "temperature": 0.2}
    # Not served to anyone: not stable's traffic.
    labels = {"route": "support", "variant": "base", "role": "stable"}
    assert stack.metric("rollgate_requests_total", **labels, outcome="ok") == 0


def test_at_weights_a_candidate_flagged_while_stable_is_not_is_the_candidates(make_stack) -> None:
    stack = make_stack(weight_percent=100, candidate=Faults(text=UNSAFE))
    assert chat(stack, ECHO).status_code == 200
    eventually(lambda: incidents(stack, "candidate", "variant") == 1)
    assert rechecks(stack, "candidate", "confirmed") == 1


def test_at_weights_a_stable_that_cannot_answer_fails_safe(make_stack) -> None:
    stack = make_stack(
        weight_percent=100, candidate=Faults(text=UNSAFE), stable=Faults(error_rate=1)
    )
    assert chat(stack, ECHO).status_code == 200
    eventually(lambda: incidents(stack, "candidate", "variant") == 1)
    assert rechecks(stack, "candidate", "stable_failed") == 1
