"""The OpenAPI UI, served by the app itself: no CDN, so `/docs` works on an offline ministry network.

Swagger UI's files come from the `swagger-ui-py` package (Apache-2.0; its `static/` folder is
Swagger UI's own distribution) and are served under a fingerprint of their content with a
year-long immutable cache lifetime; the page and its start-up script are the app's own, with no
inline script, so the Content-Security-Policy (api/security_headers.py) holds on this page too.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

from api.deps import Public
from api.routing import GatedRoute

router = APIRouter(route_class=GatedRoute, dependencies=[Public], include_in_schema=False)

_FILES = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8",
          "favicon-32x32.png": "image/png"}
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
INIT_JS = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout", tryItOutEnabled: false});
});
"""


@lru_cache(maxsize=None)
def _asset(name: str) -> bytes:
    return resources.files("swagger_ui").joinpath("static", name).read_bytes()


@lru_cache(maxsize=1)
def fingerprint() -> str:
    h = hashlib.sha256(INIT_JS.encode())
    for name in sorted(_FILES):
        h.update(_asset(name))
    return h.hexdigest()[:16]


def _page() -> str:
    base = f"/assets/{fingerprint()}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>NHR API</title><link rel="icon" href="{base}/favicon-32x32.png"><link rel="stylesheet" href="{base}/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="{base}/swagger-ui-bundle.js"></script><script src="{base}/docs-init.js"></script></body></html>"""


@router.get("/docs")
def docs() -> HTMLResponse:
    return HTMLResponse(_page())


@router.get("/assets/{version}/{name}")
def asset(version: str, name: str) -> Response:
    if version != fingerprint():
        raise HTTPException(404)
    if name == "docs-init.js":
        return Response(INIT_JS, media_type="text/javascript; charset=utf-8", headers=_IMMUTABLE)
    if name not in _FILES:
        raise HTTPException(404)
    return Response(_asset(name), media_type=_FILES[name], headers=_IMMUTABLE)
