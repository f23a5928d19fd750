"""The embedded rollout store: one SQLite file, shared safely by several processes.

    >>> store = SqliteStore("rollouts.db")
    >>> stored = await store.put(rollout, events)   # revision 0: the route must be new
    >>> stored.revision
    1
    >>> await store.put(rollout)                     # stale revision
    Traceback (most recent call last):
    Conflict: route 'support' is at revision 1, not 0

Every call opens its own connection in a worker thread, so the event loop never
blocks on disk, nor on parsing or writing JSON, and no connection is shared
between threads. Writes take the
file's write lock up front (`BEGIN IMMEDIATE`): the revision check and the write
happen under the same lock, whichever process gets there first.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import replace
from typing import TypeVar

from rollout.machine import AuditEvent
from rollout.record import Rollout, event_from_json, event_to_json
from rollout.store import Conflict, LeaseLost, Listing, StoreError, read_listing, read_rollout

BUSY_TIMEOUT_S = 5.0  # how long a writer waits for another process's write lock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    route TEXT PRIMARY KEY, revision INTEGER NOT NULL, json BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, route TEXT NOT NULL, json BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_route ON events (route, id);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT OR IGNORE INTO changes (id, value) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS lease (
    id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, expires_at REAL NOT NULL);
"""

# One statement, so taking and renewing are atomic without a read-then-write.
_ACQUIRE = """
INSERT INTO lease (id, holder, expires_at) VALUES (1, :holder, :expires_at)
ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE lease.holder = excluded.holder OR lease.expires_at <= :now
"""

_COUNT_CHANGE = "UPDATE changes SET value = value + 1"

T = TypeVar("T")


class SqliteStore:
    """`RolloutStore` and `Lease` on one SQLite file; `clock` (epoch seconds) times the lease."""

    def __init__(
        self, path: str | os.PathLike[str], clock: Callable[[], float] = time.time
    ) -> None:
        self._path = os.fspath(path)
        self._clock = clock
        # Once, at startup, before any call: cheap and local, so done synchronously.
        self._call(_create_schema)

    async def get(self, route: str) -> Rollout | None:
        def read(db: sqlite3.Connection) -> Rollout | None:
            row = db.execute(
                "SELECT revision, json FROM rollouts WHERE route = ?", (route,)
            ).fetchone()
            return read_rollout(route, *row) if row else None

        return await self._run(read)

    async def list(self) -> Listing:
        return await self._run(
            lambda db: read_listing(db.execute("SELECT route, revision, json FROM rollouts"))
        )

    async def put(
        self, rollout: Rollout, events: Sequence[AuditEvent] = (), *, fence: str | None = None
    ) -> Rollout:
        stored = replace(rollout, revision=rollout.revision + 1)
        rows = [(rollout.route, event_to_json(e)) for e in events]
        now = self._clock()

        def write(db: sqlite3.Connection) -> None:
            data = stored.to_json()  # before the write lock: it may refuse, and takes time
            with _transaction(db):
                if fence is not None:
                    _check_lease(db, fence, now)
                _check_revision(db, rollout.route, rollout.revision)
                db.execute(
                    "INSERT INTO rollouts (route, revision, json) VALUES (?, ?, ?)"
                    " ON CONFLICT (route) DO UPDATE"
                    " SET revision = excluded.revision, json = excluded.json",
                    (stored.route, stored.revision, data),
                )
                db.executemany("INSERT INTO events (route, json) VALUES (?, ?)", rows)
                db.execute(_COUNT_CHANGE)

        await self._run(write)
        return stored

    async def delete(self, route: str, revision: int, events: Sequence[AuditEvent] = ()) -> None:
        rows = [(route, event_to_json(e)) for e in events]

        def remove(db: sqlite3.Connection) -> None:
            with _transaction(db):
                deleted = db.execute(
                    "DELETE FROM rollouts WHERE route = ? AND revision = ?", (route, revision)
                ).rowcount
                if not deleted:
                    raise Conflict(f"route {route!r} is not at revision {revision}")
                db.executemany("INSERT INTO events (route, json) VALUES (?, ?)", rows)
                db.execute(_COUNT_CHANGE)

        await self._run(remove)

    async def history(self, route: str, limit: int = 100) -> list[AuditEvent]:
        if limit <= 0:
            return []  # SQLite reads a negative LIMIT as no limit at all
        return await self._run(
            lambda db: [
                event_from_json(json)
                for (json,) in db.execute(
                    "SELECT json FROM (SELECT id, json FROM events WHERE route = ?"
                    " ORDER BY id DESC LIMIT ?) ORDER BY id",
                    (route, limit),
                )
            ]
        )

    async def changes(self) -> int:
        row = await self._run(lambda db: db.execute("SELECT value FROM changes").fetchone())
        return row[0]

    async def acquire(self, holder: str, ttl_s: float) -> bool:
        now = self._clock()
        params = {"holder": holder, "expires_at": now + ttl_s, "now": now}
        return await self._run(lambda db: db.execute(_ACQUIRE, params).rowcount == 1)

    async def release(self, holder: str) -> None:
        await self._run(
            lambda db: db.execute("DELETE FROM lease WHERE id = 1 AND holder = ?", (holder,))
        )

    async def close(self) -> None:
        """Nothing to do: no connection outlives a call."""

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on a fresh connection; SQLite's errors become `StoreError` here only."""
        try:
            # isolation_level=None: no implicit transactions, so ours are the only ones.
            with closing(
                sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            ) as db:
                return work(db)
        except sqlite3.Error as exc:
            raise StoreError(f"rollout store {self._path}: {exc}") from exc


def _create_schema(db: sqlite3.Connection) -> None:
    # WAL lets readers (every replica polling changes()) go on while one process writes.
    db.execute("PRAGMA journal_mode = WAL")
    with _transaction(db):
        for statement in _SCHEMA.split(";"):
            db.execute(statement)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Holds the file's write lock from the start, so what it reads no other writer changes."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _check_lease(db: sqlite3.Connection, holder: str, now: float) -> None:
    row = db.execute("SELECT holder, expires_at FROM lease WHERE id = 1").fetchone()
    if row is None or row[0] != holder or row[1] <= now:
        raise LeaseLost(f"{holder} no longer holds the controller lease")


def _check_revision(db: sqlite3.Connection, route: str, expected: int) -> None:
    """0 expects no rollout stored for the route."""
    row = db.execute("SELECT revision FROM rollouts WHERE route = ?", (route,)).fetchone()
    stored = row[0] if row else 0
    if stored != expected:
        raise Conflict(f"route {route!r} is at revision {stored}, not {expected}")
