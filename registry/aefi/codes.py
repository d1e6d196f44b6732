"""The versioned coded lists an AEFI report uses (data/aefi-codes-<version>.json).

Invariant: a report stores the codes and the list version it was coded with (`coding`), so a
later list that renames or retires a code never changes what an old report meant.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

VERSION = "2026.1"


@cache
def current() -> dict:
    text = resources.files("registry.aefi").joinpath(f"data/aefi-codes-{VERSION}.json").read_text(encoding="utf-8")
    return json.loads(text)


def coding() -> str:
    doc = current()
    return f"{doc['code']}@{doc['version']}"


def symptoms() -> dict[str, str]:
    return current()["symptoms"]


def seriousness() -> dict[str, str]:
    return current()["seriousness"]


def outcomes() -> dict[str, str]:
    return current()["outcomes"]
