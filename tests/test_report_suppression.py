"""Small-cell suppression, including complementary suppression, against adversarial tables:
no suppressed cell may be recoverable from the released cells and the totals."""

from __future__ import annotations

import random

import pytest

from registry.reports.suppression import Column, recoverable, suppress_column


def _run(units, threshold=5):
    col = suppress_column(Column(dict(units), sum(units.values())), threshold)
    return col.suppressed_units, col.total_suppressed


def test_one_small_cell_takes_the_next_smallest_with_it():
    hidden, total_hidden = _run({"A": 3, "B": 50, "C": 100, "D": 49})
    assert hidden == {"A", "D"} and not total_hidden  # A - 153 + ... : two unknowns in one sum


def test_a_lone_small_unit_hides_the_total():
    assert _run({"A": 3}) == ({"A"}, True)


def test_a_lone_large_unit_is_released():
    assert _run({"A": 30}) == (set(), False)


def test_all_but_one_released_unit_small():
    hidden, total_hidden = _run({"A": 1, "B": 2, "C": 400})
    assert hidden == {"A", "B"} and not total_hidden


def test_small_total_hides_every_part():
    assert _run({"A": 1, "B": 0, "C": 2}) == ({"A", "B", "C"}, True)


def test_zero_is_a_small_cell():
    hidden, _ = _run({"A": 0, "B": 10, "C": 20})
    assert hidden == {"A", "B"}


def test_two_small_cells_need_no_complement():
    hidden, total_hidden = _run({"A": 1, "B": 4, "C": 20, "D": 30})
    assert hidden == {"A", "B"} and not total_hidden


def test_threshold_is_a_setting():
    assert _run({"A": 7, "B": 30}, threshold=10) == ({"A", "B"}, False)
    assert _run({"A": 7, "B": 30}, threshold=5) == (set(), False)


def test_the_checker_catches_a_single_suppression():
    assert recoverable({"A": 3, "B": 9}, 12, {"A"}, False)
    assert not recoverable({"A": 3, "B": 9}, 12, {"A", "B"}, False)


@pytest.mark.parametrize("seed", range(20))
def test_random_adversarial_tables(seed):
    """Skewed tables (many tiny cells, one huge, zeros, single units): every primary cell is
    hidden, and no additive group is left with exactly one unknown."""
    rng = random.Random(seed)
    for _ in range(200):
        n = rng.choice([1, 1, 2, 3, 5, 12])
        units = {f"U{i}": rng.choice([0, 1, 2, 4, 5, 6, rng.randrange(1000)]) for i in range(n)}
        threshold = rng.choice([1, 3, 5, 10])
        total = sum(units.values())
        hidden, total_hidden = _run(units, threshold)
        assert all(u in hidden for u, v in units.items() if v < threshold)
        assert total_hidden or total >= threshold
        assert not recoverable(units, total, hidden, total_hidden)
        if not hidden and not total_hidden:
            assert all(v >= threshold for v in units.values())
