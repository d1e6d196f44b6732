"""The audit log's transparency surface for witnesses and the public (issue 16): C2SP signed-note
checkpoints, consistency proofs, witness cosignatures and key hand-overs. Public and not audited:
they carry only sizes, hashes, signatures and public keys (registry/audit_log/transparency.py
says why), and a cosignature is its own authentication."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Public, runtime
from api.routing import GatedRoute
from registry.audit_log import sealing, transparency
from registry.errors import InvalidInput
from registry.runtime import Runtime

router = APIRouter(route_class=GatedRoute, prefix="/api/v1/transparency", tags=["transparency"], dependencies=[Public])
Rt = Annotated[Runtime, Depends(runtime)]
_NOTE = {"content": {"text/plain": {"example": "nhr/PK\n7\n/eC8JGQVLcE8epBMGed8zaK078zdsbcCmz3bB++R2cs=\n"
                                               "time 2026-11-22T05:14:02.131000Z\n\n\u2014 nhr/PK NXDSMM6myWkqESeVWl...\n"}}}


class ConsistencyView(BaseModel):
    model_config = {"populate_by_name": True}

    from_: int = Field(alias="from")
    to: int
    proof: list[str]  # standard base64 hashes, RFC 9162 section 2.1.4 order


class CosignaturesStored(BaseModel):
    tree_size: int
    stored: int  # new cosignatures (0: all were already stored)


class HandoversView(BaseModel):
    origin: str
    current_key: str  # the current checkpoint key as a C2SP verifier key
    handovers: list[str]  # signed-note statements, oldest first (security/audit/handover.py)


def _problem(status: int, slug: str, title: str, description: str, detail: str) -> dict:
    example = {"type": f"urn:nhr:problem:{slug}", "title": title, "status": status, "detail": detail,
               "instance": "/api/v1/transparency/cosignatures", "request_id": "3f2b9c0d8e7a41f6"}
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}, "example": example}}}


_NO_CHECKPOINT = {404: _problem(404, "not-found", "Not found", "No signed checkpoint yet, or none of that size",
                                "no signed checkpoint of that size")}


def _text(s: str) -> PlainTextResponse:
    return PlainTextResponse(s, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-store"})


@router.get("/checkpoint", response_class=PlainTextResponse, responses={200: _NOTE, **_NO_CHECKPOINT},
            summary="The latest checkpoint as a C2SP signed note")
def checkpoint(rt: Rt):
    with rt.sessions() as s:
        return _text(transparency.checkpoint_note(s, sealing.origin(rt)))


@router.get("/consistency", response_model=ConsistencyView, response_model_by_alias=True, responses=_NO_CHECKPOINT,
            summary="Consistency proof between two signed checkpoints (RFC 9162), hashes in base64")
def consistency(rt: Rt, first: Annotated[int, Query(alias="from", ge=1)], second: Annotated[int, Query(alias="to", ge=1)]):
    with rt.sessions() as s:
        proof = transparency.consistency(s, first, second)
    return ConsistencyView(from_=first, to=second, proof=[base64.b64encode(h).decode() for h in proof])


@router.get("/cosignatures", response_class=PlainTextResponse, responses={200: _NOTE, **_NO_CHECKPOINT},
            summary="A checkpoint (default the latest) with every witness cosignature appended")
def cosignatures(rt: Rt, size: Annotated[int | None, Query(ge=1, description="a checkpoint's size; default the latest")] = None):
    with rt.sessions() as s:
        return _text(transparency.cosigned_note(s, sealing.origin(rt), size))


@router.post("/cosignatures", response_model=CosignaturesStored, status_code=201,
             responses={**_NO_CHECKPOINT, 409: _problem(409, "conflict", "Conflict", "The checkpoint differs from the one the "
                                                        "registry signed at that size: a split view",
                                                        "the checkpoint differs from the one the registry signed at that "
                                                        "size (split view?)")},
             openapi_extra={"requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}}},
             summary="A witness posts the checkpoint note carrying its cosignature (tlog-cosignature v1)")
async def post_cosignatures(request: Request, rt: Rt):
    raw = await request.body()
    if len(raw) > transparency.MAX_NOTE_BYTES:
        raise InvalidInput("the note is too large", field="body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the note is not UTF-8", field="body") from None

    def store() -> CosignaturesStored:
        with rt.sessions.begin() as s:
            n = transparency.add_cosignatures(s, sealing.origin(rt), transparency.witnesses(rt), text)
            size = int(text.split("\n", 2)[1])
        return CosignaturesStored(tree_size=size, stored=n)

    return await run_in_threadpool(store)


@router.get("/key-handovers", response_model=HandoversView, summary="The hand-overs of the checkpoint-signing key")
def key_handovers(rt: Rt):
    with rt.sessions() as s:
        statements = transparency.handover_statements(s)
    return HandoversView(origin=sealing.origin(rt), current_key=sealing.verifier(rt).vkey(), handovers=statements)
