"""Safe text for names and free text in every input schema (issue 18).

`Line` (names, addresses, display names: one line) and `Text` (reasons, notes: may hold newline,
carriage return and tab) refuse what no person types and what deceives a reader or a parser:

- C0 control characters (U+0000-U+001F, NUL included; `Text` allows TAB, LF, CR), DEL (U+007F)
  and the C1 controls (U+0080-U+009F);
- lone surrogates (U+D800-U+DFFF), which are not characters and cannot be encoded in UTF-8;
- bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), which make
  a name read differently from how it is stored ("Trojan Source"). The implicit marks LRM and RLM
  (U+200E, U+200F) are allowed: mixed Urdu and English text needs them and they reorder nothing.

The refusal is a 422 that names the field and the kind of character, never the value. The JSON
schema carries the same rule as a `pattern`, so clients and schema-driven fuzzers know it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

_CONTROL = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"
_BIDI = "\\u202a-\\u202e\\u2066-\\u2069"
_SURROGATE = "\\ud800-\\udfff"
MESSAGE = ("must not contain control characters, unpaired surrogates or bidirectional override or isolate characters "
           "(U+202A-U+202E, U+2066-U+2069)")


class _Refuse:
    """Pydantic metadata: refuse the characters above (`newlines`: TAB, LF and CR are allowed)."""

    def __init__(self, newlines: bool) -> None:
        control = _CONTROL if newlines else "\\x00-\\x1f\\x7f-\\x9f"
        self.bad = re.compile(f"[{control}{_BIDI}{_SURROGATE}]")
        # The schema's pattern (ECMA-262, no surrogates: JSON text cannot carry a lone one as a character).
        self.pattern = f"^[^{control}{_BIDI}]*$"

    def check(self, value: str) -> str:
        if self.bad.search(value):
            raise ValueError(MESSAGE)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        out = handler(schema)
        out.setdefault("pattern", self.pattern)
        return out


Line = Annotated[str, _Refuse(newlines=False)]
Text = Annotated[str, _Refuse(newlines=True)]


def is_safe(value: str, *, newlines: bool = True) -> bool:
    """For text that does not pass through a schema (CSV cells, FHIR strings mapped by hand)."""
    return (_TEXT if newlines else _LINE).bad.search(value) is None


_TEXT, _LINE = _Refuse(True), _Refuse(False)
