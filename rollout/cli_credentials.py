"""`rollgate keys ...` and `rollgate tokens ...`: credentials through the admin API.

    rollgate keys create checkout --tenant acme --rps 20 --tpm 200000 --concurrent 8
    rollgate keys create canary-free --tenant bigbank --max-candidate-percent 0
    rollgate keys list
    rollgate keys revoke 3f2a...
    rollgate tokens create alice --role viewer

A new key or token is printed once; only its hash is stored.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

Call = Callable[..., dict]  # (method, path, body) -> the API's JSON answer


def finite(text: str) -> float:
    """A number argparse refuses (exit 2) when it is not finite: JSON cannot carry it."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="client API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="a new key, shown once")
    create.add_argument("name")
    create.add_argument("--tenant", required=True)
    create.add_argument("--scope", action="append", default=[], choices=["debug"])
    create.add_argument("--rps", type=finite, help="requests per second")
    create.add_argument("--burst", type=finite, help="requests at once above the rate")
    create.add_argument("--tpm", type=finite, help="tokens per minute")
    create.add_argument("--concurrent", type=int, help="requests in flight")
    create.add_argument(
        "--max-candidate-percent", type=finite, default=100.0,
        help="the most of this key's users a candidate may serve (0: never)",
    )  # fmt: skip
    keys.add_parser("list", help="every key, without secrets")
    keys.add_parser("revoke", help="revoke a key").add_argument("id")

    tokens = sub.add_parser("tokens", help="admin tokens").add_subparsers(
        dest="action", required=True
    )
    create = tokens.add_parser("create", help="a new admin token, shown once")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=["viewer", "operator"])
    tokens.add_parser("list", help="every admin token, without secrets")
    tokens.add_parser("revoke", help="revoke a token").add_argument("id")


def _key_spec(args: argparse.Namespace) -> dict[str, Any]:
    spec = {
        "name": args.name,
        "tenant": args.tenant,
        "scopes": args.scope,
        "requests_per_s": args.rps,
        "burst": args.burst,
        "tokens_per_min": args.tpm,
        "concurrent": args.concurrent,
        "max_candidate_percent": args.max_candidate_percent,
    }
    return {k: v for k, v in spec.items() if v is not None}


def render(kind: str, items: list[dict]) -> str:
    if not items:
        return f"no {kind}"
    lines = []
    for item in items:
        state = "revoked" if item["revoked_at"] is not None else "active"
        spec = item["spec"]
        detail = f"tenant {spec['tenant']}" if "tenant" in spec else f"role {spec['role']}"
        lines.append(f"{item['id']}  {spec['name']}  {detail}  {state}")
    return "\n".join(lines)


def run(args: argparse.Namespace, call: Call, show: Callable[[dict, Callable], None]) -> None:
    path = f"/admin/{args.command}"
    secret_field = "key" if args.command == "keys" else "token"
    match args.action:
        case "create":
            if args.command == "keys":
                body = _key_spec(args)
            else:
                body = {"name": args.name, "role": args.role}
            created = call("POST", path, body)
            show(
                created,
                lambda d: f"{d[secret_field]}\n(shown once: store it now; id {d['id']})",
            )
        case "list":
            show(call("GET", path), lambda d: render(args.command, d[args.command]))
        case "revoke":
            revoked = call("DELETE", f"{path}/{args.id}")
            show(revoked, lambda d: f"revoked {d['id']} ({d['spec']['name']})")
