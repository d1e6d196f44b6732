"""Small-cell suppression that withstands differencing across the jurisdiction hierarchy
(pure functions, no database).

The cells. For one column (an antigen-dose and measure, the children, the zero-dose counts) and
one birth cohort, every report publishes, for its jurisdiction N, N's total and one row per
sub-unit of N, plus a row for N's own facilities (children whose home facility is registered at
N's level) when there are any. So across all reports the published cells are: `value(n)` of
every jurisdiction n, and `own(n)` of every n that has sub-units; a jurisdiction without
sub-units has one cell, its value (its single row is its total). They obey one equation per
jurisdiction with sub-units: value(n) = own(n) + sum of value(sub-units).

The attacker. Knowing the tree and every released cell of every report, the attacker solves
these equations. A withheld cell is recovered iff its unit vector lies in the row space of the
equations plus the released cells. Seen as a graph, each equation is a vertex, each cell an
edge (value(n) joins n's vertex to its parent's; own(n), the value of a jurisdiction without
sub-units and the root's total join a vertex to a common `ground` vertex), and the system is
that graph's incidence matrix: released cells are deleted edges, and a withheld cell is
recovered iff it is a bridge among the withheld edges. Jurisdiction-to-jurisdiction edges form
a tree, so every cycle passes through ground, and no withheld edge is a bridge iff, in each
connected group K of withheld jurisdiction-to-jurisdiction edges, every end of K (a vertex
with at most one of them) has a withheld ground edge and K has at least two.

The method (`protect`):
- Primary: every cell of a non-empty unit counting fewer than `threshold` children is withheld
  (zero included). A unit with no children in the cohort is *empty*: its cells are published as
  0 (there is no child to single out), and, being known, they never serve as complements.
- Complementary: until the condition above holds, each end of a group without a withheld ground
  edge withholds its smallest released ground edge (its own facilities, or a sub-unit without
  sub-units) or, lacking one, the smallest released edge to a sub-unit (or its parent), which
  becomes the new end; a group with one ground edge withholds the smallest released ground edge
  of its vertices. Ties break by code, so every report computes the same pattern.
- The pattern is computed over the whole tree for the cohort, the same whatever report is asked
  for, so that no combination of reports releases more than the whole set does.

Known limits (docs/reports.md): equations only (an attacker who also uses bounds such as
"a count is at most the children" is not modelled); the year and its months, and different
columns, are protected separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GROUND = "\x00ground"
VALUE, OWN = "value", "own"


@dataclass(frozen=True)
class Hierarchy:
    """The jurisdiction tree: parent of each code (None for a root) and sub-units."""

    parent: dict[str, str | None]
    kids: dict[str, list[str]] = field(default_factory=dict)

    def has_kids(self, code: str) -> bool:
        return bool(self.kids.get(code))


@dataclass(frozen=True)
class Edge:
    cell: tuple[str, str]  # (VALUE, code) or (OWN, code)
    a: str  # vertex (a jurisdiction code) or GROUND
    b: str
    value: int


def structure(h: Hierarchy, nonempty: set[str], own_nonempty: set[str]) -> list[tuple[tuple[str, str], str, str]]:
    """The candidate cells (cell, vertex, vertex) of every column: every cell of a non-empty unit
    (empty ones are published as 0, known)."""
    out = []
    for code, parent in h.parent.items():
        if code not in nonempty:
            continue
        kids = h.has_kids(code)
        out.append(((VALUE, code), parent if parent is not None else GROUND, code if kids else GROUND))
        if kids and code in own_nonempty:
            out.append(((OWN, code), code, GROUND))
    return out


def edges(h: Hierarchy, value: dict[str, int], own: dict[str, int], nonempty: set[str], own_nonempty: set[str],
          shape: list | None = None) -> list[Edge]:
    """One column's candidate cells with their counts (`shape`: `structure(...)`, if computed)."""
    return [Edge(cell, a, b, (value if cell[0] == VALUE else own).get(cell[1], 0))
            for cell, a, b in (shape if shape is not None else structure(h, nonempty, own_nonempty))]


def protect(all_edges: list[Edge], threshold: int) -> set[tuple[str, str]]:
    """The withheld cells: primary ones, then complements until none can be recovered."""
    hidden = {e.cell for e in all_edges if e.value < threshold}
    if not hidden:
        return hidden
    by_vertex: dict[str, list[Edge]] = {}
    for e in all_edges:
        by_vertex.setdefault(e.a, []).append(e)
        by_vertex.setdefault(e.b, []).append(e)
    for v in by_vertex.values():
        v.sort(key=lambda e: (e.value, e.cell))
    while True:
        added, unmet = _complement(by_vertex, hidden)
        if not added:
            # fail closed: a group that could not be protected (no cell left to withhold)
            return {e.cell for e in all_edges} if unmet else hidden
        hidden |= added


def _complement(by_vertex: dict[str, list[Edge]], hidden: set) -> tuple[set, bool]:
    """One round: the cells to withhold so that each group's ends reach ground twice over, and
    whether some group still needed one (True only when no candidate was left)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    degree: dict[str, int] = {}
    grounds: dict[str, int] = {}
    for vertex, incident in by_vertex.items():
        if vertex == GROUND:
            continue
        for e in incident:
            if e.cell not in hidden:
                continue
            find(vertex)
            if GROUND in (e.a, e.b):
                grounds[vertex] = grounds.get(vertex, 0) + 1
            elif e.a == vertex:  # count each tree edge once, from its parent end
                degree[e.a] = degree.get(e.a, 0) + 1
                degree[e.b] = degree.get(e.b, 0) + 1
                parent[find(e.a)] = find(e.b)
    groups: dict[str, list[str]] = {}
    for vertex in sorted(parent):
        groups.setdefault(find(vertex), []).append(vertex)
    added: set = set()
    unmet = False
    for members in groups.values():
        for end in (v for v in members if degree.get(v, 0) <= 1):
            if not grounds.get(end):
                unmet = True
                added |= _one_more(by_vertex[end], hidden, ground_only=False)
        if sum(grounds.get(v, 0) for v in members) + sum(1 for c in added if _touches(by_vertex, members, c)) < 2:
            unmet = True
            pick = [e for v in members for e in by_vertex[v] if GROUND in (e.a, e.b) and e.cell not in hidden and e.cell not in added]
            if pick:
                added.add(min(pick, key=lambda e: (e.value, e.cell)).cell)
            else:
                added |= _one_more([e for v in members for e in by_vertex[v]], hidden | added, ground_only=False)
    return added, unmet


def _touches(by_vertex: dict[str, list[Edge]], members: list[str], cell) -> bool:
    return any(e.cell == cell and GROUND in (e.a, e.b) for v in members for e in by_vertex[v])


def _one_more(incident: list[Edge], hidden: set, *, ground_only: bool) -> set:
    """The smallest released ground edge among `incident`, else (unless `ground_only`) the
    smallest released edge of any kind (sorted by value, then cell)."""
    released = [e for e in incident if e.cell not in hidden]
    grounded = [e for e in released if GROUND in (e.a, e.b)]
    if grounded:
        return {min(grounded, key=lambda e: (e.value, e.cell)).cell}
    if released and not ground_only:
        return {min(released, key=lambda e: (e.value, e.cell)).cell}
    return set()


# -- one table on its own -----------------------------------------------------------------------

_TABLE_TOTAL = "\x01total"


@dataclass
class Column:
    """One additive group of a single table: values per unit (row) and their total;
    `suppressed_units` and `total_suppressed` are filled in by `suppress_column`."""

    units: dict[str, int]
    total: int
    suppressed_units: set[str] | None = None
    total_suppressed: bool = False


def suppress_column(col: Column, threshold: int) -> Column:
    """Suppress one table's column with the same rule as the hierarchy (`protect`), the table
    being a one-level tree: its total and its rows. Used by the reports computed live per
    request (refusals, data quality), which publish one table at a time; their protection holds
    within the table (docs/reports.md says so), not across every report of the tree."""
    units = list(col.units)
    h = Hierarchy(parent={_TABLE_TOTAL: None, **{u: _TABLE_TOTAL for u in units}}, kids={_TABLE_TOTAL: units})
    value = {_TABLE_TOTAL: col.total, **col.units}
    hidden = protect(edges(h, value, {}, set(value), set()), threshold)
    col.suppressed_units = {code for kind, code in hidden if code != _TABLE_TOTAL}
    col.total_suppressed = (VALUE, _TABLE_TOTAL) in hidden
    return col
