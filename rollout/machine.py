"""The rollout state machine: `decide(status, plan, verdict, command, now) -> (status, events)`.

Pure: no I/O, no clock reads. The status holds facts only (step, phase, who
paused and why, an SRE's manual weight); the weight and shadow share the
gateway routes by are derived from it by `weight_bp` and `shadow_sample`.

    running ──fail──────────────▶ rolled_back ──retry──▶ running (step 0, attempt + 1)
       │  ╲──pass + step done──▶ next step … ──last step done──▶ promoted (terminal)
       │   ╲─inconclusive too long─▶ paused (automatic: lifts itself on a pass)
       ├──pause / set-weight──▶ paused (manual: an SRE resumes) ──resume──▶ running
       └──abort──────────────▶ aborted (terminal)

A fail rolls back from running or paused alike: a paused candidate still serves
its weight. Commands that make no sense in the current phase raise
`CommandRejected`, which the admin API answers with 409.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from rollout.analysis import CheckResult, Status, Verdict
from rollout.errors import CommandRejected
from rollout.plan import PauseStep, RolloutPlan, ShadowStep, WeightStep
from rollout.traffic import FULL_WEIGHT_BP

CONTROLLER = "controller"  # the actor of automatic decisions


class Phase(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in (Phase.PROMOTED, Phase.ABORTED)

    @property
    def active(self) -> bool:
        """The candidate may serve or shadow traffic and checks are evaluated."""
        return self in (Phase.RUNNING, Phase.PAUSED)


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a rollout is paused. An automatic hold (no data) lifts itself once the checks pass."""

    actor: str
    reason: str
    automatic: bool = False


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    rollout_id: str
    step_started_at: float
    phase: Phase = Phase.RUNNING
    step: int = 0
    attempt: int = 1
    hold: Hold | None = None
    weight_override_bp: int | None = None  # an SRE's set-weight, until resumed or advanced
    waiting_since: float | None = None  # checks inconclusive since
    reason: str = ""  # of the last transition, for people


class CommandKind(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ABORT = "abort"
    RETRY = "retry"
    SET_WEIGHT = "set_weight"


@dataclass(frozen=True, slots=True)
class Command:
    kind: CommandKind
    actor: str
    reason: str = ""
    percent: float | None = None  # set_weight
    full: bool = False  # promote straight to promoted


class EventKind(StrEnum):
    STARTED = "started"
    ADVANCED = "advanced"
    WAITING = "waiting"
    PAUSED = "paused"
    RESUMED = "resumed"
    WEIGHT_SET = "weight_set"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    RETRIED = "retried"
    DELETED = "deleted"  # a finished rollout forgotten; its history stays


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One transition: who, when, from where to where, and the figures behind it."""

    at: float
    route: str
    rollout_id: str
    attempt: int
    kind: EventKind
    actor: str
    reason: str
    from_phase: Phase
    to_phase: Phase
    from_step: str
    to_step: str
    from_weight: float  # percent
    to_weight: float
    rule: str | None = None  # the check(s) that fired
    checks: tuple[CheckResult, ...] = ()


# --- derived traffic ------------------------------------------------------------------------


def weight_bp(status: RolloutStatus, plan: RolloutPlan) -> int:
    """The candidate's share of users, in basis points."""
    if status.phase is Phase.PROMOTED:
        return FULL_WEIGHT_BP
    if not status.phase.active:
        return 0
    if status.weight_override_bp is not None:
        return status.weight_override_bp
    for step in reversed(plan.steps[: status.step + 1]):  # a pause step keeps the weight before it
        if isinstance(step, WeightStep):
            return round(step.percent * 100)
    return 0


def shadow_sample(status: RolloutStatus, plan: RolloutPlan) -> float:
    step = plan.steps[status.step]
    return step.sample if status.phase.active and isinstance(step, ShadowStep) else 0.0


def step_label(status: RolloutStatus, plan: RolloutPlan) -> str:
    if status.phase is Phase.PROMOTED:
        return "promoted"
    return plan.steps[status.step].label


# --- transitions ----------------------------------------------------------------------------


def start(
    rollout_id: str, plan: RolloutPlan, now: float, actor: str
) -> tuple[RolloutStatus, list[AuditEvent]]:
    """A new rollout at its first step."""
    status = _enter_step(RolloutStatus(rollout_id, now), plan, 0, now)
    reason = f"rollout of {plan.candidate.name} started by {actor}"
    status = replace(status, reason=reason)
    return status, [_event(status, status, plan, now, EventKind.STARTED, actor, reason)]


def deleted(status: RolloutStatus, plan: RolloutPlan, now: float, actor: str) -> list[AuditEvent]:
    """The event that records forgetting a finished rollout (only finished ones can be)."""
    if status.phase.active:
        raise CommandRejected(f"cannot delete: the rollout is {status.phase.value}; abort it first")
    return [_event(status, status, plan, now, EventKind.DELETED, actor, f"deleted by {actor}")]


def decide(
    status: RolloutStatus,
    plan: RolloutPlan,
    verdict: Verdict | None,
    command: Command | None,
    now: float,
) -> tuple[RolloutStatus, list[AuditEvent]]:
    """Apply an SRE's command and/or the controller's verdict; return the new status and events."""
    events: list[AuditEvent] = []
    if command is not None:
        status, events = _command(status, plan, command, now)
    if verdict is not None and status.phase.active:
        status, more = _verdict(status, plan, verdict, now)
        events += more
    return status, events


def _command(
    status: RolloutStatus, plan: RolloutPlan, cmd: Command, now: float
) -> tuple[RolloutStatus, list[AuditEvent]]:
    if status.phase.terminal:
        raise CommandRejected(f"the rollout is {status.phase.value}: nothing more can change it")
    handler = _COMMANDS[cmd.kind]
    new, kind, reason = handler(status, plan, cmd, now)
    return new, [_event(status, new, plan, now, kind, cmd.actor, reason)]


def _require_active(status: RolloutStatus, cmd: Command) -> None:
    if not status.phase.active:
        raise CommandRejected(
            f"cannot {cmd.kind.value}: the rollout is {status.phase.value} (retry starts it again)"
        )


def _pause(status, plan, cmd, now):
    _require_active(status, cmd)
    if status.hold is not None and not status.hold.automatic:
        raise CommandRejected(f"already paused by {status.hold.actor}: {status.hold.reason}")
    reason = cmd.reason or f"paused by {cmd.actor}"
    new = replace(status, phase=Phase.PAUSED, hold=Hold(cmd.actor, reason), reason=reason)
    return new, EventKind.PAUSED, reason


def _resume(status, plan, cmd, now):
    if status.phase is not Phase.PAUSED:
        raise CommandRejected(f"cannot resume: the rollout is {status.phase.value}, not paused")
    if isinstance(plan.steps[status.step], PauseStep):
        new, kind = _advance(status, plan, now, f"resumed by {cmd.actor}")
        return new, kind, new.reason
    new = replace(
        status, phase=Phase.RUNNING, hold=None, weight_override_bp=None, waiting_since=None,
        step_started_at=now if status.weight_override_bp is not None else status.step_started_at,
        reason=f"resumed by {cmd.actor}",
    )  # fmt: skip
    return new, EventKind.RESUMED, new.reason


def _promote(status, plan, cmd, now):
    _require_active(status, cmd)
    if cmd.full:
        reason = f"promoted to 100% by {cmd.actor}"
        new = replace(status, phase=Phase.PROMOTED, hold=None, reason=reason)
        return new, EventKind.PROMOTED, reason
    new, kind = _advance(status, plan, now, f"promoted to the next step by {cmd.actor}")
    return new, kind, new.reason


def _abort(status, plan, cmd, now):
    reason = cmd.reason or f"aborted by {cmd.actor}"
    return replace(status, phase=Phase.ABORTED, hold=None, reason=reason), EventKind.ABORTED, reason


def _retry(status, plan, cmd, now):
    if status.phase is not Phase.ROLLED_BACK:
        raise CommandRejected(f"cannot retry: the rollout is {status.phase.value}, not rolled back")
    new = _enter_step(
        RolloutStatus(status.rollout_id, now, attempt=status.attempt + 1), plan, 0, now
    )
    return new, EventKind.RETRIED, f"attempt {new.attempt} started by {cmd.actor}"


def _set_weight(status, plan, cmd, now):
    _require_active(status, cmd)
    if cmd.percent is None or not 0 <= cmd.percent <= 100:
        raise CommandRejected("set_weight needs a percent between 0 and 100")
    reason = f"weight set to {cmd.percent:g}% by {cmd.actor}; paused until resumed"
    new = replace(
        status, phase=Phase.PAUSED, hold=Hold(cmd.actor, reason),
        weight_override_bp=round(cmd.percent * 100), reason=reason,
    )  # fmt: skip
    return new, EventKind.WEIGHT_SET, reason


_COMMANDS = {
    CommandKind.PAUSE: _pause,
    CommandKind.RESUME: _resume,
    CommandKind.PROMOTE: _promote,
    CommandKind.ABORT: _abort,
    CommandKind.RETRY: _retry,
    CommandKind.SET_WEIGHT: _set_weight,
}


def _verdict(
    status: RolloutStatus, plan: RolloutPlan, verdict: Verdict, now: float
) -> tuple[RolloutStatus, list[AuditEvent]]:
    outcome = verdict.status
    if outcome is Status.FAIL:
        rule = ", ".join(r.name for r in verdict.failures)
        reason = "; ".join(f"{r.name}: {r.reason}" for r in verdict.failures)
        new = replace(status, phase=Phase.ROLLED_BACK, hold=None, reason=reason)
        return new, [_event(status, new, plan, now, EventKind.ROLLED_BACK, CONTROLLER, reason,
                            rule=rule, checks=verdict.results)]  # fmt: skip
    if status.phase is Phase.PAUSED:
        if outcome is Status.PASS and status.hold is not None and status.hold.automatic:
            reason = "the checks are conclusive again"
            new = replace(status, phase=Phase.RUNNING, hold=None, waiting_since=None, reason=reason)
            return new, [_event(status, new, plan, now, EventKind.RESUMED, CONTROLLER, reason,
                                checks=verdict.results)]  # fmt: skip
        return status, []
    if outcome is Status.INCONCLUSIVE:
        return _wait(status, plan, verdict, now)
    status = replace(status, waiting_since=None)
    step = plan.steps[status.step]
    if now - status.step_started_at < step.min_duration_s:
        return status, []
    if verdict.candidate_requests < step.min_requests:
        return status, []
    new, kind = _advance(status, plan, now, "every check passed")
    if verdict.no_headroom is not None and weight_bp(new, plan) > weight_bp(status, plan):
        return _hold_for_capacity(status, plan, verdict, now)
    return new, [
        _event(status, new, plan, now, kind, CONTROLLER, new.reason, checks=verdict.results)
    ]


def _wait(
    status: RolloutStatus, plan: RolloutPlan, verdict: Verdict, now: float
) -> tuple[RolloutStatus, list[AuditEvent]]:
    why = "; ".join(f"{r.name}: {r.reason}" for r in verdict.waiting_on)
    if status.waiting_since is None:
        new = replace(status, waiting_since=now, reason=f"waiting: {why}")
        return new, [_event(status, new, plan, now, EventKind.WAITING, CONTROLLER, new.reason,
                            checks=verdict.results)]  # fmt: skip
    if now - status.waiting_since < plan.inconclusive_limit_s:
        return status, []
    reason = f"inconclusive for {now - status.waiting_since:.0f}s, needs a human: {why}"
    new = replace(status, phase=Phase.PAUSED, hold=Hold(CONTROLLER, reason, automatic=True),
                  reason=reason)  # fmt: skip
    return new, [_event(status, new, plan, now, EventKind.PAUSED, CONTROLLER, reason,
                        checks=verdict.results)]  # fmt: skip


def _hold_for_capacity(
    status: RolloutStatus, plan: RolloutPlan, verdict: Verdict, now: float
) -> tuple[RolloutStatus, list[AuditEvent]]:
    """Stay at this step, its checks passed, until the pool has room for a higher weight.

    Not a pause: the next evaluation that finds room advances at once. One event
    when the hold starts or its reason changes, not one per evaluation.
    """
    reason = f"holding {step_label(status, plan)}: {verdict.no_headroom}"
    if status.reason == reason:
        return status, []
    new = replace(status, reason=reason)
    return new, [_event(status, new, plan, now, EventKind.WAITING, CONTROLLER, reason,
                        checks=verdict.results)]  # fmt: skip


def _advance(
    status: RolloutStatus, plan: RolloutPlan, now: float, reason: str
) -> tuple[RolloutStatus, EventKind]:
    nxt = status.step + 1
    if nxt == len(plan.steps):
        return replace(status, phase=Phase.PROMOTED, hold=None, reason=reason), EventKind.PROMOTED
    return replace(_enter_step(status, plan, nxt, now), reason=reason), EventKind.ADVANCED


def _enter_step(status: RolloutStatus, plan: RolloutPlan, index: int, now: float) -> RolloutStatus:
    step = plan.steps[index]
    base = replace(
        status, phase=Phase.RUNNING, step=index, step_started_at=now, hold=None,
        weight_override_bp=None, waiting_since=None,
    )  # fmt: skip
    if isinstance(step, PauseStep):
        reason = step.reason or "the plan pauses here until an SRE resumes or promotes"
        return replace(base, phase=Phase.PAUSED, hold=Hold(CONTROLLER, reason))
    return base


def _event(
    before: RolloutStatus,
    after: RolloutStatus,
    plan: RolloutPlan,
    now: float,
    kind: EventKind,
    actor: str,
    reason: str,
    *,
    rule: str | None = None,
    checks: tuple[CheckResult, ...] = (),
) -> AuditEvent:
    return AuditEvent(
        at=now, route=plan.route, rollout_id=after.rollout_id, attempt=after.attempt, kind=kind,
        actor=actor, reason=reason, from_phase=before.phase, to_phase=after.phase,
        from_step=step_label(before, plan), to_step=step_label(after, plan),
        from_weight=weight_bp(before, plan) / 100, to_weight=weight_bp(after, plan) / 100,
        rule=rule, checks=checks,
    )  # fmt: skip
