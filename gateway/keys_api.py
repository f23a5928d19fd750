"""The admin API's credentials (operators only): client keys and admin tokens.

    POST   /admin/keys           {"name", "tenant", "scopes", limits...}: 201, the key shown once
    GET    /admin/keys           every key, without secrets
    DELETE /admin/keys/{id}      revoke
    POST   /admin/tokens         {"name", "role": "viewer"|"operator"}: 201, shown once
    GET    /admin/tokens
    DELETE /admin/tokens/{id}    revoke

A revoked credential stops working on every replica within one store poll.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request

from gateway.bounded import read_model
from gateway.errors import NotFound, Unavailable
from gateway.key_store import KeyStore, KeyStoreError
from gateway.keys import AdminToken, ApiKey, KeySpec, TokenSpec, issue_key, issue_token

MAX_SPEC_BYTES = 8 * 1024


def keys_router(
    store: Callable[[], KeyStore],
    refresh: Callable[[], Awaitable[None]],
    actor: Callable[[Request], str],
    clock: Callable[[], float],
) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["credentials"])

    async def guarded(work: Awaitable[Any]) -> Any:
        try:
            result = await work
            await refresh()  # this replica knows at once; the others at their next poll
            return result
        except KeyStoreError as exc:
            raise Unavailable(str(exc)) from exc

    async def revoke(kind: type[ApiKey] | type[AdminToken], item_id: str, request: Request):
        found = [c for c in await store().list() if isinstance(c, kind) and c.id == item_id]
        if not found:
            raise NotFound(f"no {kind.__name__} with id {item_id!r}", param="id")
        update = {"revoked_at": clock(), "revoked_by": actor(request)}
        revoked = found[0].model_copy(update=update)
        await guarded(store().replace(revoked))
        return revoked.public()

    @router.post("/keys", status_code=201)
    async def create_key(request: Request) -> dict:
        spec = await read_model(request, KeySpec, MAX_SPEC_BYTES)
        issued = issue_key(spec, created_by=actor(request), now=clock())
        await guarded(store().add(issued.record))
        return {"key": issued.secret, **issued.record.public()}

    @router.get("/keys")
    async def list_keys() -> dict:
        found = await guarded(store().list())
        return {"keys": [c.public() for c in found if isinstance(c, ApiKey)]}

    @router.delete("/keys/{key_id}")
    async def revoke_key(key_id: str, request: Request) -> dict:
        return await revoke(ApiKey, key_id, request)

    @router.post("/tokens", status_code=201)
    async def create_token(request: Request) -> dict:
        spec = await read_model(request, TokenSpec, MAX_SPEC_BYTES)
        issued = issue_token(spec, created_by=actor(request), now=clock())
        await guarded(store().add(issued.record))
        return {"token": issued.secret, **issued.record.public()}

    @router.get("/tokens")
    async def list_tokens() -> dict:
        found = await guarded(store().list())
        return {"tokens": [c.public() for c in found if isinstance(c, AdminToken)]}

    @router.delete("/tokens/{token_id}")
    async def revoke_token(token_id: str, request: Request) -> dict:
        return await revoke(AdminToken, token_id, request)

    return router
