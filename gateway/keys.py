"""Who may call the gateway: client API keys and named admin tokens.

Both are bearer secrets of the form `<prefix>_<id>_<secret>`, shown once when
created. Only the SHA-256 of the secret is stored: the secret is 32 random
bytes, so a fast hash is as safe as a slow one and costs a microsecond per
request.

    >>> issued = issue_key(KeySpec(name="checkout", tenant="acme"), created_by="ops", now=0.0)
    >>> issued.secret.startswith("rgk_")
    True
    >>> ring = KeyRing([issued.record], [])
    >>> ring.client(issued.secret).tenant
    'acme'

A `KeyRing` is an in-memory snapshot of every credential; the hot path asks
only it, never the store.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from gateway.limits import Limits

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CLIENT_PREFIX, ADMIN_PREFIX = "rgk", "rga"
_ID_BYTES, _SECRET_BYTES = 8, 32


class Scope(StrEnum):
    DEBUG = "debug"  # sees which variant answered (x-rollgate-variant, the variant's model)


class Role(StrEnum):
    VIEWER = "viewer"  # reads rollouts and history, reviews shadow pairs blind
    OPERATOR = "operator"  # also changes rollouts and credentials

    def allows(self, needed: Role) -> bool:
        return self is Role.OPERATOR or needed is Role.VIEWER


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeySpec(_Strict):
    """What an operator asks for when creating a client key."""

    name: str = Field(pattern=NAME)
    tenant: str = Field(pattern=NAME)
    scopes: frozenset[Scope] = frozenset()
    requests_per_s: float | None = Field(default=None, gt=0, le=1_000_000)
    burst: float | None = Field(default=None, ge=1, le=1_000_000)
    tokens_per_min: float | None = Field(default=None, gt=0, le=1e12)
    concurrent: int | None = Field(default=None, ge=1, le=100_000)
    # The most of this key's users that may be served a candidate, in percent;
    # 0 keeps them on stable always (customers who opt out of canaries).
    max_candidate_percent: float = Field(default=100.0, ge=0, le=100)

    @field_validator("requests_per_s", "burst", "tokens_per_min", "max_candidate_percent")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @property
    def limits(self) -> Limits:
        return Limits(
            requests_per_s=self.requests_per_s,
            burst=self.burst,
            tokens_per_min=self.tokens_per_min,
            concurrent=self.concurrent,
        )


class TokenSpec(_Strict):
    """What an operator asks for when creating an admin token."""

    name: str = Field(pattern=NAME)
    role: Role


class _Issued(_Strict):
    id: str
    secret_sha256: str
    created_at: float
    created_by: str
    revoked_at: float | None = None
    revoked_by: str | None = None
    spec: KeySpec | TokenSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def matches(self, secret: str) -> bool:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return hmac.compare_digest(digest, self.secret_sha256)

    def public(self) -> dict:
        """Everything but the secret's hash."""
        return {"id": self.id, **self.model_dump(mode="json", exclude={"id", "secret_sha256"})}


class ApiKey(_Issued):
    kind: Literal["key"] = "key"
    spec: KeySpec

    @property
    def tenant(self) -> str:
        return self.spec.tenant


class AdminToken(_Issued):
    kind: Literal["token"] = "token"
    spec: TokenSpec


Credential = Annotated[ApiKey | AdminToken, Field(discriminator="kind")]
CREDENTIAL: TypeAdapter[ApiKey | AdminToken] = TypeAdapter(Credential)


@dataclass(frozen=True, slots=True)
class Issued:
    record: Credential
    secret: str  # the whole bearer string; shown once, never stored


def _issue(prefix: str) -> tuple[str, str, str]:
    key_id = secrets.token_hex(_ID_BYTES)
    secret = f"{prefix}_{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    return key_id, secret, hashlib.sha256(secret.encode()).hexdigest()


def issue_key(spec: KeySpec, *, created_by: str, now: float) -> Issued:
    key_id, secret, digest = _issue(CLIENT_PREFIX)
    record = ApiKey(
        id=key_id, secret_sha256=digest, created_at=now, created_by=created_by, spec=spec
    )
    return Issued(record, secret)


def issue_token(spec: TokenSpec, *, created_by: str, now: float) -> Issued:
    token_id, secret, digest = _issue(ADMIN_PREFIX)
    record = AdminToken(
        id=token_id, secret_sha256=digest, created_at=now, created_by=created_by, spec=spec
    )
    return Issued(record, secret)


def credential_id(bearer: str, prefix: str) -> str | None:
    """The id inside a well-formed bearer string of this kind, else None."""
    head, sep, rest = bearer.partition("_")
    if head != prefix or not sep:
        return None
    found, sep, _ = rest.partition("_")
    return found if sep and len(found) == 2 * _ID_BYTES else None


@dataclass(frozen=True, slots=True)
class Client:
    """The authenticated caller of the data plane."""

    key_id: str | None  # None: ROLLGATE_AUTH=none
    name: str
    tenant: str
    scopes: frozenset[Scope]
    limits: Limits
    max_candidate_bp: int

    @property
    def debug(self) -> bool:
        return Scope.DEBUG in self.scopes


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    name: str
    role: Role


class KeyRing:
    """Every active credential, by id: what requests are authenticated against."""

    def __init__(self, keys: Iterable[ApiKey], tokens: Iterable[AdminToken]) -> None:
        self._keys = {k.id: k for k in keys if k.active}
        self._tokens = {t.id: t for t in tokens if t.active}
        self._clients = {
            k.id: Client(
                key_id=k.id,
                name=k.name,
                tenant=k.tenant,
                scopes=k.spec.scopes,
                limits=k.spec.limits,
                max_candidate_bp=round(k.spec.max_candidate_percent * 100),
            )
            for k in self._keys.values()
        }

    def client(self, bearer: str) -> Client | None:
        key_id = credential_id(bearer, CLIENT_PREFIX)
        key = self._keys.get(key_id) if key_id else None
        return self._clients[key.id] if key is not None and key.matches(bearer) else None

    def admin(self, bearer: str) -> AdminIdentity | None:
        token_id = credential_id(bearer, ADMIN_PREFIX)
        token = self._tokens.get(token_id) if token_id else None
        if token is None or not token.matches(bearer):
            return None
        return AdminIdentity(token.name, token.spec.role)

    @property
    def tenants(self) -> frozenset[str]:
        return frozenset(k.tenant for k in self._keys.values())


EMPTY_RING = KeyRing((), ())
