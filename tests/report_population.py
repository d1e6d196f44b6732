"""Hand-built populations for the report tests: a tehsil of our own under Lahore with three
union councils and a facility in each, so that a report on it counts only what the test put
there. Rows are written as the demo generator writes them (real codec), never printed."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, date, datetime

from sqlalchemy import insert, update

from registry.facilities import repository as facilities
from registry.immunizations.models import Immunization
from registry.jurisdictions import repository as jurisdictions
from registry.patients import codec
from registry.patients.models import Patient
from registry.reports import queue

DISTRICT, PROVINCE = "PK-PB-LAH", "PK-PB"
LOADER = uuid.UUID("00000000-0000-5000-8000-00000000beef")


class Place:
    def __init__(self, rt):
        self.rt = rt
        tag = secrets.token_hex(3).upper()
        self.tehsil = f"{DISTRICT}-X{tag}"
        self.ucs = [f"{self.tehsil}-U{i}" for i in range(1, 4)]
        self.facilities = [f"F-R{tag}-{i}" for i in range(1, 4)]
        with rt.sessions.begin() as s:
            jurisdictions.load(s, [{"code": self.tehsil, "name": f"Tehsil {tag}", "level": "tehsil", "parent_code": DISTRICT}]
                               + [{"code": uc, "name": f"UC {i + 1} {tag}", "level": "union_council", "parent_code": self.tehsil}
                                  for i, uc in enumerate(self.ucs)])
            for fac, uc in zip(self.facilities, self.ucs):
                facilities.add(s, fac, f"BHU {fac}", "bhu", uc)

    def child(self, s, birth: date, uc: int = 0, doses=(), mark: bool = False) -> uuid.UUID:
        """A patient at union council `uc` with doses (vaccine, dose, date[, status])."""
        pid = uuid.uuid4()
        now = datetime.now(UTC)
        plain = {"given_name": "Synthetic", "health_id": f"T{secrets.token_hex(5)}"}
        s.execute(insert(Patient.__table__), [{
            "id": pid, "version": 1, "custodian": PROVINCE, "province": PROVINCE, "district": DISTRICT,
            "home_facility": self.facilities[uc], "sex": "female", "birth_date": birth, "guardian_relationship": None,
            "created_at": now, "updated_at": now, "created_by": LOADER,
            **codec.encrypt_fields(self.rt.cipher, PROVINCE, pid, {c: plain.get(c) for c in codec.ENCRYPTED})}])
        for d in doses:
            self.dose(s, pid, *d, uc=uc)
        if mark:
            queue.mark(s, pid)
        return pid

    def dose(self, s, pid, vaccine: str, number: int, given: date, status: str = "completed", uc: int = 0) -> uuid.UUID:
        did = uuid.uuid4()
        s.execute(insert(Immunization.__table__), [{
            "id": did, "version": 1, "patient_id": pid, "custodian": PROVINCE, "province": PROVINCE, "district": DISTRICT,
            "facility": self.facilities[uc], "vaccine": vaccine, "dose_number": number, "date_given": given, "lot_number": None,
            "performer_id": LOADER, "status": status, "status_reason_ct": None, "supersedes_id": None,
            "recorded_at": datetime.now(UTC)}])
        return did

    def void(self, s, did) -> None:
        s.execute(update(Immunization.__table__).where(Immunization.__table__.c.id == did).values(status="entered-in-error"))

    def move(self, s, pid, uc: int) -> None:
        s.execute(update(Patient.__table__).where(Patient.__table__.c.id == pid).values(home_facility=self.facilities[uc]))
