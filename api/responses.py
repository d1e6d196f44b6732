"""Answering with a model the route has already built, serialised once.

FastAPI validates a returned model against `response_model` again and then serialises it; on
the hot paths that second pass cost as much as decrypting the record. The routes keep
`response_model` for the OpenAPI document; `tests/test_async_hot_paths.py` checks that what
they send still validates against it.
"""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel, TypeAdapter

_LISTS: dict[type, TypeAdapter] = {}


def json_response(model: BaseModel | list, *, status_code: int = 200, headers: dict | None = None,
                  exclude_none: bool = False) -> Response:
    if isinstance(model, list):
        kind = type(model[0]) if model else BaseModel
        adapter = _LISTS.get(kind) or _LISTS.setdefault(kind, TypeAdapter(list[kind]))
        body = adapter.dump_json(model, by_alias=True, exclude_none=exclude_none)
    else:
        body = model.__pydantic_serializer__.to_json(model, by_alias=True, exclude_none=exclude_none)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")
