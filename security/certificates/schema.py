"""The EU DCC JSON schema check of a decoded HC1 payload, as the EU's reference verifiers do.

- The schema is the EU's own (`dcc_schema/DCC.combined-schema.json`, version 1.3.3, vendored
  unchanged with its licence and source, see `dcc_schema/SOURCE.md`), checked with the
  `jsonschema` library (Draft 2020-12). One schema serves every payload version 1.x: it accepts
  the older payloads (1.0.x, 1.2.x) the EU test vectors carry.
- `format: date` is asserted (the complete dates of vaccination and recovery entries);
  `format: date-time` is not, because the schema repository's own valid test cases write
  ISO 8601 offsets (`+02`, `+0200`) that RFC 3339 refuses. Value sets are annotations in the
  schema and are not checked (they list COVID-19 codes only).
- The payload is CBOR: maps become JSON objects (a non-text key becomes a placeholder, never its
  value); byte strings, tags, dates and other CBOR-only values stay as they are and fail the
  schema's `type`.
- `problems()` returns JSON pointers and keywords only (`/dob: pattern`): never a value, since
  the payload holds a name and a birth date. It never raises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from importlib.resources import files

from jsonschema import Draft202012Validator, FormatChecker

SCHEMA_FILE = "DCC.combined-schema.json"


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(files(__package__).joinpath("dcc_schema", SCHEMA_FILE).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def validator() -> Draft202012Validator:
    doc = schema()
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc, format_checker=FormatChecker(formats=("date",)))


def version() -> str:
    """The schema's version, from its `$comment` ("Schema version 1.3.3")."""
    return schema().get("$comment", "").rsplit(" ", 1)[-1]


def as_json(value):
    """CBOR-decoded values -> the JSON data model, so that the schema judges them as a JSON verifier would."""
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else f"<{type(k).__name__} key>": as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    return value


def problems(dcc) -> list[str]:
    """Where the payload breaks the schema: `<JSON pointer>: <keyword>`, at most ten, no values."""
    try:
        found = []
        for error in validator().iter_errors(as_json(dcc)):
            pointer = "/" + "/".join(str(p) for p in error.absolute_path)
            found.append(f"{pointer}: {error.validator}")
            if len(found) == 10:
                break
        return sorted(found)
    except Exception as exc:  # a value the validator cannot even compare: a failure, never a crash
        return [f"/: cannot be checked ({type(exc).__name__})"]
