"""Rendering: Jinja2 templates with autoescaping, the language of the request, and the console's
static files served under a content fingerprint with immutable caching, as /docs serves Swagger UI
(api/routes/docs.py). The only scripts are the verifier's QR scanner (`verify.js`, the app's own)
and the QR decoder it loads on demand (jsQR 1.4.0 from npm, Apache-2.0, `static/vendor/`); a
script is sent gzip-compressed to a browser that accepts it."""

from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from importlib import resources

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from api.console import i18n

STATIC = {"console.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml",
          "verify.js": "text/javascript; charset=utf-8", "jsQR.js": "text/javascript; charset=utf-8"}
_PATHS = {"jsQR.js": ("vendor", "jsQR.js")}  # vendored from npm: `npm pack jsqr@1.4.0`, dist/jsQR.js, with its LICENSE


@lru_cache(maxsize=None)
def static_file(name: str) -> bytes:
    return resources.files("api.console").joinpath("static", *_PATHS.get(name, (name,))).read_bytes()


@lru_cache(maxsize=None)
def static_gzip(name: str) -> bytes:
    """The file gzip-compressed once (deterministic: no file name or time in the header)."""
    return gzip.compress(static_file(name), compresslevel=9, mtime=0)


@lru_cache(maxsize=1)
def fingerprint() -> str:
    h = hashlib.sha256()
    for name in sorted(STATIC):
        h.update(name.encode() + static_file(name))
    return h.hexdigest()[:16]


@lru_cache(maxsize=None)
def environment(code: str) -> Environment:
    env = Environment(loader=PackageLoader("api.console", "templates"), autoescape=select_autoescape(default=True),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(i18n.translations(code), newstyle=True)
    env.filters.update(i18n.formatters(code))
    env.globals.update(lang=code, dir=i18n.LANGUAGES[code][1], languages=i18n.LANGUAGES,
                       asset=lambda name: f"/console/static/{fingerprint()}/{name}")
    return env


def language(request: Request) -> str:
    return i18n.pick(request.cookies.get(i18n.COOKIE), request.headers.get("accept-language"))


def render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    code = language(request)
    html = environment(code).get_template(template).render(request=request, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status_code)
