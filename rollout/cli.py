"""`rollgate`: the SRE's command line over the admin API.

    export ROLLGATE_URL=http://127.0.0.1:8080 ROLLGATE_ADMIN_TOKEN=...
    rollgate apply -f plan.yaml
    rollgate get support --watch
    rollgate set-weight support 2.5
    rollgate promote support --full

Exit codes: 0 done; 1 the API refused (the message says why); 2 bad usage or
plan file (checked here, as the gateway will, naming each field it breaks);
3 the gateway could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import ValidationError

from rollout import cli_credentials as credentials
from rollout.plan import MAX_PLAN_BYTES, RolloutPlan

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
MAX_PROBLEMS = 10  # of a plan file's, shown
TERMINAL = {"promoted", "aborted", "rolled_back"}


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class AdminClient:
    def __init__(self, url: str, token: str | None, transport=None) -> None:
        # The token is who the audit log names: nothing else identifies the caller.
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=10.0, transport=transport
        )

    def call(self, method: str, path: str, body: Any = None, **params) -> dict:
        """`path` under /admin/rollouts."""
        return self.call_admin(method, f"/admin/rollouts{path}", body, **params)

    def call_admin(self, method: str, path: str, body: Any = None, **params) -> dict:
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self._http.base_url}: {exc}", EXIT_UNREACHABLE) from exc
        try:
            data = response.json()
        except ValueError:
            data = {"error": {"message": response.text[:200]}}
        if response.status_code >= 400:
            message = data.get("error", {}).get("message") if isinstance(data, dict) else None
            raise CliError(
                f"{response.status_code}: {message or response.reason_phrase}", EXIT_REFUSED
            )
        return data


# --- rendering ------------------------------------------------------------------------------


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.3g}{unit}"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def render_rollout(r: dict) -> str:
    steps = " → ".join(
        f"[{label}]" if i == r["step"] and r["phase"] != "promoted" else label
        for i, label in enumerate(r["steps"])
    )
    lines = [
        f"route {r['route']}   rollout {r['rollout_id']} (attempt {r['attempt']})",
        f"{r['stable']['name']} (stable) → {r['candidate']['name']} (candidate)",
        f"phase {r['phase'].upper()}   weight {r['weight_percent']:g}%   "
        f"shadow {r['shadow_sample']:g}   steps {steps}",
    ]
    if r["reason"]:
        lines.append(f"why: {r['reason']}")
    if r["checks"]:
        rows = [
            ("CHECK", "STATUS", "CANDIDATE", "STABLE", "THRESHOLD", "SAMPLES", "EVIDENCE", "REASON")
        ]
        rows += [
            (
                c["name"],
                c["status"].upper(),
                _num(c["candidate"]),
                _num(c["stable"]),
                _num(c["threshold"]),
                f"{c['candidate_samples']:.0f}/{c['stable_samples']:.0f}",
                _evidence(c),
                c["reason"] + (f" [{c['test']}]" if c.get("test") else ""),
            )
            for c in r["checks"]
        ]
        lines += ["", _table(rows)]
    return "\n".join(lines)


def _evidence(check: dict) -> str:
    """The e-value against the level at which the check fails: '12/60'."""
    if check.get("evidence") is None or check.get("evidence_needed") is None:
        return "-"
    return f"{check['evidence']:.3g}/{check['evidence_needed']:.3g}"


def render_status(data: dict) -> str:
    rollouts, quarantined = data["rollouts"], data.get("quarantined", [])
    lines = [] if rollouts or quarantined else ["no rollouts"]
    if rollouts:
        rows = [("ROUTE", "ROLLOUT", "PHASE", "STEP", "WEIGHT", "CANDIDATE", "VERDICT")]
        rows += [
            (
                r["route"],
                r["rollout_id"],
                r["phase"],
                r["step_label"],
                f"{r['weight_percent']:g}%",
                r["candidate"]["name"],
                r["verdict"] or "-",
            )
            for r in rollouts
        ]
        lines.append(_table(rows))
    if quarantined:
        rows = [("QUARANTINED", "REVISION", "WHY (unreadable; rollgate delete ROUTE removes it)")]
        rows += [(q["route"], str(q["revision"]), q["error"]) for q in quarantined]
        lines.append(_table(rows))
    return "\n\n".join(lines)


def render_history(events: list[dict]) -> str:
    rows = [("TIME", "EVENT", "BY", "STEP", "WEIGHT", "RULE", "REASON")]
    rows += [
        (
            _when(e["at"]),
            e["kind"],
            e["actor"],
            f"{e['from_step']} → {e['to_step']}",
            f"{e['from_weight']:g}% → {e['to_weight']:g}%",
            e["rule"] or "-",
            e["reason"],
        )
        for e in events
    ]
    return _table(rows)


# --- commands -------------------------------------------------------------------------------


def _plan_file(path: Path) -> dict:
    """The plan, checked here as the gateway will check it; sent as the fields it sets."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_PLAN_BYTES + 1)  # and no more, whatever the file is
    except OSError as exc:
        raise CliError(f"cannot read the plan {path}: {exc}", EXIT_USAGE) from exc
    if len(raw) > MAX_PLAN_BYTES:
        raise CliError(f"{path}: a plan is at most {MAX_PLAN_BYTES} bytes", EXIT_USAGE)
    try:
        data = yaml.safe_load(raw)
    # ValueError: YAML's dates (2024-13-01); RecursionError: nesting deeper than its parser.
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise CliError(f"{path}: not YAML: {exc}", EXIT_USAGE) from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: a plan is a mapping (route, candidate, steps, checks)", EXIT_USAGE)
    try:
        plan = RolloutPlan.model_validate(data)
    except ValidationError as exc:
        raise CliError("\n".join(f"{path}: {p}" for p in problems(exc)), EXIT_USAGE) from None
    return plan.model_dump(mode="json", exclude_unset=True)


def problems(exc: ValidationError) -> list[str]:
    """Each rule broken, as `field: why`, at most MAX_PROBLEMS.

    A list too short "after validation" only echoes its items' own errors: left out.
    """
    errors = exc.errors(include_url=False, include_input=False)
    locs = [tuple(e["loc"]) for e in errors]
    lines = []
    for e, loc in zip(errors, locs, strict=True):
        if e["type"] == "too_short" and any(o[: len(loc)] == loc != o for o in locs):
            continue
        why = str(e["ctx"]["error"]) if e["type"] == "value_error" else e["msg"]
        lines.append(f"{'.'.join(map(str, loc))}: {why}" if loc else why)
    if len(lines) > MAX_PROBLEMS:
        lines[MAX_PROBLEMS:] = [f"and {len(lines) - MAX_PROBLEMS} more"]
    return lines


def run(args: argparse.Namespace, client: AdminClient, out) -> int:
    as_json = args.output == "json"

    def show(data: dict, render) -> None:
        print(json.dumps(data, indent=2) if as_json else render(data), file=out)

    def act(path: str, body: Any = None) -> None:
        show(client.call("POST", f"/{args.route}/{path}", body), render_rollout)

    match args.command:
        case "status":
            show(client.call("GET", ""), render_status)
        case "get" if args.watch:
            while True:
                rollout = client.call("GET", f"/{args.route}")
                if not as_json:
                    print("\x1b[2J\x1b[H", end="", file=out)  # a live table: clear and redraw
                show(rollout, render_rollout)
                if rollout["phase"] in TERMINAL:
                    return 0
                time.sleep(args.interval)
        case "get":
            show(client.call("GET", f"/{args.route}"), render_rollout)
        case "apply":
            show(client.call("POST", "", _plan_file(args.file)), render_rollout)
        case "history":
            events = client.call("GET", f"/{args.route}/history", limit=args.limit)
            show(events, lambda d: render_history(d["events"]))
        case "set-weight":
            act("weight", {"percent": args.percent})
        case "pause" | "abort":
            act(args.command, {"reason": args.reason})
        case "resume" | "retry":
            act(args.command)
        case "promote":
            act("promote", {"full": args.full})
        case "keys" | "tokens":
            credentials.run(args, client.call_admin, show)
        case "delete":
            deleted = client.call("DELETE", f"/{args.route}")
            if "rollout_id" in deleted:
                what = f"rollout {deleted['rollout_id']}"
            else:  # quarantined: nothing of it could be read
                what = f"the unreadable rollout (revision {deleted['revision']})"
            print(f"deleted {what} of {args.route}", file=out)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rollgate", description="Steer rollouts through the admin API."
    )
    p.add_argument("--url", default=os.environ.get("ROLLGATE_URL", "http://127.0.0.1:8080"))
    p.add_argument("--token", help="admin token (default: $ROLLGATE_ADMIN_TOKEN)")
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="every rollout")
    get = sub.add_parser("get", help="one rollout with its checks")
    get.add_argument("route")
    get.add_argument("--watch", "-w", action="store_true", help="redraw until it ends")
    get.add_argument("--interval", type=float, default=2.0)
    apply = sub.add_parser("apply", help="start a rollout from a plan file")
    apply.add_argument("-f", "--file", type=Path, required=True)
    history = sub.add_parser("history", help="audit events")
    history.add_argument("route")
    history.add_argument("--limit", type=int, default=100)
    weight = sub.add_parser("set-weight", help="set the candidate's weight and pause")
    weight.add_argument("route")
    weight.add_argument("percent", type=float)
    for name, text in (("pause", "pause"), ("abort", "roll back for good")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("route")
        cmd.add_argument("--reason", default="")
    for name, text in (("resume", "resume"), ("retry", "start again after a rollback")):
        sub.add_parser(name, help=text).add_argument("route")
    delete = sub.add_parser("delete", help="forget a finished rollout (unloads its candidate)")
    delete.add_argument("route")
    promote = sub.add_parser("promote", help="go to the next step")
    promote.add_argument("route")
    promote.add_argument("--full", action="store_true", help="straight to 100%% and promoted")
    credentials.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None, transport=None) -> int:
    args = parser().parse_args(argv)
    token = args.token or os.environ.get("ROLLGATE_ADMIN_TOKEN")
    client = AdminClient(args.url, token, transport)
    try:
        return run(args, client, sys.stdout)
    except CliError as exc:
        for line in str(exc).splitlines():
            print(f"rollgate: {line}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
