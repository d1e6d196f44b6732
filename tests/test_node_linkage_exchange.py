"""A province node's side of linkage between nodes, on the test database (SQLite and PostgreSQL):
the comparer's incremental pull of encodings in pages, the pushed pairs kept once and only for
this node's own records, and the steward's list of them by scope (issue 13 item 7). The same
over two real nodes and mutual TLS: tests/test_node_linkage.py."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from registry.context import ServiceContext
from registry.errors import Forbidden, InvalidInput
from registry.linkage import cross_province, node_exchange, node_feed
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
            "grade": "certain", "levels": {"given_name": 3, "birth_date": 3}, **extra}


def test_pushed_pairs_are_kept_once_and_only_for_this_nodes_records(world, runtime):
    mine, theirs = world.register("clinic_a"), world.register("clinic_c")  # PK-PB, PK-SD
    pair = _pair(mine["id"])
    assert _call(runtime, node_exchange.store_pairs, "PK-PB", [pair, pair]) == \
        {"received": 2, "stored": 1, "updated": 0, "already": 0, "unknown": 0, "withdrawn": 0}
    assert _call(runtime, node_exchange.store_pairs, "PK-PB", [pair, _pair(theirs["id"]), _pair(str(uuid.uuid4()))]) == \
        {"received": 3, "stored": 0, "updated": 0, "already": 1, "unknown": 2, "withdrawn": 0}
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


def _feed_since(runtime, province: str, cursor: str | None) -> tuple[dict[str, dict], str | None]:
    entries, after = {}, cursor
    while True:
        page = _call(runtime, node_exchange.encodings_page, province, after, 1000)
        entries.update({e["id"]: e for e in page["encodings"]})
        after = page["next"]
        if not page["more"]:
            return entries, after


def test_a_merged_record_leaves_the_feed_at_once_as_a_tombstone_and_an_unmerge_brings_it_back(world, runtime):
    from test_linkage_merge_effects import merge, unmerge

    survivor, merged = world.register("clinic_a"), world.register("clinic_a")  # PK-PB, the district steward's
    cross_province.encode_province(runtime, "PK-PB")
    seen, cursor = _feed_since(runtime, "PK-PB", None)
    assert set(seen[merged["id"]]) == {"id", "block", "clk"}
    merge(world, survivor["id"], merged["id"])  # at once, before any re-encoding
    seen, cursor = _feed_since(runtime, "PK-PB", cursor)
    assert seen[merged["id"]] == {"id": merged["id"], "gone": True}  # no block, no encoding: only that it is gone
    cross_province.encode_province(runtime, "PK-PB")  # the encoder leaves the merged record out
    assert merged["id"] not in _feed_since(runtime, "PK-PB", cursor)[0]
    with runtime.sessions() as s:
        assert s.execute(select(ENC.c.patient_id).where(ENC.c.patient_id == uuid.UUID(merged["id"]))).first() is None
    unmerge(world, merged["id"])
    cross_province.encode_province(runtime, "PK-PB")
    seen, _ = _feed_since(runtime, "PK-PB", cursor)
    assert set(seen[merged["id"]]) == {"id", "block", "clk"}


def test_a_cursor_of_the_old_form_restarts_the_feed(world, runtime):
    world.register("clinic_c")
    cross_province.encode_province(runtime, "PK-SD")
    everything, _ = _feed_since(runtime, "PK-SD", None)
    assert _feed_since(runtime, "PK-SD", "2026-12-03T09:00:00+00:00|" + str(uuid.uuid4()))[0] == everything


def test_a_rescored_pair_is_updated_and_a_withdrawn_one_leaves_the_queue_its_decision_kept(world, runtime):
    from conftest import audit_events

    a = world.register("clinic_a")
    pair = _pair(a["id"], similarity=0.91, grade="probable")
    _call(runtime, node_exchange.store_pairs, "PK-PB", [pair])
    queue = lambda: {i["local_id"]: i for i in world.client.get(  # noqa: E731
        "/api/v1/linkage/remote-candidates?limit=100", headers=world.h("steward_district")).json()["items"]}
    item = queue()[a["id"]]
    r = world.client.post(f"/api/v1/linkage/remote-candidates/{item['id']}/decision", json={"decision": "unsure"},
                          headers=world.h("steward_district", **{"If-Match": '"1"'}))
    assert r.status_code == 200, r.text
    # re-scored by the comparer (a record's fields changed): the score changes, the steward's decision stands
    counts = _call(runtime, node_exchange.store_pairs, "PK-PB", [{**pair, "similarity": 0.97, "grade": "certain"}])
    assert counts["updated"] == 1 and counts["stored"] == 0
    item = queue()[a["id"]]
    assert (item["similarity"], item["grade"], item["status"], item["version"]) == (0.97, "certain", "unsure", 3)
    # withdrawn (a record merged or erased on a node): out of the queue, the decision kept in the audit trail
    gone = {k: pair[k] for k in ("local_id", "remote_node", "remote_id")}
    assert _call(runtime, node_exchange.store_pairs, "PK-PB", [], [gone, gone])["withdrawn"] == 1
    assert a["id"] not in queue()
    decided = [e for e in audit_events(runtime, action="linkage.decide") if str(e.resource_id) == item["id"]]
    assert [(e.outcome, e.detail["decision"]) for e in decided] == [("success", "unsure")]
    # found again later: back in the queue, open
    assert _call(runtime, node_exchange.store_pairs, "PK-PB", [pair])["updated"] == 1
    assert queue()[a["id"]]["status"] == "open"


def test_two_concurrent_encoders_cannot_commit_behind_a_pull(runtime):
    """The feed lock (node_feed.py): a second writer waits for the first to commit, so a pull made
    meanwhile sees neither and the cursor it keeps is below both. Without the lock the second
    writer would commit first, a pull would pass it, and the first writer's rows, committed later
    at a lower position, would never be pulled."""
    from conftest import is_postgres

    if not is_postgres(runtime):
        pytest.skip("two concurrent writers: PostgreSQL (SQLite has one writer at a time by construction)")
    custodian, first, second = f"T-{uuid.uuid4().hex[:8]}", uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    a = runtime.sessions()
    a.begin()
    node_feed.write(a, custodian, [], [first], now)  # encoder A has its position, not committed yet
    done = threading.Event()

    def encoder_b():
        with runtime.sessions.begin() as b:
            node_feed.write(b, custodian, [], [second], now)
        done.set()

    t = threading.Thread(target=encoder_b)
    t.start()
    try:
        assert not done.wait(1.0)  # B waits at the feed lock while A is open
        with runtime.sessions() as s:
            assert node_feed.page(s, custodian, None, 10) == []  # a pull now sees neither
    finally:
        a.commit()
        a.close()
        t.join(30)
    assert done.is_set()
    with runtime.sessions() as s:
        rows = node_feed.page(s, custodian, None, 10)
    assert [(r.id, r.clk) for r in rows] == [(first, None), (second, None)] and rows[0].seq < rows[1].seq
    with runtime.sessions() as s:  # from a cursor after A's row, B's row still follows
        assert [r.id for r in node_feed.page(s, custodian, (rows[0].seq, rows[0].id), 10)] == [second]


def test_the_scheduled_encoder_brings_an_unmerged_record_back_to_the_comparers_feed(world, runtime):
    from test_linkage_merge_effects import merge, unmerge

    from registry.linkage import encode_schedule
    from registry.settings import Settings

    assert not encode_schedule.configured(Settings(env="test", node={"encode_interval_seconds": 60}))  # no comparer: no feed
    assert not encode_schedule.configured(Settings(env="test", node={"comparer": "PK"}))  # interval 0: the command only
    assert encode_schedule.configured(Settings(env="test", node={"comparer": "PK", "encode_interval_seconds": 60}))
    survivor, merged = world.register("clinic_a"), world.register("clinic_a")
    assert encode_schedule.run_once(runtime)["PK-PB"] >= 2
    _, cursor = _feed_since(runtime, "PK-PB", None)
    merge(world, survivor["id"], merged["id"])
    unmerge(world, merged["id"])
    seen, cursor = _feed_since(runtime, "PK-PB", cursor)
    assert seen[merged["id"]] == {"id": merged["id"], "gone": True}  # the unmerge alone cannot encode (no secret in use)
    encode_schedule.run_once(runtime)
    seen, _ = _feed_since(runtime, "PK-PB", cursor)
    assert set(seen[merged["id"]]) == {"id", "block", "clk"}
