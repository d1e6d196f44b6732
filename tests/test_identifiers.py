"""Health ID check digit (Verhoeff) and NADRA number formats."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry import identifiers as ids


def test_known_verhoeff_vectors():
    # Published examples: 236 -> check digit 3; 12345 -> 1; 142857 -> 0
    assert ids.verhoeff_check_digit("236") == "3"
    assert ids.verhoeff_check_digit("12345") == "1"
    assert ids.verhoeff_check_digit("142857") == "0"
    assert ids.verhoeff_valid("2363") and not ids.verhoeff_valid("2364")


def test_new_health_ids_are_valid_and_formatted():
    for _ in range(200):
        hid = ids.new_health_id()
        assert len(hid) == 14 and hid[4] == "-" and hid[9] == "-"
        assert ids.normalise(ids.HEALTH_ID_SYSTEM, hid) == hid.replace("-", "")


@given(st.text(alphabet="0123456789", min_size=11, max_size=11))
def test_every_single_digit_error_is_caught(body):
    full = body + ids.verhoeff_check_digit(body)
    for i, wrong in itertools.product(range(12), "0123456789"):
        if wrong != full[i]:
            assert not ids.verhoeff_valid(full[:i] + wrong + full[i + 1:])


@given(st.text(alphabet="0123456789", min_size=11, max_size=11))
def test_every_adjacent_transposition_is_caught(body):
    full = body + ids.verhoeff_check_digit(body)
    for i in range(11):
        if full[i] != full[i + 1]:
            swapped = full[:i] + full[i + 1] + full[i] + full[i + 2:]
            assert not ids.verhoeff_valid(swapped)


def test_mistyped_health_id_is_refused_with_a_reason():
    hid = ids.new_health_id()
    digits = hid.replace("-", "")
    wrong = digits[:-1] + str((int(digits[-1]) + 1) % 10)
    with pytest.raises(ValueError, match="check digit"):
        ids.normalise(ids.HEALTH_ID_SYSTEM, wrong)


@pytest.mark.parametrize("value,ok", [
    ("35202-1234567-1", True), ("3520212345671", True), ("35202-1234567", False), ("3520-21234567-1", False),
    ("35202-123456A-1", False), ("", False), ("352021234567-11", False),
])
def test_nadra_format(value, ok):
    if ok:
        assert ids.normalise(ids.BFORM_SYSTEM, value) == "3520212345671"
    else:
        with pytest.raises(ValueError):
            ids.normalise(ids.BFORM_SYSTEM, value)
