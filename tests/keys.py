"""Client keys the way a user gets them, for in-process gateways in tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.key_store import SqliteKeyStore
from gateway.keys import KeySpec, Scope, issue_key

TENANT = "tests"


def key_store_with_debug_key(directory: Path, tenant: str = TENANT) -> tuple[SqliteKeyStore, str]:
    """A key store in `directory` holding one key that may see variants; (store, its secret)."""
    store = SqliteKeyStore(directory / "keys.db")
    spec = KeySpec(name="tests", tenant=tenant, scopes=frozenset({Scope.DEBUG}))
    issued = issue_key(spec, created_by="tests", now=time.time())
    asyncio.run(store.add(issued.record))
    return store, issued.secret
