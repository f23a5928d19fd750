"""The SRE web console: a page shell at `/console` whose script drives the admin API.

The shell carries no data. The SRE enters the admin token in the page, which
keeps it in the tab's sessionStorage and sends it as a bearer token with every
`/admin` call. Everything the page loads comes from here (no CDN, no external
fonts), and the Content-Security-Policy allows this origin only.

    app.include_router(console_router())
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from gateway.errors import NotFound

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
# No inline script or style, nothing from elsewhere; forms never submit (the script sends).
CSP = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def console_router() -> APIRouter:
    assets = {
        path.name: (path.read_bytes(), MEDIA_TYPES[path.suffix])
        for path in STATIC.iterdir()
        if path.suffix in MEDIA_TYPES
    }
    router = APIRouter(include_in_schema=False)

    def serve(name: str) -> Response:
        if name not in assets:
            raise NotFound(f"no console file {name!r}")
        body, media_type = assets[name]
        return Response(body, media_type=media_type, headers=HEADERS)

    @router.get("/console")
    async def page() -> Response:
        return serve("index.html")

    @router.get("/console/{name}")
    async def asset(name: str) -> Response:
        return serve(name)

    return router
