"""Every vaccine code a partner sends, mapped to what NHR counts (data/vocabulary.json).

The vocabulary is data, versioned like the schedule: each code (CVX, SNOMED CT, WHO ATC J07,
ICD-11 extension codes, Pakistan's EPI card names) lists the antigens it protects against.
What a code *counts for* is derived by one rule, not listed per code:

- a code counts for an EPI vaccine (one of registry/immunizations/vaccines.py, the vaccines the
  schedule's series are made of) when it protects against every antigen of that EPI vaccine;
- unless another EPI vaccine it counts for covers a strict superset of those antigens: a
  hexavalent dose (DTaP-IPV-Hib-HepB) counts for PENTA and IPV, not for the HepB birth dose;
  MMR counts for MR; DTaP alone (no HepB, no Hib) counts for nothing;
- a code that counts for no EPI vaccine is recorded under its `group` (INFLUENZA, HPV, COVID19,
  HEPA, ...): the schedule engine answers not_in_schedule and no EPI indicator counts it.

A code NHR does not know is not refused when the sender gives its text: it is recorded as
`UNKNOWN` with the system, code and text as sent (the data-quality report counts them).

`load()` validates the document (raises VocabularyError); `lookup()` is a dict access.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SCHEMA_VERSION = 1
PATH = Path(__file__).with_name("data") / "vocabulary.json"
EPI_NAME_SYSTEM = "https://nhr.gov.pk/fhir/CodeSystem/pk-epi-name"
UNKNOWN = "UNKNOWN"
SUBPOTENT = "SUBPOTENT"  # a dose given but not potent: recorded, shown, counted for nothing
_GROUP = re.compile(r"^[A-Z0-9]{2,12}$")
_DOSE_SUFFIX = re.compile(r"^(.*?)[- ]?(\d{1,2})$")


class VocabularyError(ValueError):
    """A vocabulary document that does not follow the format."""


@dataclass(frozen=True)
class Entry:
    system: str
    code: str
    display: str
    antigens: frozenset[str]
    counts_for: tuple[str, ...]   # EPI vaccines, in the order of the document's `epi`
    group: str | None             # for a code that counts for no EPI vaccine

    @property
    def vaccine(self) -> str:
        """The dose row's `vaccine`: its first EPI vaccine, or its group."""
        return self.counts_for[0] if self.counts_for else self.group  # type: ignore[return-value]


@dataclass(frozen=True)
class Vocabulary:
    code: str
    version: str
    epi: dict[str, frozenset[str]]
    entries: dict[tuple[str, str], Entry]
    groups: frozenset[str]

    def lookup(self, system: str | None, code: str | None) -> tuple[Entry, int | None] | None:
        """(entry, dose number written in the code or None) for a coding, or None if unknown.
        Pakistan's EPI names may carry the dose: `Penta-3`, `OPV 0`, `MR-1`."""
        if not system or not code:
            return None
        code = code.strip()
        found = self.entries.get((system, code))
        if found is not None:
            return found, None
        if system == EPI_NAME_SYSTEM:
            key = code.upper()
            if (system, key) in self.entries:
                return self.entries[(system, key)], None
            m = _DOSE_SUFFIX.match(key)
            if m and (system, m.group(1)) in self.entries:
                return self.entries[(system, m.group(1))], int(m.group(2))
        return None


def counts_for(epi: dict[str, frozenset[str]], antigens: frozenset[str]) -> tuple[str, ...]:
    """The rule above: every EPI vaccine covered, minus those subsumed by a wider covered one."""
    covered = [v for v, need in epi.items() if need <= antigens]
    return tuple(v for v in covered if not any(epi[v] < epi[w] for w in covered))


def parse(document: dict, vaccines) -> Vocabulary:
    """Validate a vocabulary document against the EPI vaccines NHR records (`vaccines`)."""
    try:
        if document.get("schema_version") != SCHEMA_VERSION:
            raise VocabularyError(f"unsupported schema_version {document.get('schema_version')!r}")
        epi = {str(v): frozenset(a) for v, a in document["epi"].items()}
        if set(epi) != set(vaccines):
            raise VocabularyError("`epi` must list exactly the vaccines NHR records")
        entries: dict[tuple[str, str], Entry] = {}
        groups = set()
        for e in document["codes"]:
            key = (str(e["system"]), str(e["code"]))
            if key in entries:
                raise VocabularyError(f"code {key} appears twice")
            antigens = frozenset(e["antigens"])
            if not antigens:
                raise VocabularyError(f"code {key}: no antigens")
            covered = counts_for(epi, antigens)
            group = e.get("group")
            if not covered and (not isinstance(group, str) or not _GROUP.match(group)):
                raise VocabularyError(f"code {key} counts for no EPI vaccine and has no group")
            if covered and group is not None:
                raise VocabularyError(f"code {key} counts for {covered[0]} and must not name a group")
            if group in epi or group in (UNKNOWN, SUBPOTENT):
                raise VocabularyError(f"code {key}: group {group!r} is reserved")
            if group:
                groups.add(group)
            entries[key] = Entry(key[0], key[1], str(e.get("display") or key[1]), antigens, covered, group)
        return Vocabulary(str(document["code"]), str(document["version"]), epi, entries, frozenset(groups))
    except (KeyError, TypeError, AttributeError) as exc:
        raise VocabularyError(f"malformed vocabulary: {type(exc).__name__} {exc}") from None


@lru_cache(maxsize=1)
def load() -> Vocabulary:
    from registry.immunizations.vaccines import VACCINES

    return parse(json.loads(PATH.read_text(encoding="utf-8")), VACCINES)
