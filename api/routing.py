"""The registry's route class: a body that is not JSON is refused after the gate, not before it.

FastAPI parses a JSON body before it resolves a route's dependencies, so a body that does not
parse (or is not UTF-8) was answered 422 before the gate ran: the caller was never
authenticated, and the refused attempt left no audit event (DESIGN.md invariant 4: every
refused attempt on patient data is audited). `GatedRoute` hands FastAPI a request whose
`json()` returns a marker instead of raising; the marker fails the body's validation like any
other wrong value, which happens after the gate (401/403 first, then an `invalid` audit event
from the unit of work), and the refusal is then reported as the usual "the body is not valid
JSON" (api/problems.py, api/fhir/responses.py).

Every router of the API, the FHIR routes, the console and the node app uses it
(`APIRouter(route_class=GatedRoute)`); tests/test_body_not_json_audited.py pins it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

NOT_JSON_ERROR = {"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error", "input": {}}


class _NotJSON:
    """What `json()` returns for a body that does not parse: no model, dict or list accepts it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<body that is not JSON>"


NOT_JSON = _NotJSON()


class _TolerantRequest(Request):
    not_json = False

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                return await super().json()
            except ValueError:  # json.JSONDecodeError, and UnicodeDecodeError for a body that is not UTF-8
                self.not_json = True
                self._json = NOT_JSON
        return self._json


class GatedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def gated(request: Request) -> Response:
            tolerant = _TolerantRequest(request.scope, request.receive)
            try:
                return await handler(tolerant)
            except RequestValidationError:
                if tolerant.not_json:  # only the body's own error: the marker's "wrong type" says nothing useful
                    raise RequestValidationError([NOT_JSON_ERROR]) from None
                raise

        return gated
