"""Record linkage, the data steward's side (issue 13): HTTP only (registry/linkage)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from api.deps import require
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.linkage import decisions, merge, queue, remote_queue, unmerge_choice
from registry.linkage.remote_queue import RemoteDecision, RemoteDecisionResult, RemoteQueuePage
from registry.linkage.steward_schemas import (Decision, DecisionResult, MergePage, MergeRequest, MergeView, PairView,
                                              QueuePage, UnmergeRequest)
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1/linkage", tags=["record linkage"])
Cursor = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int | None, Query(ge=1, le=100)]


def _limit(request: Request, limit: int | None) -> int:
    return request.app.state.runtime.settings.page_size.default if limit is None else limit


def _etag(version: int) -> str:
    return f'"{version}"'


@router.get("/candidates", response_model=QueuePage, summary="The review queue: candidate pairs in your scope",
            description="Open pairs (and `unsure` ones, with `status=unsure` or `status=all`) with at least one record "
                        "in your scope, certain first, then by match weight. Ids, scores and reasons only.")
def candidates(request: Request, ctx: Annotated[ServiceContext, Depends(require(P.LINKAGE_REVIEW))],
               status: Literal["open", "unsure", "all"] = "all", cursor: Cursor = None, limit: Limit = None):
    statuses = ("open", "unsure") if status == "all" else (status,)
    return queue.review_queue(ctx, statuses, cursor, _limit(request, limit))


@router.get("/remote-candidates", response_model=RemoteQueuePage,
            summary="Pairs with a record another provincial node holds, found by the national comparer",
            description="Open pairs whose record on this node is in your scope, certain first, then by similarity of the "
                        "two records' encodings. The other record is named by its node (`held_by`) and id only.")
def remote_candidates(request: Request, ctx: Annotated[ServiceContext, Depends(require(P.LINKAGE_REVIEW))],
                      limit: Limit = None):
    return remote_queue.remote_queue(ctx, _limit(request, limit))


@router.post("/remote-candidates/{candidate_id}/decision", response_model=RemoteDecisionResult,
             summary="Decide a pair with another node's record: not the same, or unsure (needs If-Match)",
             description="409 with `reason: already_decided` when another decision won. *Same child* is not offered: "
                         "custody does not move between nodes.")
def decide_remote(candidate_id: uuid.UUID, body: RemoteDecision,
                  ctx: Annotated[ServiceContext, Depends(require(P.LINKAGE_DECIDE))], response: Response,
                  if_match: Annotated[str | None, Header(alias="If-Match", max_length=64)] = None):
    result = remote_queue.decide(ctx, candidate_id, if_match, body)
    response.headers["ETag"] = _etag(result.version)
    return result


@router.get("/candidates/{candidate_id}", response_model=PairView, response_model_exclude_none=True,
            summary="One candidate pair side by side (each record viewed is audited)")
def candidate(candidate_id: uuid.UUID, ctx: Annotated[ServiceContext, Depends(require(P.LINKAGE_REVIEW))],
              response: Response):
    pair = queue.view_pair(ctx, candidate_id)
    response.headers["ETag"] = _etag(pair.candidate.version)
    return pair


@router.post("/candidates/{candidate_id}/decision", response_model=DecisionResult,
             summary="Decide a pair: same child (merge), not the same, unsure (needs If-Match)",
             description="409 with `reason: already_decided` when another decision won; `same` merges the other record "
                         "into `survivor_id` (default: the record with more doses, then the older).")
def decide(candidate_id: uuid.UUID, body: Decision, ctx: Annotated[ServiceContext, Depends(require(P.LINKAGE_DECIDE))],
           response: Response, if_match: Annotated[str | None, Header(alias="If-Match", max_length=64)] = None):
    result = decisions.decide(ctx, candidate_id, if_match, body)
    response.headers["ETag"] = _etag(result.version)
    return result


@router.get("/merges", response_model=MergePage, summary="Merges of records in your scope, newest first")
def merges(request: Request, ctx: Annotated[ServiceContext, Depends(require(P.LINKAGE_MERGE, action="linkage.merges"))],
           cursor: Cursor = None, limit: Limit = None):
    items, nxt = merge.list_merges(ctx, cursor, _limit(request, limit))
    return MergePage(items=items, next_cursor=nxt)


@router.post("/merges", status_code=201, response_model=MergeView, summary="Merge two records of your scope",
             description="409 with a `reason`: `same_record`, `already_merged`, `survivor_merged`.")
def merge_records(body: MergeRequest, ctx: Annotated[ServiceContext, Depends(require(P.LINKAGE_MERGE))]):
    return merge.merge(ctx, body)


@router.get("/patients/{patient_id}/unmerge", response_model=unmerge_choice.UnmergeChoice,
            response_model_exclude_none=True, summary="Before an unmerge: both records, the doses that go back, the later doses",
            description="`returning`: doses the merge moved (they go back). `later`: doses recorded on the survivor since "
                        "the merge; they stay with it unless named in the unmerge's `move_dose_ids` (absent when the "
                        "survivor is outside your capture scope). 409 `not_merged`. Each record viewed is audited.")
def unmerge_preview(patient_id: uuid.UUID,
                    ctx: Annotated[ServiceContext, Depends(require(P.LINKAGE_MERGE, action="linkage.view"))]):
    return unmerge_choice.choice(ctx, patient_id)


@router.post("/patients/{patient_id}/unmerge", response_model=MergeView,
             summary="Unmerge a merged record: both records and every dose's owner as before",
             description="409 `not_merged` for a record that is not merged; `survivor_merged` when the survivor was "
                         "merged again since (unmerge that first).")
def unmerge(patient_id: uuid.UUID, body: UnmergeRequest,
            ctx: Annotated[ServiceContext, Depends(require(P.LINKAGE_MERGE, action="linkage.unmerge"))]):
    return merge.unmerge(ctx, patient_id, body)
