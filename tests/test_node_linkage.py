"""Cross-province linkage between provincial nodes, encodings only (issue 13 item 7,
docs/linkage.md "Between provincial nodes").

The federation of tests/test_provincial_nodes.py (two real PostgreSQL clusters, two `nhr node
serve` processes over mutual TLS; its fixtures are reused here) plus a national comparer: a node
of the same federation CA named `PK`, with its own SQLite database and a key directory made by
`nhr init --without-linkage-secret`, running no listener. Checked:
- each province node encodes its own records with the provinces' shared linkage secret;
- the comparer pulls every node's encodings in pages, compares them and pushes each pair to BOTH
  nodes, stored there as (local record, remote node + record, similarity, grade); a steward of
  each province sees it in the API and the console as "record held by PK-..", without a name;
- the next run pulls only what changed since the last pull;
- only the comparer may read encodings or push pairs: a province node asking is refused 403 and
  audited by the asked node, as is the comparer's certificate speaking as another role;
- the comparer's process never loads the secret (its keyring may not create it, and has none);
- encodings and pairs carry ids, block, CLK and scores only; every pull and push is audited on
  both sides with counts only;
- a record merged on a node reaches the comparer as a tombstone, which withdraws its pairs on
  both nodes (out of the stewards' queues); an unmerge brings the pair back;
- the node routes are rate limited per calling node: 429 problem+json with Retry-After, audited;
- `nhr worker` on the comparer runs it on its interval, a node that cannot be reached not
  stopping the others.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from registry.linkage import bloom_fields
from registry.runtime import Runtime
from registry.settings import Settings
from security.crypto.errors import KeyUnavailable
from security.nodes.identity import NodeSigner, issue_node
from test_provincial_nodes import COMPARER, ROOT, _child, _tls, federation, punjab_child  # noqa: F401 (fixtures)

NAMES = ("Ayesha", "Aisha", "Khan", "Sana")


def _nhr(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def secret_file(federation) -> Path:
    """The provinces' shared national linkage secret, as each province's encoder holds it."""
    path = federation["base"] / "linkage-secret"
    path.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
    return path


def _encode(node, secret_file: Path) -> None:
    r = _nhr({**node.env, "NHR_LINKAGE_SECRET_FILE": str(secret_file)}, "dedupe", "encode", "--province", node.province)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def comparer(federation) -> dict:
    """The national comparer: its certificate (`nhr-node:PK`), database and key directory without the secret."""
    home = federation["base"] / COMPARER
    cert, key = issue_node(federation["ca"], COMPARER, home / "tls")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NHR_")}
    env.update({"NHR_ENV": "test", "NHR_DATABASE_URL": f"sqlite:///{home / 'comparer.sqlite3'}",
                "NHR_KEY_DIR": str(home / "keys"), "NHR_NODE_PEERS_FILE": str(federation["base"] / "peers.json"),
                "NHR_NODE_TLS_CERT": str(cert), "NHR_NODE_TLS_KEY": str(key),
                "NHR_NODE_TLS_CA": str(federation["ca"] / "ca.pem"), "NHR_NODE_TIMEOUT_SECONDS": "30"})
    r = _nhr(env, "init", "--without-linkage-secret")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (home / "keys/secrets/linkage-secret.key").exists()
    return {"env": env, "home": home, "cert": cert, "key": key, "db": home / "comparer.sqlite3"}


def _comparer_runtime(federation, comparer) -> Runtime:
    """The comparer in this process, with a keyring that has no `linkage-secret` and may not create one."""
    env = comparer["env"]
    settings = Settings(env="test", database_url=env["NHR_DATABASE_URL"], key_dir=Path(env["NHR_KEY_DIR"]),
                        node={"peers_file": env["NHR_NODE_PEERS_FILE"], "tls_cert": env["NHR_NODE_TLS_CERT"],
                              "tls_key": env["NHR_NODE_TLS_KEY"], "tls_ca": env["NHR_NODE_TLS_CA"],
                              "timeout_seconds": 30})
    rt = Runtime.build(settings)
    rt.keyring.create_missing = False
    return rt


def _run(federation, comparer):
    from api.nodes.transport import MutualTlsTransport
    from registry.linkage import node_comparer

    rt = _comparer_runtime(federation, comparer)
    try:
        with pytest.raises(KeyUnavailable):  # the premise: this process cannot use the secret
            rt.keyring.secret("linkage-secret")
        cmp = node_comparer.Comparer.from_settings(rt.settings, MutualTlsTransport(rt.settings))
        assert cmp.node == COMPARER and set(cmp.peers) == {"PK-PB", "PK-SD"}
        return asyncio.run(node_comparer.run(rt, cmp))
    finally:
        rt.engine.dispose()


def _comparer_events(comparer, action: str) -> list[dict]:
    with sqlite3.connect(comparer["db"]) as c:
        c.row_factory = sqlite3.Row
        rows = c.execute("SELECT * FROM audit_events WHERE action = ? ORDER BY occurred_at", (action,)).fetchall()
    return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]


def _remote_rows(node) -> list[dict]:
    with psycopg.connect(node.cluster.url(), row_factory=psycopg.rows.dict_row) as c:
        return c.execute("SELECT * FROM link_remote_candidates ORDER BY created_at").fetchall()


@pytest.fixture(scope="module")
def linked(federation, punjab_child, secret_file, comparer) -> dict:
    """A Sindh record of the Punjab child (another spelling), both nodes encoded, one comparer run."""
    with federation["sindh"].client("clinic.karachi") as c:
        r = c.post("/api/v1/patients", json=_child(given_name="Aisha"))
        assert r.status_code == 201, r.text
        sindh_child = r.json()
    for node in (federation["punjab"], federation["sindh"]):
        _encode(node, secret_file)
    report = _run(federation, comparer)
    return {"report": report, "punjab_id": punjab_child["id"], "sindh_id": sindh_child["id"]}


def test_the_comparer_pulls_compares_and_pushes_each_pair_to_both_nodes(federation, linked):
    punjab, sindh, report = federation["punjab"], federation["sindh"], linked["report"]
    assert report.pulled == {"PK-PB": 1, "PK-SD": 1} and report.unreachable == []
    assert report.found == 1 and report.pushed == {"PK-PB": 1, "PK-SD": 1}
    [theirs] = _remote_rows(punjab)
    assert str(theirs["local_id"]) == linked["punjab_id"] and theirs["remote_node"] == "PK-SD"
    assert str(theirs["remote_id"]) == linked["sindh_id"] and theirs["similarity"] >= 0.78 and theirs["status"] == "open"
    [ours] = _remote_rows(sindh)
    assert str(ours["local_id"]) == linked["sindh_id"] and ours["remote_node"] == "PK-PB"
    assert str(ours["remote_id"]) == linked["punjab_id"] and ours["similarity"] == theirs["similarity"]
    assert ours["grade"] == theirs["grade"] and ours["levels"] == theirs["levels"]
    assert set(ours["levels"]) == {"given_name", "family_name", "guardian_name", "birth_date", "sex"}


def test_each_provinces_steward_sees_the_pair_as_held_by_the_other_node_without_names(federation, linked):
    for node, local, other in ((federation["punjab"], linked["punjab_id"], "PK-SD"),
                               (federation["sindh"], linked["sindh_id"], "PK-PB")):
        steward = f"steward.{'punjab' if node.province == 'PK-PB' else 'sindh'}"
        with node.client(steward) as c:
            r = c.get("/api/v1/linkage/remote-candidates")
            assert r.status_code == 200, r.text
            [item] = r.json()["items"]
            assert item["local_id"] == local and item["held_by"] == other and item["similarity"] >= 0.78
        assert not any(n in r.text for n in NAMES)
        event = node.cluster.events("linkage.queue")[-1]
        assert event["detail"] == {"count": 1, "remote": True} and event["actor_username"] == steward
    _console_queue_shows_held_by(federation["punjab"], "steward.punjab", "PK-SD")
    with federation["punjab"].client("clinic.lahore") as c:  # not a steward
        assert c.get("/api/v1/linkage/remote-candidates").status_code == 403


def _console_queue_shows_held_by(node, username: str, other: str) -> None:
    import re

    from test_provincial_nodes import PASSWORD

    csrf = re.compile(r'name="csrf" value="([^"]+)"')
    with httpx.Client(base_url=node.url, timeout=60, trust_env=False) as c:
        token = csrf.search(c.get("/console/login").text).group(1)
        assert c.post("/console/login", data={"username": username, "password": PASSWORD, "csrf": token}).status_code == 303
        page = c.get("/console/linkage")
    assert page.status_code == 200 and f"record held by {other}" in " ".join(page.text.split())
    assert "Ayesha" not in page.text and "Aisha" not in page.text


def test_every_pull_and_push_is_audited_on_both_sides_with_counts_only(federation, comparer, linked):
    for node in (federation["punjab"], federation["sindh"]):
        [pull] = [e for e in node.cluster.events("linkage.encodings") if e["outcome"] == "success"][:1]
        assert pull["client_address"] == f"node:{COMPARER}" and pull["detail"]["remote_node"] == COMPARER
        assert pull["detail"]["count"] == 1 and pull["detail"]["incremental"] is False
        [push] = node.cluster.events("linkage.pairs")[:1]
        assert push["outcome"] == "success" and push["detail"]["stored"] == 1 and push["detail"]["unknown"] == 0
        text = json.dumps(pull["detail"], default=str) + json.dumps(push["detail"], default=str)
        assert not any(n in text for n in NAMES) and linked["punjab_id"] not in text and linked["sindh_id"] not in text
    pulls = {e["detail"]["node"]: e["detail"] for e in _comparer_events(comparer, "linkage.encodings")[:2]}
    assert pulls == {"PK-PB": {"node": "PK-PB", "count": 1, "gone": 0, "pages": 1, "incremental": False},
                     "PK-SD": {"node": "PK-SD", "count": 1, "gone": 0, "pages": 1, "incremental": False}}
    pushes = {e["detail"]["node"]: e["detail"] for e in _comparer_events(comparer, "linkage.pairs")[:2]}
    assert pushes["PK-PB"]["sent"] == 1 and pushes["PK-SD"]["stored"] == 1
    [run] = _comparer_events(comparer, "linkage.node_compare")[:1]
    assert run["detail"]["found"] == 1 and run["actor_username"] is None


def test_the_next_run_pulls_only_what_changed(federation, comparer, secret_file, linked):
    again = _run(federation, comparer)  # nothing re-encoded since
    assert again.pulled == {"PK-PB": 0, "PK-SD": 0} and again.found == 0 and again.pushed == {"PK-PB": 0, "PK-SD": 0}
    with federation["sindh"].client("clinic.karachi") as c:
        r = c.post("/api/v1/patients", json=_child(given_name="Zainab", family_name="Baloch",
                                                   guardian={"name": "Hina Baloch", "relationship": "mother"}))
        assert r.status_code == 201, r.text
    for node in (federation["punjab"], federation["sindh"]):
        _encode(node, secret_file)  # re-encodes every record; unchanged encodings keep their time
    later = _run(federation, comparer)
    assert later.pulled == {"PK-PB": 0, "PK-SD": 1} and later.found == 0
    assert len(_remote_rows(federation["punjab"])) == 1 and len(_remote_rows(federation["sindh"])) == 1
    last = [e for e in federation["sindh"].cluster.events("linkage.encodings") if e["outcome"] == "success"][-1]
    assert last["detail"]["incremental"] is True


def test_the_comparer_command_runs_without_the_secret(federation, comparer, linked):
    """`nhr dedupe cross-province --nodes` in its own process: in test settings a key that is used is
    created, so the secret's file appearing would show that the comparer touched it."""
    r = _nhr(comparer["env"], "dedupe", "cross-province", "--nodes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PK-PB: 0 encodings pulled" in r.stdout and "PK-SD: 0 encodings pulled" in r.stdout
    assert not (comparer["home"] / "keys/secrets/linkage-secret.key").exists()
    assert "NHR_LINKAGE_SECRET_FILE" not in comparer["env"]


def _exchange(node, files: tuple[Path, Path], caller: dict, ca: Path, path: str, body: dict) -> httpx.Response:
    """One node-to-node request to `node`, over mutual TLS with the certificate `files`, signed by its key."""
    assertion = NodeSigner.load(*files).assert_caller(node.province, caller)
    return httpx.post(node.node_url + path, json={"assertion": assertion, **body}, trust_env=False, timeout=30,
                      verify=_tls(cert=files, ca=ca))


def test_only_the_comparer_may_read_encodings_or_push_pairs(federation, comparer, linked):
    from registry.linkage import node_comparer, node_exchange

    punjab, sindh, ca = federation["punjab"], federation["sindh"], federation["ca"] / "ca.pem"
    sindh_signer, comparer_signer = (sindh.cert, sindh.key), (comparer["cert"], comparer["key"])
    as_comparer = node_comparer.Comparer(COMPARER, {}, NodeSigner.load(*comparer_signer), None).caller()
    before = len(punjab.cluster.events("linkage.encodings"))
    # a province node asking another for its encodings, even claiming the comparer's role: refused, audited
    r = _exchange(punjab, sindh_signer, as_comparer, ca, node_exchange.ENCODINGS_PATH, {})
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert "clk" not in r.text
    refused = punjab.cluster.events("linkage.encodings")[before:]
    assert [(e["outcome"], e["detail"]["remote_node"]) for e in refused] == [("denied", "PK-SD")]
    # ... and pushing pairs
    pair = {"local_id": linked["punjab_id"], "remote_node": "PK-SD", "remote_id": str(uuid.uuid4()),
            "similarity": 0.99, "grade": "certain", "levels": {"birth_date": 4}}
    r = _exchange(punjab, sindh_signer, as_comparer, ca, node_exchange.PAIRS_PATH, {"pairs": [pair]})
    assert r.status_code == 403 and len(_remote_rows(punjab)) == 1
    assert punjab.cluster.events("linkage.pairs")[-1]["outcome"] == "denied"
    # the comparer's certificate speaking for a member of staff: refused
    staff = {**as_comparer, "role": "clinic_worker"}
    assert _exchange(punjab, comparer_signer, staff, ca, node_exchange.ENCODINGS_PATH, {}).status_code == 403
    # the comparer itself: answered, with ids, block and encoding only
    r = _exchange(punjab, comparer_signer, as_comparer, ca, node_exchange.ENCODINGS_PATH, {"limit": 10})
    assert r.status_code == 200, r.text
    [enc] = r.json()["encodings"]
    assert set(enc) == {"id", "block", "clk"} and bloom_fields.unpack(base64.b64decode(enc["clk"])) is not None
    assert not any(n in r.text for n in NAMES) and "35202" not in r.text
    # bad input: problem+json naming the field, audited
    r = _exchange(punjab, comparer_signer, as_comparer, ca, node_exchange.ENCODINGS_PATH, {"after": "yesterday|1"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == "after"
    assert punjab.cluster.events("linkage.encodings")[-1]["outcome"] == "invalid"
    # a pushed pair naming a record this node does not hold is counted, not stored
    r = _exchange(punjab, comparer_signer, as_comparer, ca, node_exchange.PAIRS_PATH,
                  {"pairs": [{**pair, "local_id": str(uuid.uuid4())}]})
    assert r.status_code == 200 and r.json()["unknown"] == 1 and len(_remote_rows(punjab)) == 1
    # the comparer cannot use the search a province node may
    from test_provincial_nodes import _search_body

    r = httpx.post(punjab.node_url + "/node/v1/patients/search", json=_search_body(NodeSigner.load(*comparer_signer), as_comparer),
                   verify=_tls(cert=(comparer["cert"], comparer["key"]), ca=ca), trust_env=False, timeout=30)
    assert r.status_code == 401 and "Ayesha" not in r.text


def _steward(node, path: str, body: dict) -> dict:
    steward = "steward.punjab" if node.province == "PK-PB" else "steward.sindh"
    with node.client(steward) as c:
        r = c.post(path, json=body)
    assert r.status_code in (200, 201), r.text
    return r.json()


def _queue_ids(node) -> set[str]:
    steward = "steward.punjab" if node.province == "PK-PB" else "steward.sindh"
    with node.client(steward) as c:
        r = c.get("/api/v1/linkage/remote-candidates")
    assert r.status_code == 200, r.text
    return {i["local_id"] for i in r.json()["items"]}


def test_a_merge_on_a_node_withdraws_the_pair_on_both_nodes_and_an_unmerge_brings_it_back(federation, comparer, secret_file,
                                                                                          linked):
    punjab, sindh = federation["punjab"], federation["sindh"]
    with sindh.client("clinic.karachi") as c:
        r = c.post("/api/v1/patients", json=_child(given_name="Mehwish", family_name="Qureshi",
                                                   guardian={"name": "Rabia Qureshi", "relationship": "mother"}))
        assert r.status_code == 201, r.text
        survivor = r.json()
    _steward(sindh, "/api/v1/linkage/merges", {"survivor_id": survivor["id"], "merged_id": linked["sindh_id"]})
    report = _run(federation, comparer)  # the merge is in Sindh's feed at once: no re-encoding needed
    assert report.gone["PK-SD"] == 1 and report.withdrawn == 1 and report.unreachable == []
    for node in (punjab, sindh):
        assert [r["status"] for r in _remote_rows(node)] == ["withdrawn"]
    assert linked["punjab_id"] not in _queue_ids(punjab) and linked["sindh_id"] not in _queue_ids(sindh)
    pushes = [e for e in punjab.cluster.events("linkage.pairs") if e["outcome"] == "success"]
    assert pushes[-1]["detail"]["withdrawn"] == 1 and pushes[-1]["client_address"] == f"node:{COMPARER}"
    # the unmerge: the record is encoded again, the pair found again, back in both queues
    _steward(sindh, f"/api/v1/linkage/patients/{linked['sindh_id']}/unmerge", {})
    _encode(sindh, secret_file)
    again = _run(federation, comparer)
    assert again.pulled["PK-SD"] >= 1 and again.rescored == 1 and again.found == 0
    for node in (punjab, sindh):
        assert [r["status"] for r in _remote_rows(node)] == ["open"]
    assert linked["punjab_id"] in _queue_ids(punjab) and linked["sindh_id"] in _queue_ids(sindh)


def test_the_linkage_routes_are_rate_limited_per_calling_node(federation, comparer, linked):
    from registry.linkage import node_comparer, node_exchange

    punjab, sindh, ca = federation["punjab"], federation["sindh"], federation["ca"] / "ca.pem"
    as_comparer = node_comparer.Comparer(COMPARER, {}, NodeSigner.load(comparer["cert"], comparer["key"]), None).caller()
    statuses = []
    for _ in range(80):  # Sindh's node hammering Punjab's linkage route: refused 403, then 429 past 60 a window
        r = _exchange(punjab, (sindh.cert, sindh.key), as_comparer, ca, node_exchange.ENCODINGS_PATH, {})
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {403} and len(statuses) <= 61
    assert r.headers["content-type"].startswith("application/problem+json") and 0 < int(r.headers["retry-after"]) <= 600
    assert "clk" not in r.text
    [event] = punjab.cluster.events("linkage.encodings")[-1:]
    assert event["outcome"] == "denied" and event["detail"]["reason"] == "rate_limited"
    assert event["detail"]["remote_node"] == "PK-SD"
    # the comparer's own window is another: it is still answered
    r = _exchange(punjab, (comparer["cert"], comparer["key"]), as_comparer, ca, node_exchange.ENCODINGS_PATH, {"limit": 1})
    assert r.status_code == 200, r.text


def test_the_worker_runs_the_comparer_on_its_interval_a_dead_node_not_stopping_the_others(federation, comparer,
                                                                                          secret_file, linked):
    punjab, sindh = federation["punjab"], federation["sindh"]
    with sindh.client("clinic.karachi") as c:  # a third spelling of the Punjab child, for the worker to find
        r = c.post("/api/v1/patients", json=_child(given_name="Aysha"))
        assert r.status_code == 201, r.text
        aysha = r.json()
    _encode(sindh, secret_file)
    peers = federation["base"] / "peers-with-a-dead-node.json"
    live = json.loads((federation["base"] / "peers.json").read_text())
    peers.write_text(json.dumps({**live, "PK-KP": "https://127.0.0.1:9"}))  # nothing listens there
    env = {**comparer["env"], "NHR_NODE_PEERS_FILE": str(peers), "NHR_NODE_COMPARE_INTERVAL_SECONDS": "2",
           "NHR_NODE_TIMEOUT_SECONDS": "5", "NHR_AUDIT_SEAL_INTERVAL_SECONDS": "0", "NHR_REPORT_REFRESH_INTERVAL_SECONDS": "0"}
    before = len(_comparer_events(comparer, "linkage.node_compare"))
    worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(_comparer_events(comparer, "linkage.node_compare")) < before + 2 and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stderr.read()
            time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    runs = [e["detail"] for e in _comparer_events(comparer, "linkage.node_compare")[before:]]
    assert len(runs) >= 2 and all(r["unreachable"] == ["PK-KP"] for r in runs)
    assert runs[0]["pulled"]["PK-SD"] >= 1 and runs[0]["found"] >= 1 and runs[1]["found"] == 0
    assert aysha["id"] in {str(r["local_id"]) for r in _remote_rows(sindh)}
    assert aysha["id"] in {str(r["remote_id"]) for r in _remote_rows(punjab)}
    assert "Aysha" not in err and "Ayesha" not in err
