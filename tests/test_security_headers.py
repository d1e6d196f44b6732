"""Security headers on every response of the app, and an OpenAPI UI that needs no CDN."""

from __future__ import annotations

import re

import pytest

from api.security_headers import CSP

PATHS = ["/healthz", "/openapi.json", "/docs", "/api/v1/me", "/api/v1/patients/00000000-0000-4000-8000-000000000000",
         "/fhir/R4/metadata", "/no/such/route"]


def _script_src(csp: str) -> str:
    return next(d for d in csp.split(";") if d.strip().startswith("script-src"))


def test_policy_forbids_inline_and_foreign_script():
    assert "'unsafe-inline'" not in _script_src(CSP) and "'unsafe-eval'" not in _script_src(CSP)
    assert "frame-ancestors 'none'" in CSP and "object-src 'none'" in CSP


@pytest.mark.parametrize("path", PATHS)
def test_every_response_carries_the_headers(client, world, path):
    r = client.get(path, headers=world.h("clinic_a") if path.startswith(("/api", "/fhir")) else {})
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"


def test_patient_data_is_never_cached(client, world):
    child = world.register("clinic_a")
    r = client.get(f"/api/v1/patients/{child['id']}", headers=world.h("clinic_a"))
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"


def test_docs_are_served_by_the_app_without_inline_script(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page loads something from another origin"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts), "inline script on /docs"
    for ref in re.findall(r"""(?:src|href)="(/assets/[^"]+)\"""", html):
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 100
        assert "immutable" in asset.headers["cache-control"]
        assert asset.headers["content-security-policy"] == CSP
    assert client.get("/assets/0000000000000000/swagger-ui.css").status_code == 404
    assert client.get(re.sub(r"[^/]+$", "../../etc/passwd", ref)).status_code == 404


@pytest.mark.parametrize("given", [
    [],
    [(b"content-type", b"application/json"), (b"content-length", b"2"), (b"etag", b'"1"')],
    [(b"content-type", b"text/css"), (b"Cache-Control", b"public, max-age=31536000, immutable")],
    [(b"x-frame-options", b"SAMEORIGIN"), (b"content-length", b"0")],
])
def test_headers_are_added_once_and_a_response_s_own_are_kept(given):
    """`add` (and its shortcut for responses that set none of them): each security header exactly
    once, a header the response set itself kept as set, no-store unless it set a cache policy."""
    from api.security_headers import HEADERS, add

    out = add(list(given))
    assert out[:len(given)] == given
    names = [n.lower() for n, _ in out]
    for name, value in HEADERS:
        assert names.count(name) == 1
        assert (name, value) in out or name in {n.lower() for n, _ in given}
    assert names.count(b"cache-control") == 1
    assert ((b"cache-control", b"no-store") in out) == all(n.lower() != b"cache-control" for n, _ in given)
