"""The verifier's QR scanner (issue 14): the app's own `verify.js` on /verify, no inline script,
and the vendored decoder (jsQR 1.4.0 from npm, with its Apache-2.0 licence) served by the app
under the content fingerprint, gzip-compressed, and only linked for loading on demand."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

from console_helpers import browser

VENDOR = Path(__file__).resolve().parents[1] / "api/console/static/vendor"


def test_verify_page_links_its_script_and_the_decoder_loads_only_on_demand(app):
    c = browser(app)
    page = c.get("/verify")
    assert page.status_code == 200
    scripts = re.findall(r"<script([^>]*)>", page.text)
    assert scripts and all('src="/console/static/' in s for s in scripts)  # no inline script (CSP)
    assert not any("jsQR" in s for s in scripts)  # the decoder is not loaded with the page
    [decoder] = re.findall(r'data-decoder="(/console/static/[0-9a-f]{16}/jsQR.js)"', page.text)
    [script] = re.findall(r'src="(/console/static/[0-9a-f]{16}/verify.js)"', page.text)
    r = c.get(script)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert "immutable" in r.headers["cache-control"] and "getUserMedia" in r.text
    raw = c.get(decoder, headers={"Accept-Encoding": "identity"})
    assert raw.status_code == 200 and "content-encoding" not in raw.headers
    assert raw.content == (VENDOR / "jsQR.js").read_bytes()
    zipped = c.get(decoder, headers={"Accept-Encoding": "gzip"}, )
    assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["vary"] == "Accept-Encoding"
    assert zipped.content == raw.content  # the client decompressed it: the same file
    assert len(gzip.compress(raw.content)) < 80_000  # what travels over the network
    assert "content-encoding" not in c.get(decoder, headers={"Accept-Encoding": "gzip;q=0, identity"}).headers
    assert c.get(decoder.replace(decoder.split("/")[3], "0" * 16)).status_code == 404


def test_the_vendored_decoder_keeps_its_licence_and_version():
    assert "Apache License" in (VENDOR / "jsQR.LICENSE").read_text() and "Version 2.0" in (VENDOR / "jsQR.LICENSE").read_text()
    # the SHA-256 of dist/jsQR.js in `npm pack jsqr@1.4.0`: unmodified, so it can be checked against npm
    assert hashlib.sha256((VENDOR / "jsQR.js").read_bytes()).hexdigest() == \
        "bc40c8a15196236b2314db0856f72ca0b49980cd5413b8c852a7349f5fee0859"
