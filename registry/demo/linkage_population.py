"""A synthetic population with known duplicates, for the matching bench and its quality test.

Children are drawn as the demo generator draws them (its Pakistani names, facilities, guardian
CNICs and phones); a share of them is registered a second time with the corruption seen in
Pakistani registers: romanisation variants (the variant groups), Urdu script, one- and
two-letter typos, day and month swapped, a day or a digit off, missing B-form or guardian CNIC,
the guardian's name written as the family name, a newborn registered as "Baby of <mother>",
another district, a new phone number. Every value is random; no real person is represented.

`entity` is the truth: two records are the same child if and only if their entities are equal.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from datetime import date, timedelta
from importlib import resources

from registry.demo.generator import _nadra, load_names
from registry.facilities.repository import read_csv

_URDU = {"muhammad": "محمد", "ali": "علی", "ahmad": "احمد", "hassan": "حسن", "fatima": "فاطمہ", "ayesha": "عائشہ",
         "zainab": "زینب", "usman": "عثمان", "khan": "خان", "bilal": "بلال", "umar": "عمر", "maryam": "مریم",
         "sana": "ثنا", "hamza": "حمزہ", "malik": "ملک", "shah": "شاہ", "qureshi": "قریشی", "butt": "بٹ"}


def _variants() -> dict[str, list[str]]:
    data = json.loads(resources.files("registry.linkage").joinpath("data/name_variants.json").read_text(encoding="utf-8"))
    out = {}
    for group in data["groups"]:
        for s in group:
            out[s] = [v for v in group if v != s and len(v) > 2]
    return out


def _typo(rng: random.Random, s: str, n: int = 1) -> str:
    for _ in range(n):
        if len(s) < 3:
            return s
        i = rng.randrange(1, len(s))
        op = rng.choice("sdit")
        c = rng.choice(string.ascii_lowercase)
        if op == "s":
            s = s[:i] + c + s[i + 1:]
        elif op == "d":
            s = s[:i] + s[i + 1:]
        elif op == "i":
            s = s[:i] + c + s[i:]
        elif i < len(s) - 1:
            s = s[:i] + s[i + 1] + s[i] + s[i + 2:]
    return s


def _variant(rng: random.Random, name: str, variants: dict) -> str:
    words = name.split()
    out = []
    for w in words:
        alts = variants.get(w.lower())
        out.append(rng.choice(alts).capitalize() if alts else w)
    return " ".join(out)


def generate(n: int, *, duplicate_share: float = 0.15, seed: int = 2026, today: date | None = None,
             province: str | None = None) -> list[dict]:
    """`n` originals plus about `duplicate_share * n` corrupted second registrations, shuffled."""
    rng = random.Random(seed)
    names, variants = load_names(), _variants()
    facs = [f for f in read_csv() if province is None or f["jurisdiction_code"].startswith(province)]
    today = today or date(2026, 12, 1)
    records = []
    for k in range(n):
        f = rng.choice(facs)
        sex = rng.choice(["female", "male"])
        family = rng.choice(names["family"])
        rec = {
            "entity": k, "given_name": rng.choice(names["female_given" if sex == "female" else "male_given"]),
            "family_name": family if rng.random() < 0.9 else None, "sex": sex,
            "birth_date": today - timedelta(days=rng.randrange(0, 5 * 365)),
            "guardian_name": rng.choice(names["female_given"]) + " " + family,
            "guardian_cnic": _nadra(rng) if rng.random() < 0.7 else None,
            "bform": _nadra(rng) if rng.random() < 0.3 else None,
            "phone": f"+923{rng.randrange(0, 50):02d}{rng.randrange(10**7):07d}" if rng.random() < 0.8 else None,
            **_place(f),
        }
        records.append(rec)
        if rng.random() < duplicate_share:
            records.append(_corrupt(rng, dict(rec), variants, facs))
    rng.shuffle(records)
    for r in records:
        r["unique_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return records


def _place(f: dict) -> dict:
    parts = f["jurisdiction_code"].split("-")
    return {"facility": f["code"], "district": "-".join(parts[:3]), "province": "-".join(parts[:2])}


def _corrupt(rng: random.Random, r: dict, variants: dict, facs: list[dict]) -> dict:
    r["bform"] = None if rng.random() < 0.7 else r["bform"]  # most first registrations have no B-form
    kinds = rng.sample(["variant", "typo", "typo2", "swap", "day", "guardian_family", "district", "phone", "urdu",
                        "unnamed", "no_cnic", "guardian_variant"], k=rng.choice([1, 2, 2, 3]))
    for kind in kinds:
        if kind == "variant":
            r["given_name"] = _variant(rng, r["given_name"], variants)
            if r["family_name"]:
                r["family_name"] = _variant(rng, r["family_name"], variants)
        elif kind == "typo":
            r["given_name"] = _typo(rng, r["given_name"]).capitalize()
        elif kind == "typo2":
            fld = rng.choice(["given_name", "family_name", "guardian_name"])
            if r[fld]:
                r[fld] = _typo(rng, r[fld], 2).title()
        elif kind == "swap" and r["birth_date"].day <= 12 and r["birth_date"].day != r["birth_date"].month:
            d = r["birth_date"]
            r["birth_date"] = date(d.year, d.day, d.month)
        elif kind == "day":
            r["birth_date"] = r["birth_date"] + timedelta(days=rng.choice([-3, -2, -1, 1, 2, 3]))
        elif kind == "guardian_family":
            r["family_name"] = r["guardian_name"]
        elif kind == "district":
            r.update(_place(rng.choice(facs)))
        elif kind == "phone":
            r["phone"] = f"+923{rng.randrange(0, 50):02d}{rng.randrange(10**7):07d}"
        elif kind == "urdu":
            words = r["given_name"].lower().split()
            if all(w in _URDU for w in words):
                r["given_name"] = " ".join(_URDU[w] for w in words)
        elif kind == "unnamed":
            r["given_name"] = "Baby of " + (r["guardian_name"] or "").split(" ")[0]
        elif kind == "no_cnic":
            r["guardian_cnic"] = None
        elif kind == "guardian_variant":
            r["guardian_name"] = _variant(rng, r["guardian_name"], variants)
    return r


def truth_pairs(records: list[dict]) -> set[tuple[str, str]]:
    by_entity: dict[int, list[str]] = {}
    for r in records:
        by_entity.setdefault(r["entity"], []).append(r["unique_id"])
    out = set()
    for ids in by_entity.values():
        ids = sorted(ids)
        out |= {(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]}
    return out
