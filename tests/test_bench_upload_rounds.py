"""The upload workloads (bench/uploads.py) dose fresh children each round: every call takes the
next upload clinic's children, and within a call no child gets a second dose before every child
of the clinic had one (no server needed)."""

from __future__ import annotations

import json
import random

from bench.population import Population
from bench.uploads import _Draw, batch_body, round_clinic


def _pop(clinics: int, per_clinic: int) -> Population:
    pop = Population("postgresql://unused", "/nonexistent", "u", "p",
                     read_ids=[f"00000000-0000-4000-8000-{i:012d}" for i in range(60)])
    for c in range(clinics):
        code = f"F-TEST-{c}"
        pop.upload_clinics.append((f"user{c}", "pw", code))
        pop.upload_ids[code] = [f"00000000-0000-4000-9{c:03d}-{i:012d}" for i in range(per_clinic)]
    pop.upload_tokens["http://x"] = {code: f"token-{code}" for _, _, code in pop.upload_clinics}
    return pop


def test_each_round_doses_another_clinics_children():
    pop = _pop(3, 100)
    seen: list[set[str]] = []
    for _ in range(3):
        children, token = round_clinic(pop, "http://x", "clinic-token")
        assert token != "clinic-token" and children is not None
        body, n = batch_body(pop, random.Random(1), children=_Draw(children, 1).take(50))
        seen.append({it["patient_id"] for it in json.loads(body)["items"]})
        assert n == 50
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    assert not (seen[0] & set(pop.read_ids))
    children, _ = round_clinic(pop, "http://x", "clinic-token")  # then the clinics again, in turn
    assert set(children) >= seen[0]


def test_without_upload_clinics_the_benchmark_facility_and_its_token():
    pop = _pop(0, 0)
    assert round_clinic(pop, "http://x", "clinic-token") == (None, "clinic-token")


def test_a_round_doses_every_child_once_before_any_twice():
    children = [str(i) for i in range(120)]
    draw = _Draw(children, 7)
    first = [pid for _ in range(6) for pid in draw.take(20)]
    assert sorted(first) == sorted(children)
    again = draw.take(50)
    assert len(set(again)) == 50
