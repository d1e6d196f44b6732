"""Storing model versions: the configured defaults, or parameters estimated by EM (Splink).

One `linkage.model` audit event per stored model, by the system actor (counts only).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from registry.linkage import dedupe, estimation, scoring
from registry.linkage import repository as repo
from registry.linkage import service
from security.audit import trail as audit

MIN_RECORDS = 200


def estimate_and_store(rt, province: str, *, activate: bool = True, thresholds: dict | None = None) -> str:
    recs, _, _ = dedupe.load(rt, province)
    if len(recs) < MIN_RECORDS:
        raise ValueError(f"EM needs at least {MIN_RECORDS} records of the province; keep the configured model")
    for r in recs:
        r.setdefault("unique_id", str(uuid.uuid4()))
    parameters = estimation.estimate(recs)
    scoring.check_complete(parameters)
    version = f"em-{province}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    with rt.sessions.begin() as s:
        repo.save_model(s, version=version, method="em", parameters=parameters,
                        thresholds=thresholds or scoring.DEFAULT_THRESHOLDS, activate=activate,
                        note=f"EM on {len(recs)} records of {province}")
        dedupe._trail(uuid.uuid4()).record(s, "linkage.model", audit.SUCCESS, resource_type="LinkModel",
                                           resource_id=version, detail={"records": len(recs), "active": activate})
    service.models.clear()
    return version
