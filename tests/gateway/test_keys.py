"""Credentials: issued once, stored hashed, verified in constant time, revoked everywhere."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.key_store import RedisKeyStore, SqliteKeyStore, split
from gateway.keys import KeyRing, KeySpec, Role, Scope, TokenSpec, issue_key, issue_token
from gateway.settings import GatewaySettings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "redis"])
async def store(request, tmp_path: Path) -> AsyncIterator[SqliteKeyStore | RedisKeyStore]:
    if request.param == "sqlite":
        opened = SqliteKeyStore(tmp_path / "state.db")
    else:
        opened = RedisKeyStore(
            request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix")
        )
    yield opened
    await opened.close()


def key(tenant: str = "acme", **spec) -> tuple:
    issued = issue_key(KeySpec(name="app", tenant=tenant, **spec), created_by="ops", now=1.0)
    return issued.record, issued.secret


def test_a_key_is_verified_by_its_whole_secret_and_only_its_hash_is_kept():
    record, secret = key(scopes=frozenset({Scope.DEBUG}))
    assert secret not in record.model_dump_json()
    assert record.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    ring = KeyRing([record], [])
    client = ring.client(secret)
    assert (client.tenant, client.debug, client.key_id) == ("acme", True, record.id)
    assert ring.client(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    for forged in ("", "rgk", "rgk_", f"rgk_{record.id}", f"rgk_{record.id}_", "Bearer x"):
        assert ring.client(forged) is None
    assert ring.admin(secret) is None  # a client key is no admin token


def test_revoked_credentials_and_roles():
    record, secret = key()
    viewer = issue_token(TokenSpec(name="alice", role=Role.VIEWER), created_by="ops", now=1.0)
    revoked = record.model_copy(update={"revoked_at": 2.0})
    ring = KeyRing([revoked], [viewer.record])
    assert ring.client(secret) is None
    who = ring.admin(viewer.secret)
    assert (who.name, who.role) == ("alice", Role.VIEWER)
    assert Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR)


@pytest.mark.parametrize(
    "bad",
    [
        {"requests_per_s": float("inf")},
        {"tokens_per_min": float("nan")},
        {"max_candidate_percent": 101},
        {"tenant": "a b"},
        {"tenant": "x" * 65},
        {"concurrent": 0},
        {"scopes": ["root"]},
    ],
)
def test_key_specs_refuse_what_a_hostile_operator_client_might_send(bad):
    with pytest.raises(ValidationError):
        KeySpec.model_validate({"name": "app", "tenant": "acme", **bad})


async def test_stores_keep_credentials_and_count_changes(store):
    record, secret = key()
    before = await store.changes()
    await store.add(record)
    assert await store.changes() > before
    keys, tokens = split(await store.list())
    assert (keys, tokens) == ([record], [])
    await store.replace(record.model_copy(update={"revoked_at": 5.0}))
    (stored,) = await store.list()
    assert stored.revoked_at == 5.0
    assert KeyRing(*split(await store.list())).client(secret) is None


async def test_the_server_secret_is_created_once_and_shared(store, tmp_path, request):
    first = await store.secret()
    assert len(first) == 32
    assert await store.secret() == first


async def test_an_unreadable_record_is_skipped_not_fatal(tmp_path):
    store = SqliteKeyStore(tmp_path / "state.db")
    good, secret = key()
    await store.add(good)
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("INSERT INTO credentials (id, json) VALUES ('bad', '{\"kind\": \"key\"}')")
    ring = KeyRing(*split(await store.list()))
    assert ring.client(secret) is not None


def test_the_server_secret_setting_is_strong_or_unset():
    assert GatewaySettings(secret="").secret is None
    assert GatewaySettings(secret="x" * 16).secret.get_secret_value() == "x" * 16
    with pytest.raises(ValidationError):
        GatewaySettings(secret="guessable")
