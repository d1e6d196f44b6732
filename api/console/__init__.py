"""The web console (issue 14): server-rendered pages in the same app, through the same gate.

`install(app)` adds the pages, their static files and the HTML rendering of errors on console
paths (after the app's own handlers are installed)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import Response

from api.console import (audit_routes, audit_status_routes, children_routes, coverage_routes, due_routes, errors,
                         guardian_routes, i18n, review_routes, session_routes, staff_routes, templating, verify_routes)
from api.console import linkage_routes, merges_routes
from api.deps import Public
from api.routing import GatedRoute

_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
static_router = APIRouter(route_class=GatedRoute, include_in_schema=False, dependencies=[Public])


def _accepts_gzip(header: str) -> bool:
    """`gzip` (or `*`) listed without `q=0`."""
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
        if name.strip().lower() in ("gzip", "*"):
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


@static_router.get("/console/static/{version}/{name}")
def static(request: Request, version: str, name: str) -> Response:
    if version != templating.fingerprint() or name not in templating.STATIC:
        raise HTTPException(404)
    media = templating.STATIC[name]
    if media.startswith("text/javascript"):  # the decoder is 250 KB as shipped, about 60 KB compressed
        headers = {**_IMMUTABLE, "Vary": "Accept-Encoding"}
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            return Response(templating.static_gzip(name), media_type=media, headers={**headers, "Content-Encoding": "gzip"})
        return Response(templating.static_file(name), media_type=media, headers=headers)
    return Response(templating.static_file(name), media_type=media, headers=_IMMUTABLE)


router = APIRouter(route_class=GatedRoute)
for _module in (session_routes, verify_routes, children_routes, coverage_routes, due_routes, review_routes, audit_routes,
                audit_status_routes, staff_routes, guardian_routes, merges_routes, linkage_routes):
    router.include_router(_module.router)
router.include_router(static_router)


def install(app: FastAPI) -> None:
    for code in i18n.LANGUAGES:  # compile the catalogues now: a broken .po stops the start, not a page
        templating.environment(code)
    app.include_router(router)
    errors.install(app)
