"""The witness's view of a registry over HTTP(S): the public transparency endpoints
(api/routes/transparency.py), with the standard library's client (no dependency for a tool that
provinces and auditors run on their own machines)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 30
MAX_BYTES = 1 << 20


class FetchError(Exception):
    """The registry could not be reached or answered something else than expected."""


class HttpSource:
    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/") + "/api/v1/transparency"

    def _get(self, path: str, **query) -> bytes:
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        return self._open(urllib.request.Request(url, headers={"Accept": "text/plain, application/json"}))

    def _open(self, request: urllib.request.Request) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as r:  # noqa: S310 - the operator's configured URL
                return r.read(MAX_BYTES)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"{request.get_method()} {urllib.parse.urlparse(request.full_url).path}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise FetchError(f"cannot reach the registry: {type(exc).__name__}") from None

    def checkpoint(self) -> str:
        return self._get("/checkpoint").decode("utf-8")

    def consistency(self, first: int, second: int) -> list[bytes]:
        try:
            doc = json.loads(self._get("/consistency", **{"from": first, "to": second}))
            return [base64.b64decode(h, validate=True) for h in doc["proof"]]
        except (ValueError, KeyError, TypeError):
            raise FetchError("the consistency proof is malformed") from None

    def handovers(self) -> list[str]:
        try:
            return [str(s) for s in json.loads(self._get("/key-handovers"))["handovers"]]
        except (ValueError, KeyError, TypeError):
            raise FetchError("the key hand-overs are malformed") from None

    def post_cosignature(self, cosigned_note: str) -> dict:
        req = urllib.request.Request(self.base + "/cosignatures", data=cosigned_note.encode(), method="POST",
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            return json.loads(self._open(req))
        except ValueError:
            raise FetchError("the registry's answer to the cosignature is malformed") from None
