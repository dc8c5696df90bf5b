"""The importer's E.164 fast path decides validity with normalize._is_valid_number: the same answer as
phonenumbers.is_valid_number for every number it is asked about (a country code and a national number without a
leading zero), the number types of every region and the region choice of shared codes (+1, +7, +44…) included."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clarion.audience.normalize import _is_valid_number

COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def reference(country_code: int, national: str) -> bool:
    return bool(phonenumbers.is_valid_number(
        phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))))


def _example_numbers() -> list[tuple[int, str]]:
    found = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in range(12):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                found.add((number.country_code, phonenumbers.national_significant_number(number)))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            found.add((number.country_code, phonenumbers.national_significant_number(number)))
    return sorted((code, national) for code, national in found if not national.startswith("0"))


EXAMPLES = _example_numbers()


def test_every_example_number_and_its_neighbours() -> None:
    checked = valid = 0
    for code, national in EXAMPLES:
        for variant in (national, national[:-1], national + "7", "9" + national, national[:-1] + "0",
                        national[::-1].lstrip("0") or "1"):
            if len(variant) < 2:
                continue
            expected = reference(code, variant)
            assert _is_valid_number(code, variant) == expected, (code, variant)
            checked += 1
            valid += expected
    assert valid > 1000 and checked - valid > 1000  # both answers were exercised


@settings(max_examples=3000, deadline=None)
@given(code=st.sampled_from(COUNTRY_CODES + [0, 999]),
       national=st.from_regex(r"[1-9][0-9]{1,16}", fullmatch=True))
@example(code=1, national="2122001234")  # NANP: US, picked by trying each region's types
@example(code=1, national="2462345678")  # Barbados: another region of +1
@example(code=7, national="7011234567")  # Kazakhstan: picked by leading digits among +7
@example(code=44, national="1624756789")  # Isle of Man inside +44
@example(code=800, national="12345678")  # non-geographic entity
def test_random_numbers_of_every_code(code: int, national: str) -> None:
    assert _is_valid_number(code, national) == reference(code, national)


@pytest.mark.parametrize("code", [1, 7, 44, 61, 262, 590, 599])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_numbers_near_valid_ones_of_shared_codes(code: int, data: st.DataObject) -> None:
    """Codes several regions share: which region claims a number decides which patterns it is judged by."""
    base = data.draw(st.sampled_from([national for c, national in EXAMPLES if c == code]))
    keep = data.draw(st.integers(min_value=1, max_value=len(base)))
    tail = data.draw(st.from_regex(rf"[0-9]{{0,{len(base) - keep + 1}}}", fullmatch=True))
    national = base[:keep] + tail
    assert _is_valid_number(code, national) == reference(code, national)
