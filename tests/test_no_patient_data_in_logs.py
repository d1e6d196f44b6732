"""Invariant 8: no patient data in logs, errors or metrics, even when something crashes."""

import logging

from fastapi import Depends

from api.app import create_app
from api.deps import require
from security.access.permissions import Permission


def _values(child: dict) -> list[str]:
    i = child["_input"]
    return [i["given_name"], i["family_name"], i["guardian"]["name"], i["bform"], i["bform"].replace("-", ""),
            i["guardian"]["cnic"], i["phone"], i["address"], child["health_id"]]


def test_logs_and_metrics_hold_no_patient_values(world, caplog):
    c = world.client
    caplog.set_level(logging.DEBUG)
    child = world.register("clinic_a")
    pid = child["id"]
    c.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_a"))
    c.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_c"))
    c.post("/api/v1/patients/search", json={"system": "bform", "value": child["bform"]}, headers=world.h("clinic_c"))
    c.post("/api/v1/patients", json={**child["_input"], "sex": "nonsense"}, headers=world.h("clinic_a"))
    c.post("/api/v1/patients", json=child["_input"], headers=world.h("clinic_b"))  # duplicate: 409
    metrics = c.get("/metrics").text
    text = "\n".join(r.getMessage() for r in caplog.records) + metrics
    assert "nhr_http_requests_total" in metrics
    assert "/api/v1/patients/{patient_id}" in metrics, "metrics are labelled by route template"
    for n, value in enumerate(_values(child)):
        assert value not in text, f"patient value #{n} appeared in a log line or metric"
    assert pid not in metrics, "a concrete patient id leaked into a metric label"


def test_an_unexpected_crash_logs_class_and_place_only(runtime, caplog):
    from fastapi.testclient import TestClient

    secret = "Gulalai-Yousafzai-35202-9999999-9"
    app = create_app(runtime.settings, runtime)

    @app.get("/boom")
    def boom(_: object = Depends(require(Permission.JURISDICTION_READ))):
        raise ValueError(secret)

    caplog.set_level(logging.DEBUG)
    with TestClient(app, raise_server_exceptions=True) as c:
        r = c.get("/boom", headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401  # the gate refuses before the crash
        from conftest import build_world

        w = build_world(c, runtime)
        r = c.get("/boom", headers=w.h("clinic_a"))
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert secret not in r.text and "Traceback" not in r.text
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert secret not in logged
    assert "unhandled ValueError" in logged


def test_framework_telemetry_is_off_even_when_the_environment_asks(monkeypatch, runtime):
    """FastAPI's native OpenTelemetry would record validation inputs; an operator's OTel
    environment must not switch it on for NHR."""
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    app = create_app(runtime.settings, runtime)
    native = getattr(app, "_native_telemetry", None)
    if native is None:
        return  # this FastAPI has no native telemetry at all
    assert not native.enabled()
    assert native.config["logs"] is False and native.config["auto_configure"] is False
