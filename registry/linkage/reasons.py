"""Plain-language reasons for a candidate pair, from its comparison levels (integers only): the
matching engine's `registry.linkage.explain.explain`, under the name the steward's queue uses.
Nothing here sees a compared value, only the level."""

from registry.linkage.explain import explain  # noqa: F401
