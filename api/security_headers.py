"""Headers that every response of the app carries, pages and API alike.

- `Content-Security-Policy`: scripts, styles, images, fonts and connections from the app's own
  origin only (no CDN, no inline or evaluated script), no plugins, no framing by anyone
  (`frame-ancestors 'none'`), forms post only to the app, no `<base>` rewriting. Inline *style
  attributes* are allowed (`style-src 'unsafe-inline'`), because the vendored Swagger UI sets
  them; inline scripts are not.
- `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` (for browsers without CSP level 2),
  `Referrer-Policy: no-referrer` (no URL of the registry leaks to another site),
  `Cross-Origin-Opener-Policy: same-origin`, `Cross-Origin-Resource-Policy: same-origin`, and a
  `Permissions-Policy` that allows the camera to the app itself only (the certificate verifier
  scans QR codes) and nothing else.
- `Cache-Control: no-store` unless the response set its own (only fingerprinted static assets
  do, with a long immutable lifetime): nothing with patient data is kept by a browser or a proxy.
"""

from __future__ import annotations

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")

HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(self), microphone=(), geolocation=(), payment=(), usb=()"),
)


_OURS = frozenset(name for name, _ in HEADERS) | {b"cache-control"}
_ALL = [*HEADERS, (b"cache-control", b"no-store")]  # what a response that set none of them gets


def add(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The response's headers with the security headers and, unless it set one, no-store."""
    for name, _ in headers:
        if name.lower() in _OURS:
            break
    else:  # the common case (API answers): all of them, without building the set of names
        return headers + _ALL
    names = {name.lower() for name, _ in headers}
    out = headers + [h for h in HEADERS if h[0] not in names]
    if b"cache-control" not in names:
        out.append((b"cache-control", b"no-store"))
    return out
