"""Provincial nodes across two real PostgreSQL clusters (issue 16 item 4, docs/nodes.md).

Two clusters are created with `initdb` on spare loopback ports in temporary directories; a
Punjab node and a Sindh node run as real `nhr node serve` processes (public API on plain HTTP on
loopback, node-to-node listener with mutual TLS), each on its own cluster, key directory and
node certificate from a federation CA made here. Checked:
- a Sindh clinic finds a Punjab child by B-form: identity confirmation only, marked held_by
  PK-PB; the Punjab node audits the search naming the remote caller, the Sindh node audits its own;
- a node registers only its own province's patients;
- the node listener refuses a client without a certificate, and one whose certificate another
  CA issued; an assertion not signed by an admitted node is 401, a caller a node may not speak for 403
  (both audited by the receiving node);
- with the Punjab cluster stopped, Sindh still registers, records a dose, reads and searches,
  and the national report marks Punjab `stale` with its last good report instead of failing,
  also after the Sindh node restarts (the last good report is in its database);
- a node holds data keys for its own province only.

Skipped when PostgreSQL's server binaries are missing; `NHR_REQUIRE_NODES=1` (CI) makes that a failure.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import httpx
import psycopg
import pytest

from registry import bootstrap
from registry.clock import local_today
from registry.runtime import Runtime
from registry.settings import Settings
from security.access.permissions import Role
from security.nodes.identity import NodeSigner, create_ca, issue_node
from tests.live_server import free_port

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "provincial-node-test-password"
BFORM = "35202-7654321-2"
COMPARER = "PK"  # the node name of the national linkage comparer's certificate


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    path = found[-1] if found else shutil.which("initdb")
    return Path(path).parent if path else None


PG_BIN = _pg_bin()
if PG_BIN is None:
    if os.environ.get("NHR_REQUIRE_NODES") == "1":
        raise RuntimeError("NHR_REQUIRE_NODES=1 but PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    pytest.skip("PostgreSQL's server binaries (initdb) are not installed", allow_module_level=True)


def _as_server_user(cmd: list[str]) -> list[str]:
    """initdb refuses root: run the cluster as `postgres` when the tests run as root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Cluster:
    def __init__(self, base: Path, name: str) -> None:
        self.dir, self.port = base / name, free_port()
        self.dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o700)
        subprocess.run(_as_server_user([str(PG_BIN / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres",
                                        "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]),
                       check=True, capture_output=True)
        self.start()
        with psycopg.connect(self.url("postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE nhr")

    def url(self, db: str = "nhr") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        subprocess.run(_as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-o", options,
                                        "-l", str(self.dir / "log"), "-w", "start"]), check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(_as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w",
                                        "stop"]), check=False, capture_output=True)

    def events(self, action: str) -> list[dict]:
        with psycopg.connect(self.url(), row_factory=psycopg.rows.dict_row) as c:
            return c.execute("SELECT * FROM audit_events WHERE action = %s ORDER BY occurred_at", (action,)).fetchall()


class Node:
    """One province's node: its cluster, key directory, certificate and `nhr node serve` process."""

    def __init__(self, base: Path, province: str, cluster: Cluster, ca_dir: Path, users: list[tuple]) -> None:
        self.province, self.cluster = province, cluster
        self.home = base / province
        self.cert, self.key = issue_node(ca_dir, province, self.home / "tls")
        self.port, self.node_port = free_port(), free_port()
        self.env = {**os.environ, "NHR_ENV": "test", "NHR_DATABASE_URL": cluster.url(), "NHR_KEY_DIR": str(self.home / "keys"),
                    "NHR_NODE_PROVINCE": province, "NHR_NODE_PEERS_FILE": str(base / "peers.json"),
                    "NHR_NODE_TLS_CERT": str(self.cert), "NHR_NODE_TLS_KEY": str(self.key),
                    "NHR_NODE_TLS_CA": str(ca_dir / "ca.pem"), "NHR_NODE_TIMEOUT_SECONDS": "30",
                    "NHR_AUDIT_SEAL_INTERVAL_SECONDS": "0", "NHR_REPORT_REFRESH_INTERVAL_SECONDS": "0",
                    "NHR_ARGON2_MEMORY_KIB": "1024", "NHR_ARGON2_TIME_COST": "1", "NHR_RATE_LIMIT_REQUESTS": "100000",
                    "NHR_LINKAGE_CHECK": "false", "NHR_CONSOLE_SECURE_COOKIE": "false",
                    "NHR_NODE_COMPARER": COMPARER,  # the national linkage comparer (tests/test_node_linkage.py)
                    # a calling node's requests to /node/v1/linkage/* (tests/test_node_linkage.py reaches it)
                    "NHR_NODE_LINKAGE_RATE_LIMIT_REQUESTS": "60", "NHR_NODE_LINKAGE_RATE_LIMIT_WINDOW_SECONDS": "600"}
        settings = Settings(env="test", database_url=cluster.url(), key_dir=self.home / "keys", node={"province": province},
                            passwords={"argon2_memory_kib": 1024, "argon2_time_cost": 1})
        rt = Runtime.build(settings, provisioning=True)
        try:
            bootstrap.init(rt)
            from cli.main import _create_user

            for username, role, scope in users:
                _create_user(rt, username, username, role, scope, PASSWORD)
        finally:
            rt.engine.dispose()
        self.proc = None

    def serve(self) -> None:
        log = (self.home / "serve.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "node", "serve", "--host", "127.0.0.1", "--port",
                                      str(self.port), "--node-port", str(self.node_port)], cwd=ROOT, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        for _ in range(900):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.province} node exited; see {self.home / 'serve.log'}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the {self.province} node did not come up")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def node_url(self) -> str:
        return f"https://127.0.0.1:{self.node_port}"

    @contextmanager
    def client(self, username: str) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=self.url, timeout=60, trust_env=False) as c:
            r = c.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.status_code
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            yield c

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def federation():
    base = Path(tempfile.mkdtemp(prefix="nhr-nodes-"))
    base.chmod(0o755)  # the postgres user must reach its cluster directories
    clusters, nodes = [], []
    try:
        ca = base / "ca"
        create_ca(ca)
        clusters = [Cluster(base, "pg-punjab"), Cluster(base, "pg-sindh")]
        punjab = Node(base, "PK-PB", clusters[0], ca, [("clinic.lahore", Role.CLINIC_WORKER, "F-LAH-02"),
                                                        ("steward.punjab", Role.DATA_STEWARD, "PK-PB")])
        sindh = Node(base, "PK-SD", clusters[1], ca, [("clinic.karachi", Role.CLINIC_WORKER, "F-KRC-02"),
                                                       ("steward.sindh", Role.DATA_STEWARD, "PK-SD"),
                                                       ("official.national", Role.HEALTH_OFFICIAL, "PK"),
                                                       ("clinic.misplaced", Role.CLINIC_WORKER, "F-LAH-02"),
                                                       ("official.sindh", Role.HEALTH_OFFICIAL, "PK-SD")])
        nodes = [punjab, sindh]
        (base / "peers.json").write_text(json.dumps({n.province: n.node_url for n in nodes}))
        for n in nodes:
            n.serve()
        for n in nodes:
            n.wait_ready()
        yield {"punjab": punjab, "sindh": sindh, "ca": ca, "base": base}
    finally:
        for n in nodes:
            n.close()
        for c in clusters:
            c.stop()
        shutil.rmtree(base, ignore_errors=True)


def _child(**extra) -> dict:
    born = (local_today() - timedelta(days=20)).isoformat()
    return {"given_name": "Ayesha", "family_name": "Khan", "sex": "female", "birth_date": born,
            "guardian": {"name": "Sana Khan", "relationship": "mother", "cnic": "35202-1234567-1"},
            "phone": "0300-1234567", "address": "House 12, Street 4", **extra}


@pytest.fixture(scope="module")
def punjab_child(federation) -> dict:
    with federation["punjab"].client("clinic.lahore") as c:
        r = c.post("/api/v1/patients", json=_child(bform=BFORM))
        assert r.status_code == 201, r.text
        return r.json()


def test_a_sindh_clinic_finds_a_punjab_child_by_bform_identity_only_audited_on_both_nodes(federation, punjab_child):
    punjab, sindh = federation["punjab"], federation["sindh"]
    with sindh.client("clinic.karachi") as c:
        r = c.post("/api/v1/patients/search", json={"system": "bform", "value": BFORM})
    assert r.status_code == 200, r.text
    [match] = r.json()
    assert match["id"] == punjab_child["id"] and match["held_by"] == "PK-PB" and match["access"] == "search"
    assert match["given_name"] == "Ayesha" and match["guardian"]["name"] == "Sana Khan"
    for withheld in ("bform", "cnic", "phone", "address", "custodian", "version"):
        assert withheld not in match
    assert "cnic" not in match["guardian"]

    [theirs] = [e for e in punjab.cluster.events("patient.search") if e["actor_username"] == "PK-SD:clinic.karachi"]
    assert theirs["outcome"] == "success" and theirs["outside_capture_scope"] is True
    assert theirs["detail"]["remote_node"] == "PK-SD" and theirs["detail"]["matches"] == 1
    assert theirs["detail"]["remote_caller"]["scope"] == "facility:F-KRC-02" and theirs["client_address"] == "node:PK-SD"
    [ours] = sindh.cluster.events("patient.search")
    assert ours["actor_username"] == "clinic.karachi" and ours["detail"]["remote_matches"] == 1
    assert ours["detail"]["remote_subjects"] == [punjab_child["id"]] and "peers_unreachable" not in ours["detail"]
    assert BFORM not in json.dumps(theirs["detail"]) + json.dumps(ours["detail"])


def test_the_console_search_asks_the_peers_too(federation, punjab_child):
    csrf = re.compile(r'name="csrf" value="([^"]+)"')
    with httpx.Client(base_url=federation["sindh"].url, timeout=60, trust_env=False) as c:
        token = csrf.search(c.get("/console/login").text).group(1)
        r = c.post("/console/login", data={"username": "clinic.karachi", "password": PASSWORD, "csrf": token})
        assert r.status_code == 303, r.status_code
        token = csrf.search(c.get("/console").text).group(1)
        page = c.post("/console/children/find", data={"system": "bform", "value": BFORM, "csrf": token})
    assert page.status_code == 200 and "Ayesha" in page.text and "PK-PB" in page.text
    assert punjab_child["id"] not in page.text  # no "open record" for a record this node does not hold
    assert "35202-1234567-1" not in page.text and "1234567" not in page.text.replace(BFORM, "")  # no CNIC, no phone


def test_a_node_holds_keys_for_its_own_province_only(federation):
    for node in (federation["punjab"], federation["sindh"]):
        with psycopg.connect(node.cluster.url()) as c:
            custodians = {r[0] for r in c.execute("SELECT DISTINCT custodian FROM data_keys")}
        assert custodians == {node.province}


def test_a_node_registers_only_its_own_provinces_patients(federation):
    with federation["sindh"].client("clinic.karachi") as c:
        r = c.post("/api/v1/patients", json=_child(district="PK-PB-LAH"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "district"
    assert "Ayesha" not in r.text
    # an account of this node scoped at another province's facility cannot make this node that province's custodian
    with federation["sindh"].client("clinic.misplaced") as c:
        r = c.post("/api/v1/patients", json=_child(district="PK-SD-HYD"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "district"


def _tls(*, cert: tuple[Path, Path] | None, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def _search_body(signer: NodeSigner, caller: dict) -> dict:
    from registry.nodes.federation import query_digest

    digest = query_digest("bform", BFORM.replace("-", ""))
    return {"assertion": signer.assert_caller("PK-PB", {**caller, "query": digest}), "system": "bform", "value": BFORM}


CALLER = {"user_id": str(uuid.uuid4()), "username": "clinic.karachi", "role": "clinic_worker", "scope_level": "facility",
          "scope_code": "F-KRC-02", "province": "PK-SD", "district": "PK-SD-KRC", "purpose": "TREAT"}


def test_the_node_listener_refuses_clients_without_a_federation_certificate(federation, punjab_child):
    punjab, sindh, ca = federation["punjab"], federation["sindh"], federation["ca"] / "ca.pem"
    url = punjab.node_url + "/node/v1/patients/search"
    signer = NodeSigner.load(sindh.cert, sindh.key)
    body = _search_body(signer, CALLER)
    # no client certificate: the TLS handshake is refused
    with pytest.raises((httpx.TransportError, ssl.SSLError)):
        httpx.post(url, json=body, verify=_tls(cert=None, ca=ca), trust_env=False, timeout=10).raise_for_status()
    # a certificate for "PK-SD" from another CA: refused too
    rogue_ca = federation["base"] / "rogue-ca"
    create_ca(rogue_ca, name="not the federation")
    rogue = issue_node(rogue_ca, "PK-SD", federation["base"] / "rogue")
    with pytest.raises((httpx.TransportError, ssl.SSLError)):
        httpx.post(url, json=body, verify=_tls(cert=rogue, ca=ca), trust_env=False, timeout=10).raise_for_status()
    # the real Sindh certificate gets through, and the same body is answered
    sindh_tls = _tls(cert=(sindh.cert, sindh.key), ca=ca)
    ok = httpx.post(url, json=body, verify=sindh_tls, trust_env=False, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["matches"]) == 1
    # an admitted connection with an assertion signed by a key the federation did not admit: 401, audited
    forged = _search_body(NodeSigner.load(*rogue), CALLER)
    r = httpx.post(url, json=forged, verify=sindh_tls, trust_env=False, timeout=30)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    assert any(e["outcome"] == "unauthenticated" and e["resource_type"] == "Node" for e in punjab.cluster.events("patient.search"))
    # a node the CA admitted but that is not in Punjab's peers file (left the federation, or never joined): 401
    outsider = NodeSigner.load(*issue_node(federation["ca"], "PK-KP", federation["base"] / "kp"))
    r = httpx.post(url, json=_search_body(outsider, {**CALLER, "province": "PK-KP", "scope_code": "F-PEW-01"}),
                   verify=sindh_tls, trust_env=False, timeout=30)
    assert r.status_code == 401 and "Ayesha" not in r.text
    # Sindh speaking for someone scoped in Punjab (to claim Punjab's capture scope): 403, audited
    posing = _search_body(signer, {**CALLER, "scope_code": "F-LAH-02", "province": "PK-PB", "district": "PK-PB-LAH"})
    r = httpx.post(url, json=posing, verify=sindh_tls, trust_env=False, timeout=30)
    assert r.status_code == 403 and "Ayesha" not in r.text
    assert any(e["outcome"] == "denied" and e["detail"].get("remote_node") == "PK-SD"
               for e in punjab.cluster.events("patient.search"))
    # an assertion made for another search does not answer this one
    other = _search_body(signer, CALLER)
    other["value"] = "35202-7654321-3"
    assert httpx.post(url, json=other, verify=sindh_tls, trust_env=False, timeout=30).status_code == 403


def test_a_punjab_outage_leaves_sindh_working_and_the_national_report_marks_punjab_stale(federation, punjab_child):
    punjab, sindh = federation["punjab"], federation["sindh"]
    cohort = str((local_today() - timedelta(days=20)).year)  # the children's birth year
    with sindh.client("official.sindh") as provincial:  # national scope only
        assert provincial.get("/api/v1/reports/national", params={"cohort": cohort}).status_code == 404
    assert sindh.cluster.events("report.national")[-1]["outcome"] == "denied"
    with sindh.client("official.national") as official:
        before = official.get("/api/v1/reports/national", params={"cohort": cohort})
        assert before.status_code == 200, before.text
        status = {p["province"]: p for p in before.json()["provinces"]}
        assert status["PK-PB"]["status"] == "fresh" and status["PK-SD"]["status"] == "fresh"
        good_time = status["PK-PB"]["as_of"]

        punjab.cluster.stop()
        with sindh.client("clinic.karachi") as c:
            r = c.post("/api/v1/patients", json=_child(given_name="Zainab", bform="42101-1234567-3"))
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            dose = c.post(f"/api/v1/patients/{pid}/immunizations",
                          json={"vaccine": "BCG", "dose_number": 1, "date_given": local_today().isoformat()})
            assert dose.status_code == 201, dose.text
            assert c.get(f"/api/v1/patients/{pid}").status_code == 200
            found = c.post("/api/v1/patients/search", json={"system": "bform", "value": BFORM})
            assert found.status_code == 200 and found.json() == []
        assert sindh.cluster.events("patient.search")[-1]["detail"]["peers_unreachable"] == ["PK-PB"]

        after = official.get("/api/v1/reports/national", params={"cohort": cohort})
        assert after.status_code == 200, after.text
        status = {p["province"]: p for p in after.json()["provinces"]}
        assert status["PK-SD"]["status"] == "fresh"
        assert status["PK-PB"]["status"] == "stale" and status["PK-PB"]["as_of"] == good_time
        assert status["PK-PB"]["report"] == {p["province"]: p for p in before.json()["provinces"]}["PK-PB"]["report"]
    [event] = sindh.cluster.events("report.national")[-1:]
    assert event["detail"]["stale"] == ["PK-PB"]

    # the last good report is kept in Sindh's database: a restarted Sindh node still has it
    sindh.close()
    sindh.serve()
    sindh.wait_ready()
    with sindh.client("official.national") as official:
        again = official.get("/api/v1/reports/national", params={"cohort": cohort})
    status = {p["province"]: p for p in again.json()["provinces"]}
    assert status["PK-PB"]["status"] == "stale" and status["PK-PB"]["as_of"] == good_time
