"""Small-cell suppression against a differencing attacker.

The attacker knows the jurisdiction tree and every cell released by every report of the
hierarchy (each jurisdiction's total, its sub-units, its own facilities shown beside them), and
solves the reports' additive equations exactly (fractions): a withheld cell is recovered iff its
unit vector lies in the row space of the equations plus the released cells. It must recover
nothing, on random trees (own facilities at any level, empty units, units without sub-units,
skewed counts) and on the real reports built from the database."""

from __future__ import annotations

import random
from datetime import date, timedelta
from fractions import Fraction

import pytest

from registry.reports import coverage
from registry.reports.suppression import OWN, VALUE, Hierarchy, edges, protect
from tests.report_population import Place

# --- the attacker -------------------------------------------------------------------------------


class Attacker:
    """Equations over named unknowns; `recovers(name)` is the exact row-space test."""

    def __init__(self) -> None:
        self.index: dict[object, int] = {}
        self.rows: list[dict[int, Fraction]] = []

    def var(self, name) -> int:
        return self.index.setdefault(name, len(self.index))

    def equation(self, coefficients: dict) -> None:
        row = {}
        for name, c in coefficients.items():
            k = self.var(name)
            row[k] = row.get(k, 0) + Fraction(c)
        row = {k: c for k, c in row.items() if c}
        if row:
            self.rows.append(row)

    def known(self, name) -> None:
        self.equation({name: 1})

    def _basis(self) -> list[tuple[int, dict[int, Fraction]]]:
        basis: list[tuple[int, dict[int, Fraction]]] = []  # (pivot, row with pivot 1), fully reduced
        for row in self.rows:
            row = self._reduce(dict(row), basis)
            if not row:
                continue
            pivot = min(row)
            scale = row[pivot]
            row = {k: c / scale for k, c in row.items()}
            basis = [(p, self._eliminate(r, pivot, row)) for p, r in basis]
            basis.append((pivot, row))
        return basis

    @staticmethod
    def _eliminate(r: dict, pivot: int, row: dict) -> dict:
        c = r.get(pivot)
        if not c:
            return r
        out = dict(r)
        for k, v in row.items():
            out[k] = out.get(k, 0) - c * v
            if not out[k]:
                del out[k]
        return out

    def _reduce(self, row: dict, basis) -> dict:
        for pivot, b in basis:
            row = self._eliminate(row, pivot, b)
        return row

    def recovered(self, names) -> list:
        basis = self._basis()
        return [n for n in names if not self._reduce({self.var(n): Fraction(1)}, basis)]


def test_the_attacker_finds_a_difference():
    a = Attacker()
    a.equation({"T": 1, "A": -1, "B": -1})  # T = A + B
    a.known("T")
    assert a.recovered(["A", "B"]) == []
    a.known("B")
    assert a.recovered(["A"]) == ["A"]


# --- random trees, every report of the hierarchy ------------------------------------------------


def _random_tree(rng: random.Random):
    parent, kids, leaf_children, leaf_count = {"R": None}, {}, {}, {}
    frontier = [("R", 0)]
    while frontier:
        code, depth = frontier.pop()
        n = rng.choice([0, 1, 2, 3, 3]) if depth < 3 else 0
        if depth == 0:
            n = max(n, 1)
        kids[code] = [f"{code}.{i}" for i in range(n)]
        for c in kids[code]:
            parent[c] = code
            frontier.append((c, depth + 1))
    for code in parent:  # children live at leaves and, sometimes, at a jurisdiction's own facilities
        if not kids[code] or rng.random() < 0.3:
            children = rng.choice([0, 0, 1, 2, 3, 4, 5, 6, 9, 20, rng.randrange(200)])
            leaf_children[code] = children
            leaf_count[code] = rng.randint(0, children)
    return parent, kids, leaf_children, leaf_count


def _rollup(parent, values):
    total = {}
    for code, v in values.items():
        c = code
        while c is not None:
            total[c] = total.get(c, 0) + v
            c = parent[c]
    return total


def _reports(parent, kids, value, own, own_shown, hidden):
    """Every jurisdiction's report as the attacker reads it: [(total cell, [(row cell, released value|None)])]."""
    out = []
    for code in parent:
        if kids[code]:
            cells = [(VALUE, c) for c in kids[code]] + ([(OWN, code)] if own_shown.get(code) else [])
        else:
            cells = [(VALUE, code)]
        out.append(((VALUE, code), cells))
    shown = {}
    for kind_code in [c for _, cells in out for c in cells] + [t for t, _ in out]:
        kind, code = kind_code
        v = value.get(code, 0) if kind == VALUE else own.get(code, 0)
        shown[kind_code] = None if kind_code in hidden else v
    return out, shown


def _attack(reports, shown) -> list:
    a = Attacker()
    for total, cells in reports:
        if cells != [total]:
            a.equation({total: 1, **{c: -1 for c in cells}})
    for cell, v in shown.items():
        if v is not None:
            a.known(cell)
    return a.recovered(sorted(c for c, v in shown.items() if v is None))


@pytest.mark.parametrize("seed", range(40))
def test_no_withheld_cell_is_recovered_from_the_whole_hierarchy(seed):
    rng = random.Random(seed)
    threshold = rng.choice([3, 5, 5, 10])
    parent, kids, leaf_children, leaf_count = _random_tree(rng)
    h = Hierarchy(parent, kids)
    children, count = _rollup(parent, leaf_children), _rollup(parent, leaf_count)
    own_children = {c: leaf_children.get(c, 0) for c in parent if kids[c]}
    own_count = {c: leaf_count.get(c, 0) for c in parent if kids[c]}
    nonempty = {c for c, v in children.items() if v}
    own_nonempty = {c for c, v in own_children.items() if v}
    for column_value, column_own in ((children, own_children), (count, own_count)):
        hidden = protect(edges(h, column_value, column_own, nonempty, own_nonempty), threshold)
        # every small cell of a non-empty unit is withheld; empty units are published as 0
        for code in parent:
            if code in nonempty and column_value.get(code, 0) < threshold:
                assert (VALUE, code) in hidden
            if code not in nonempty:
                assert (VALUE, code) not in hidden
        reports, shown = _reports(parent, kids, column_value, column_own, {c: c in own_nonempty for c in parent}, hidden)
        assert _attack(reports, shown) == [], f"seed {seed}: recovered"


def test_the_old_per_table_rule_is_beaten_by_the_hierarchy():
    """Why the whole tree matters: a district D with tehsils A (3) and B (9) and its own
    facilities (8). The province's report releases D (20); D's report releases its own
    facilities (8). With A alone withheld, A = 20 - 8 - B; `protect` withholds enough more."""
    parent = {"P": None, "D": "P", "D2": "P", "A": "D", "B": "D"}
    kids = {"P": ["D", "D2"], "D": ["A", "B"], "D2": [], "A": [], "B": []}
    leaf = {"A": 3, "B": 9, "D": 8, "D2": 30}
    value = _rollup(parent, leaf)
    own = {"P": 0, "D": 8}
    reports, shown = _reports(parent, kids, value, own, {"D": True}, {(VALUE, "A"), (VALUE, "B")})
    assert _attack(reports, shown) == []  # A and B both withheld: safe
    reports, shown = _reports(parent, kids, value, own, {"D": True}, {(VALUE, "A")})
    assert _attack(reports, shown) == [(VALUE, "A")]  # a lone withheld cell is found
    h = Hierarchy(parent, kids)
    hidden = protect(edges(h, value, own, {c for c in value if value[c]}, {"D"}), 5)
    reports, shown = _reports(parent, kids, value, own, {"D": True}, hidden)
    assert (VALUE, "A") in hidden and _attack(reports, shown) == []


# --- the real reports ---------------------------------------------------------------------------

AS_OF = date(2026, 11, 22)


def test_real_reports_of_the_hierarchy_reveal_no_withheld_cell(runtime):
    """Reports built from the database (country, province, district, a tehsil and its union
    councils), with a union council that has no children and a small one beside large ones."""
    from registry.reports import aggregate

    place = Place(runtime)
    with runtime.sessions.begin() as s:
        for uc, n, vaccinated in ((0, 3, 1), (1, 12, 9), (2, 0, 0)):
            for k in range(n):
                birth = date(2022, 3, 1) + timedelta(days=k)
                place.child(s, birth, uc=uc, mark=True, doses=[("PENTA", 1, birth + timedelta(days=45))] if k < vaccinated else [])
        while aggregate.refresh(s, AS_OF, 5000):
            pass
    codes = ["PK", "PK-PB", "PK-PB-LAH", place.tehsil, *place.ucs]
    with runtime.sessions() as s:
        tree = coverage.Tree.load(s)
        reports = [coverage.build(s, tree.nodes[c], tree, coverage.parse_cohort("2022"), AS_OF, "registered", 5) for c in codes]
    uc2 = next(r for r in reports[3]["rows"] if r["code"] == place.ucs[2])
    assert uc2["empty"] and uc2["children"] == 0  # empty, not a suppressed zero
    small = next(r for r in reports[3]["rows"] if r["code"] == place.ucs[0])
    assert small["children"] is None
    for column in (("children",), ("items", "PENTA-1", "any"), ("items", "PENTA-1", "valid"), ("zero_dose", "count")):
        a, names, released = Attacker(), set(), set()
        for rep in reports:
            node = tree.nodes[rep["jurisdiction"]["code"]]
            has_kids = bool(tree.kids.get(node.code))
            total = (VALUE, node.code)
            cells = []
            for row in rep["rows"]:
                cell = (OWN, row["code"]) if row["code"] == node.code and has_kids else (VALUE, row["code"])
                cells.append((cell, _pick(row, column)))
            cells.append((total, _pick(rep["total"], column)))
            if [c for c, _ in cells[:-1]] != [total]:
                a.equation({total: 1, **{c: -1 for c, _ in cells[:-1]}})
            for cell, v in cells:
                if v is None:
                    names.add(cell)
                else:
                    a.known(cell)
                    released.add(cell)
        assert not names & released, "a cell withheld in one report is released in another"
        assert names, column  # something was withheld: the test has teeth
        assert a.recovered(sorted(names)) == [], column


def _pick(row, path):
    for key in path:
        row = row[key]
    return row


def test_a_group_that_cannot_be_protected_withholds_the_whole_column():
    """Fail closed: a small cell whose ends have no other cell to withhold (a malformed tree: two
    vertices joined only to each other) makes `protect` withhold every cell of the column."""
    from registry.reports.suppression import GROUND, Edge

    cells = [Edge((VALUE, "Y"), "X", "Y", 2), Edge((VALUE, "Z"), GROUND, "Z", 100), Edge((OWN, "Z"), "Z", GROUND, 60)]
    assert protect(cells, 5) == {(VALUE, "Y"), (VALUE, "Z"), (OWN, "Z")}
