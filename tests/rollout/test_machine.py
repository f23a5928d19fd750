"""The state machine, table by table, then hypothesis over random sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.analysis import CheckResult, Status, Verdict
from rollout.machine import (
    CONTROLLER,
    Command,
    CommandKind,
    CommandRejected,
    EventKind,
    Phase,
    RolloutStatus,
    decide,
    shadow_sample,
    start,
    step_label,
    weight_bp,
)
from rollout.plan import Metric, RolloutPlan

PLAN = RolloutPlan.model_validate({
    "route": "support",
    "candidate": {"name": "v2", "backend": "local", "model": "v2"},
    "steps": [
        {"kind": "shadow", "sample": 0.5, "min_duration_s": 30, "min_requests": 10},
        {"kind": "weight", "percent": 5, "min_duration_s": 30, "min_requests": 10},
        {"kind": "pause", "reason": "look at the dashboards"},
        {"kind": "weight", "percent": 50, "min_duration_s": 30, "min_requests": 10},
        {"kind": "weight", "percent": 100, "min_duration_s": 30, "min_requests": 10},
    ],
    "inconclusive_limit_s": 300,
})  # fmt: skip


def verdict(status: Status, requests: float = 100) -> Verdict:
    return Verdict((CheckResult("error-rate", Metric.ERROR_RATE, status, "why"),), requests)


PASS, WAIT, FAIL = verdict(Status.PASS), verdict(Status.INCONCLUSIVE), verdict(Status.FAIL)


def cmd(kind: CommandKind, **kw) -> Command:
    return Command(kind, actor="alice", **kw)


def started(now: float = 0.0) -> RolloutStatus:
    return start("r1", PLAN, now, "alice")[0]


def test_a_rollout_starts_in_shadow_with_no_weight() -> None:
    status, events = start("r1", PLAN, 0.0, "alice")
    assert (status.phase, step_label(status, PLAN)) == (Phase.RUNNING, "shadow")
    assert (weight_bp(status, PLAN), shadow_sample(status, PLAN)) == (0, 0.5)
    assert [e.kind for e in events] == [EventKind.STARTED]
    assert events[0].actor == "alice"


def test_a_pass_advances_only_after_the_step_duration_and_requests() -> None:
    status = started()
    assert decide(status, PLAN, PASS, None, 29.0) == (status, [])
    assert decide(status, PLAN, verdict(Status.PASS, requests=9), None, 31.0)[0] == status
    status, events = decide(status, PLAN, PASS, None, 31.0)
    assert (step_label(status, PLAN), weight_bp(status, PLAN)) == ("5%", 500)
    assert shadow_sample(status, PLAN) == 0.0
    (event,) = events
    assert (event.kind, event.from_step, event.to_step, event.to_weight) == (
        EventKind.ADVANCED, "shadow", "5%", 5.0,
    )  # fmt: skip
    assert event.actor == CONTROLLER
    assert event.checks == PASS.results


def test_a_pause_step_pauses_at_the_previous_weight_until_resumed() -> None:
    status = decide(started(), PLAN, PASS, None, 31.0)[0]
    status = decide(status, PLAN, PASS, None, 62.0)[0]
    assert (status.phase, step_label(status, PLAN), weight_bp(status, PLAN)) == (
        Phase.PAUSED, "pause", 500,
    )  # fmt: skip
    assert decide(status, PLAN, PASS, None, 1000.0)[0] == status  # passes do not lift it
    status, _events = decide(status, PLAN, None, cmd(CommandKind.RESUME), 1001.0)
    assert (status.phase, step_label(status, PLAN)) == (Phase.RUNNING, "50%")


def test_the_last_step_promotes() -> None:
    status = RolloutStatus("r1", 0.0, step=4)
    status, events = decide(status, PLAN, PASS, None, 31.0)
    assert status.phase is Phase.PROMOTED
    assert weight_bp(status, PLAN) == 10_000
    assert events[0].kind is EventKind.PROMOTED


@pytest.mark.parametrize("phase", [Phase.RUNNING, Phase.PAUSED])
def test_a_fail_rolls_back_to_zero_weight_and_records_the_rule(phase: Phase) -> None:
    status = RolloutStatus("r1", 0.0, step=3, phase=phase)
    status, (event,) = decide(status, PLAN, FAIL, None, 5.0)
    assert (status.phase, weight_bp(status, PLAN)) == (Phase.ROLLED_BACK, 0)
    assert (event.kind, event.rule, event.from_weight, event.to_weight) == (
        EventKind.ROLLED_BACK, "error-rate", 50.0, 0.0,
    )  # fmt: skip
    assert event.checks == FAIL.results


def test_inconclusive_waits_then_pauses_then_lifts_itself_on_a_pass() -> None:
    status, (event,) = decide(started(), PLAN, WAIT, None, 10.0)
    assert (status.phase, status.waiting_since, event.kind) == (
        Phase.RUNNING,
        10.0,
        EventKind.WAITING,
    )
    assert decide(status, PLAN, WAIT, None, 300.0) == (status, [])
    status, (event,) = decide(status, PLAN, WAIT, None, 310.0)
    assert status.phase is Phase.PAUSED
    assert status.hold.automatic
    assert event.kind is EventKind.PAUSED
    assert "inconclusive for 300s" in event.reason
    status, (event,) = decide(status, PLAN, PASS, None, 400.0)
    assert status.phase is Phase.RUNNING
    assert event.kind is EventKind.RESUMED
    assert step_label(status, PLAN) == "shadow"  # it resumed; it did not advance


def test_a_manual_pause_holds_until_resumed() -> None:
    status, (event,) = decide(started(), PLAN, None, cmd(CommandKind.PAUSE, reason="deploy"), 1.0)
    assert (status.phase, event.reason, event.actor) == (Phase.PAUSED, "deploy", "alice")
    assert decide(status, PLAN, PASS, None, 100.0)[0] == status
    with pytest.raises(CommandRejected, match="already paused by alice"):
        decide(status, PLAN, None, cmd(CommandKind.PAUSE), 2.0)
    assert decide(status, PLAN, None, cmd(CommandKind.RESUME), 3.0)[0].phase is Phase.RUNNING


def test_set_weight_pauses_at_that_weight_and_resume_returns_to_the_plan() -> None:
    status = decide(started(), PLAN, PASS, None, 31.0)[0]
    status, (event,) = decide(status, PLAN, None, cmd(CommandKind.SET_WEIGHT, percent=2.5), 40.0)
    assert (status.phase, weight_bp(status, PLAN)) == (Phase.PAUSED, 250)
    assert (event.kind, event.from_weight, event.to_weight) == (EventKind.WEIGHT_SET, 5.0, 2.5)
    status = decide(status, PLAN, None, cmd(CommandKind.RESUME), 50.0)[0]
    assert (weight_bp(status, PLAN), status.step_started_at) == (500, 50.0)


def test_promote_goes_one_step_or_all_the_way() -> None:
    status = decide(started(), PLAN, None, cmd(CommandKind.PROMOTE), 1.0)[0]
    assert step_label(status, PLAN) == "5%"
    status, (event,) = decide(status, PLAN, None, cmd(CommandKind.PROMOTE, full=True), 2.0)
    assert status.phase is Phase.PROMOTED
    assert event.to_weight == 100.0


def test_abort_is_terminal() -> None:
    status = decide(started(), PLAN, None, cmd(CommandKind.ABORT), 1.0)[0]
    assert (status.phase, weight_bp(status, PLAN)) == (Phase.ABORTED, 0)
    for kind in CommandKind:
        with pytest.raises(CommandRejected, match="aborted"):
            decide(status, PLAN, None, cmd(kind, percent=5), 2.0)
    assert decide(status, PLAN, FAIL, None, 3.0) == (status, [])


def test_retry_starts_a_new_attempt_at_the_first_step() -> None:
    status = decide(RolloutStatus("r1", 0.0, step=3), PLAN, FAIL, None, 1.0)[0]
    for kind in (CommandKind.RESUME, CommandKind.PROMOTE, CommandKind.SET_WEIGHT):
        with pytest.raises(CommandRejected):
            decide(status, PLAN, None, cmd(kind, percent=5), 2.0)
    status, (event,) = decide(status, PLAN, None, cmd(CommandKind.RETRY), 3.0)
    assert (status.phase, status.step, status.attempt, status.rollout_id) == (
        Phase.RUNNING, 0, 2, "r1",
    )  # fmt: skip
    assert event.kind is EventKind.RETRIED


def test_retry_only_after_a_rollback() -> None:
    with pytest.raises(CommandRejected, match="not rolled back"):
        decide(started(), PLAN, None, cmd(CommandKind.RETRY), 1.0)


# --- properties over random sequences -------------------------------------------------------

inputs = st.one_of(
    st.sampled_from([PASS, WAIT, FAIL, verdict(Status.PASS, requests=0)]),
    st.builds(
        cmd,
        st.sampled_from(list(CommandKind)),
        percent=st.one_of(st.none(), st.floats(0, 100)),
        full=st.booleans(),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(inputs, st.floats(0, 400)), max_size=40))
def test_random_sequences_keep_the_invariants(sequence) -> None:
    status, now = started(), 0.0
    for item, dt in sequence:
        now += dt
        is_command = isinstance(item, Command)
        before = status
        try:
            status, events = decide(
                status, PLAN, None if is_command else item, item if is_command else None, now
            )
        except CommandRejected:
            continue
        by_controller = not is_command
        # Terminal states stay terminal.
        if before.phase.terminal:
            assert status == before
            assert not events
        # The controller never skips a step, and every change is an audit event.
        if by_controller:
            assert status.step - before.step in (0, 1) or status.phase is Phase.PROMOTED
        if status != before and status.reason != before.reason:
            assert events
        # Never raises weight after a failure (until an SRE retries).
        if before.phase is Phase.ROLLED_BACK and not (
            is_command and item.kind is CommandKind.RETRY
        ):
            assert weight_bp(status, PLAN) == 0
        # A fail while active always rolls back.
        if by_controller and item.status is Status.FAIL and before.phase.active:
            assert status.phase is Phase.ROLLED_BACK
        for event in events:
            assert event.from_phase is before.phase or event.kind is EventKind.STARTED
            assert event.to_phase is status.phase


def test_a_step_that_would_raise_the_weight_holds_until_the_pool_has_room() -> None:
    full = Verdict(PASS.results, 100, no_headroom="pool 'vllm' is near its limits")
    held, events = decide(started(), PLAN, full, None, 31.0)  # shadow -> 5% would add load
    assert (held.phase, step_label(held, PLAN)) == (Phase.RUNNING, "shadow")
    assert held.reason == "holding shadow: pool 'vllm' is near its limits"
    assert [(e.kind, e.actor, e.to_weight) for e in events] == [(EventKind.WAITING, CONTROLLER, 0)]
    assert decide(held, PLAN, full, None, 60.0) == (held, [])  # one event per hold, not per tick
    status, events = decide(held, PLAN, PASS, None, 65.0)
    assert step_label(status, PLAN) == "5%"  # room again: on at once
    assert [e.kind for e in events] == [EventKind.ADVANCED]


def test_a_full_pool_never_holds_a_rollback_nor_a_step_that_keeps_the_weight() -> None:
    status, _ = decide(started(), PLAN, PASS, None, 31.0)
    full = Verdict(FAIL.results, 100, no_headroom="full")
    assert decide(status, PLAN, full, None, 40.0)[0].phase is Phase.ROLLED_BACK
    # 5% -> pause keeps the weight at 5%: no extra load, no hold.
    full = Verdict(PASS.results, 100, no_headroom="full")
    assert step_label(decide(status, PLAN, full, None, 62.0)[0], PLAN) == "pause"
