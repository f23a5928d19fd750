"""Where credentials and the server secret live: the same place as the rollouts.

    >>> store = SqliteKeyStore(".rollgate/state.db")     # or RedisKeyStore("redis://...")
    >>> await store.add(issued.record)
    >>> ring = KeyRing(*split(await store.list()))

Every replica polls `changes()` (as it polls the rollouts) and rebuilds its
`KeyRing` when it moves: a revoked key stops working everywhere within one
poll. A record that cannot be read is logged and skipped, never the reason a
gateway stops serving the others.

`secret()` is the server secret every replica must share (cohorts and feedback
tokens are keyed with it): created once, atomically, by whichever replica asks
first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from typing import Protocol, TypeVar

import redis.asyncio as redis
from pydantic import ValidationError
from redis.exceptions import RedisError

from gateway.keys import CREDENTIAL, AdminToken, ApiKey, Credential

log = logging.getLogger("rollgate.keys")

SECRET_BYTES = 32
MAX_CREDENTIALS = 10_000  # a store is for keys admins create, not an open-ended list
T = TypeVar("T")


class KeyStoreError(Exception):
    """The store could not be read or written."""


class KeyStore(Protocol):
    async def add(self, credential: Credential) -> None:
        """Store a new credential (its id is fresh). Raises KeyStoreError when full."""
        ...

    async def replace(self, credential: Credential) -> None:
        """Overwrite a stored credential (revocation)."""
        ...

    async def list(self) -> list[Credential]: ...

    async def changes(self) -> int:
        """A counter that grows with every write."""
        ...

    async def secret(self) -> bytes:
        """The server secret, created on first use and the same for every replica."""
        ...

    async def close(self) -> None: ...


def split(credentials: Iterable[Credential]) -> tuple[list[ApiKey], list[AdminToken]]:
    found = list(credentials)
    return (
        [c for c in found if isinstance(c, ApiKey)],
        [c for c in found if isinstance(c, AdminToken)],
    )


def _parse(rows: Iterable[bytes | str]) -> list[Credential]:
    parsed = []
    for raw in rows:
        try:
            parsed.append(CREDENTIAL.validate_json(raw))
        except ValidationError as exc:
            log.error("skipping an unreadable credential record: %s", exc.errors()[0]["msg"])
    return parsed


_SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (id TEXT PRIMARY KEY, json BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS credential_changes (
    id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT OR IGNORE INTO credential_changes (id, value) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS server_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1), value BLOB NOT NULL)
"""


class SqliteKeyStore:
    """Credentials in the rollouts' SQLite file, in tables of their own."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._call(lambda db: [db.execute(s) for s in _SCHEMA.split(";")])

    async def add(self, credential: Credential) -> None:
        def write(db: sqlite3.Connection) -> None:
            with _transaction(db):
                (count,) = db.execute("SELECT count(*) FROM credentials").fetchone()
                if count >= MAX_CREDENTIALS:
                    raise KeyStoreError(f"the store holds {count} credentials: revoke some")
                db.execute(
                    "INSERT INTO credentials (id, json) VALUES (?, ?)",
                    (credential.id, credential.model_dump_json()),
                )
                db.execute("UPDATE credential_changes SET value = value + 1")

        await self._run(write)

    async def replace(self, credential: Credential) -> None:
        def write(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(
                    "UPDATE credentials SET json = ? WHERE id = ?",
                    (credential.model_dump_json(), credential.id),
                )
                db.execute("UPDATE credential_changes SET value = value + 1")

        await self._run(write)

    async def list(self) -> list[Credential]:
        def read(db: sqlite3.Connection) -> list[Credential]:
            return _parse(json for (json,) in db.execute("SELECT json FROM credentials"))

        return await self._run(read)

    async def changes(self) -> int:
        row = await self._run(
            lambda db: db.execute("SELECT value FROM credential_changes").fetchone()
        )
        return row[0]

    async def secret(self) -> bytes:
        fresh = secrets.token_bytes(SECRET_BYTES)

        def get_or_create(db: sqlite3.Connection) -> bytes:
            db.execute("INSERT OR IGNORE INTO server_secret (id, value) VALUES (1, ?)", (fresh,))
            return db.execute("SELECT value FROM server_secret").fetchone()[0]

        return await self._run(get_or_create)

    async def close(self) -> None:
        """Nothing to do: no connection outlives a call."""

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with closing(sqlite3.connect(self._path, timeout=5.0, isolation_level=None)) as db:
                return work(db)
        except sqlite3.Error as exc:
            raise KeyStoreError(f"key store {self._path}: {exc}") from exc


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# KEYS: credentials hash, changes. ARGV: id, json, max. 0 when full.
_ADD = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
"""
# KEYS: credentials hash, changes. ARGV: id, json.
_REPLACE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
"""


class RedisKeyStore:
    """Credentials under the rollouts' Redis prefix: `{prefix}:credentials` (a hash by id),
    `{prefix}:credential-changes`, `{prefix}:secret`."""

    def __init__(self, url: str, prefix: str = "rollgate") -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._keys = [f"{prefix}:credentials", f"{prefix}:credential-changes"]
        self._secret_key = f"{prefix}:secret"
        self._add = self._redis.register_script(_ADD)
        self._replace = self._redis.register_script(_REPLACE)

    async def add(self, credential: Credential) -> None:
        with _translated():
            added = await self._add(
                self._keys, [credential.id, credential.model_dump_json(), MAX_CREDENTIALS]
            )
        if not added:
            raise KeyStoreError(f"the store holds {MAX_CREDENTIALS} credentials: revoke some")

    async def replace(self, credential: Credential) -> None:
        with _translated():
            await self._replace(self._keys, [credential.id, credential.model_dump_json()])

    async def list(self) -> list[Credential]:
        with _translated():
            rows = await self._redis.hvals(self._keys[0])
        # Up to MAX_CREDENTIALS records: parsed off the event loop, as SQLite's are.
        return await asyncio.to_thread(_parse, rows)

    async def changes(self) -> int:
        with _translated():
            return int(await self._redis.get(self._keys[1]) or 0)

    async def secret(self) -> bytes:
        with _translated():
            await self._redis.set(self._secret_key, secrets.token_bytes(SECRET_BYTES), nx=True)
            return await self._redis.get(self._secret_key)

    async def close(self) -> None:
        with _translated():
            await self._redis.aclose()


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise KeyStoreError(f"redis key store: {exc}") from exc
