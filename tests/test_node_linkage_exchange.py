"""A province node's side of linkage between nodes, on the test database (SQLite and PostgreSQL):
the comparer's incremental pull of encodings in pages, the pushed pairs kept once and only for
this node's own records, and the steward's list of them by scope (issue 13 item 7). The same
over two real nodes and mutual TLS: tests/test_node_linkage.py."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from registry.context import ServiceContext
from registry.errors import Forbidden, InvalidInput
from registry.linkage import cross_province, node_exchange
from security.access.principal import AccessContext
from security.audit.trail import AuditTrail

CLAIMS = {"node": "PK", "caller": {"user_id": str(uuid.UUID(int=0)), "role": "linkage_comparer", "scope_level": "national",
                                   "scope_code": "PK", "purpose": "HOPERAT"}}
ENC = cross_province.ENC


def _call(runtime, fn, *args):
    with runtime.sessions.begin() as s:
        return fn(ServiceContext(s, runtime, AuditTrail(AccessContext(None, "HOPERAT", uuid.uuid4().hex, "node:PK"))),
                  CLAIMS, *args)


def _pull_all(runtime, province: str, after: str | None, limit: int) -> tuple[list[str], str | None, int]:
    ids, pages = [], 0
    while True:
        page = _call(runtime, node_exchange.encodings_page, province, after, limit)
        pages += 1
        ids += [e["id"] for e in page["encodings"]]
        after = page["next"]
        if not page["more"]:
            return ids, after, pages


def test_encodings_are_pulled_in_pages_then_only_what_changed(world, runtime):
    world.register("clinic_c")
    world.register("clinic_c")
    cross_province.encode_province(runtime, "PK-SD")
    with runtime.sessions() as s:
        stored = {str(i) for i in s.execute(select(ENC.c.patient_id).where(ENC.c.custodian == "PK-SD")).scalars()}
    ids, cursor, pages = _pull_all(runtime, "PK-SD", None, 2)
    assert len(ids) == len(set(ids)) and set(ids) == stored and pages >= len(ids) // 2
    cross_province.encode_province(runtime, "PK-SD")  # nothing changed: the encodings keep their time
    assert _pull_all(runtime, "PK-SD", cursor, 2)[0] == []
    new = world.register("clinic_c")
    cross_province.encode_province(runtime, "PK-SD")
    assert _pull_all(runtime, "PK-SD", cursor, 2)[0] == [new["id"]]
    page = _call(runtime, node_exchange.encodings_page, "PK-SD", None, 1)
    assert set(page["encodings"][0]) == {"id", "block", "clk"}  # no name, identifier or date


def test_a_cursor_not_issued_by_the_node_is_refused_naming_the_field(runtime):
    with pytest.raises(InvalidInput) as err:
        _call(runtime, node_exchange.encodings_page, "PK-SD", "2026-12-03T00:00:00|not-a-uuid", 10)
    assert err.value.field == "after"


def test_only_the_configured_comparer_speaking_as_such_is_answered():
    node_exchange.check_comparer(CLAIMS, "PK")
    for claims, comparer in ((CLAIMS, None), ({**CLAIMS, "node": "PK-SD"}, "PK"),
                             ({**CLAIMS, "caller": {**CLAIMS["caller"], "role": "data_steward"}}, "PK")):
        with pytest.raises(Forbidden):
            node_exchange.check_comparer(claims, comparer)


def _pair(local: str, **extra) -> dict:
    return {"local_id": uuid.UUID(local), "remote_node": "PK-SD", "remote_id": uuid.uuid4(), "similarity": 0.93,
            "grade": "certain", **extra}


def test_pushed_pairs_are_kept_once_and_only_for_this_nodes_records(world, runtime):
    mine, theirs = world.register("clinic_a"), world.register("clinic_c")  # PK-PB, PK-SD
    pair = _pair(mine["id"])
    assert _call(runtime, node_exchange.store_pairs, "PK-PB", [pair, pair]) == \
        {"received": 2, "stored": 1, "already": 0, "unknown": 0}
    assert _call(runtime, node_exchange.store_pairs, "PK-PB", [pair, _pair(theirs["id"]), _pair(str(uuid.uuid4()))]) == \
        {"received": 3, "stored": 0, "already": 1, "unknown": 2}
    with pytest.raises(InvalidInput) as err:
        _call(runtime, node_exchange.store_pairs, "PK-PB", [_pair(mine["id"]), _pair(mine["id"], remote_node="PK-PB")])
    assert err.value.field == "pairs/1/remote_node"


def test_a_steward_sees_the_pairs_of_records_in_scope_held_by_another_node(world, runtime):
    a = world.register("clinic_a")  # Lahore
    b = world.register("clinic_b")  # Rawalpindi
    _call(runtime, node_exchange.store_pairs, "PK-PB", [_pair(a["id"], similarity=0.88, grade="probable"), _pair(b["id"])])

    def seen(who: str) -> dict:
        r = world.client.get("/api/v1/linkage/remote-candidates?limit=100", headers=world.h(who))
        assert r.status_code == 200, r.text
        return {i["local_id"]: i for i in r.json()["items"] if i["local_id"] in (a["id"], b["id"])}

    district, province = seen("steward_district"), seen("steward_province")
    assert set(district) == {a["id"]} and set(province) == {a["id"], b["id"]}
    assert district[a["id"]]["held_by"] == "PK-SD" and district[a["id"]]["similarity"] == 0.88
    assert seen("steward_other_province") == {}
    assert world.client.get("/api/v1/linkage/remote-candidates", headers=world.h("clinic_a")).status_code == 403
    text = str(district) + str(province)
    assert a["given_name"] not in text and a["family_name"] not in text


def test_a_steward_decides_a_remote_pair_not_the_same_or_unsure_one_decision_wins(world, runtime):
    a, b = world.register("clinic_a"), world.register("clinic_a")
    _call(runtime, node_exchange.store_pairs, "PK-PB", [_pair(a["id"]), _pair(b["id"])])
    items = {i["local_id"]: i for i in world.client.get("/api/v1/linkage/remote-candidates?limit=100",
                                                        headers=world.h("steward_district")).json()["items"]}
    first, second = items[a["id"]], items[b["id"]]
    url = "/api/v1/linkage/remote-candidates/{}/decision"
    decide = lambda cid, who, body, **h: world.client.post(url.format(cid), json=body, headers=world.h(who, **h))  # noqa: E731
    assert decide(first["id"], "steward_district", {"decision": "not_same"}).status_code == 428  # If-Match needed
    assert decide(first["id"], "steward_other_province", {"decision": "not_same"}, **{"If-Match": '"1"'}).status_code == 404
    assert decide(first["id"], "steward_district", {"decision": "same"}, **{"If-Match": '"1"'}).status_code == 422
    r = decide(first["id"], "steward_district", {"decision": "not_same"}, **{"If-Match": '"1"'})
    assert r.status_code == 200 and r.json() == {"candidate_id": first["id"], "status": "not_same", "version": 2}
    lost = decide(first["id"], "steward_province", {"decision": "unsure"}, **{"If-Match": '"1"'})
    assert lost.status_code == 409 and lost.json()["reason"] == "already_decided"
    assert decide(second["id"], "steward_province", {"decision": "unsure"}, **{"If-Match": '"1"'}).status_code == 200
    after = {i["local_id"]: i for i in world.client.get("/api/v1/linkage/remote-candidates?limit=100",
                                                        headers=world.h("steward_district")).json()["items"]}
    assert a["id"] not in after and after[b["id"]]["status"] == "unsure" and after[b["id"]]["version"] == 2
    from conftest import audit_events

    events = [e for e in audit_events(runtime, action="linkage.decide") if str(e.resource_id) == first["id"]]
    # no If-Match, outside scope, the decision, the one that lost (a body refused by its schema reaches no use case)
    assert [e.outcome for e in events] == ["conflict", "not_found", "success", "conflict"]
    assert all(e.detail.get("remote") is True for e in events)


def test_the_console_decides_a_remote_pair_as_the_api_does(app, world, runtime):
    from console_helpers import signed_in

    a = world.register("clinic_a")
    _call(runtime, node_exchange.store_pairs, "PK-PB", [_pair(a["id"])])
    [item] = [i for i in world.client.get("/api/v1/linkage/remote-candidates?limit=100",
                                          headers=world.h("steward_district")).json()["items"] if i["local_id"] == a["id"]]
    c, csrf = signed_in(app, world.users["steward_district"])
    form = {"csrf": csrf, "candidate_id": item["id"], "version": "1", "decision": "not_same"}
    r = c.post("/console/linkage/remote-decision", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/linkage?done=not_same"
    again = c.post("/console/linkage/remote-decision", data=form, follow_redirects=False)
    assert again.status_code == 409
