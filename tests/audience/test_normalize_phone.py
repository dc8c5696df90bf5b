"""normalize_phone's E.164 fast path gives exactly the answer of parsing, for every input.

The reference is normalize_phone's own slow path — phonenumbers.parse, is_valid_number and format_number for every
number — taken by switching the fast path's test off, so the test compares against the code that runs rather than
a copy of it. Both are compared on their result or on their error message.
"""

from __future__ import annotations

from unittest import mock

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clarion.audience import normalize
from clarion.audience.normalize import _is_valid_e164, normalize_phone

REGIONS = [None, "US", "GB", "DE", "IT", "RU", "BR", "AR", "MX", "FR", "IN", "CN", "JP", "AU", "KZ", "CI"]
COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def parsing_reference(raw: str, default_region: str | None) -> str:
    """normalize_phone with every number parsed: no input is taken for valid E.164 without phonenumbers' word."""
    fast_check = normalize._is_valid_e164
    normalize._is_valid_e164 = _never  # a plain swap: mock.patch per call would double the test's time
    try:
        return normalize_phone(raw, default_region)
    finally:
        normalize._is_valid_e164 = fast_check


def _never(text: str) -> bool:
    return False


def outcome(function, raw: str, region: str | None) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    try:
        return "ok", function(raw, region)
    except ValueError as exc:
        return "error", str(exc)


def assert_same(raw: str, region: str | None) -> None:
    assert outcome(normalize_phone, raw, region) == outcome(parsing_reference, raw, region), (raw, region)


def _example_nationals() -> list[tuple[int, str]]:
    """(country code, national number) of phonenumbers' own example number of every region and number type."""
    found = set()
    for region in phonenumbers.SUPPORTED_REGIONS | {"001"}:
        for kind in range(12):  # every PhoneNumberType that has examples
            number = (phonenumbers.example_number_for_non_geo_entity(cc) for cc in
                      phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS) if region == "001" else [
                phonenumbers.example_number_for_type(region, kind)]
            for example_number in number:
                if example_number is not None:
                    found.add((example_number.country_code,
                               phonenumbers.national_significant_number(example_number)))
    return sorted(found)


EXAMPLES = _example_nationals()


def test_the_fast_path_is_taken_for_plain_e164_numbers() -> None:
    """Not vacuous: most example numbers of the world, written in E.164, skip parsing."""
    fast = [cc for cc, national in EXAMPLES if _is_valid_e164(f"+{cc}{national}")]
    assert len(fast) > 0.8 * len(EXAMPLES)
    assert _is_valid_e164("+12122000001") and _is_valid_e164("+442079460958")
    assert not _is_valid_e164("+390612345678")  # Italian leading zero: parse keeps it apart
    # Starts with Russia's national prefix 8, which parse may strip: parsing decides (and keeps it, valid as is).
    assert not _is_valid_e164("+78001234567") and normalize_phone("+78001234567", None) == "+78001234567"
    assert not _is_valid_e164("+1 212 200 0001") and not _is_valid_e164("+１２１２２０００００１")


def test_the_reference_parses_where_the_fast_path_does_not() -> None:
    with mock.patch.object(phonenumbers, "parse", wraps=phonenumbers.parse) as parse:
        assert parsing_reference("+12122000001", None) == "+12122000001"
        assert parse.call_count == 1
        assert normalize_phone("+12122000001", None) == "+12122000001"
        assert parse.call_count == 1


@pytest.mark.parametrize("region", [None, "US", "IT"])
def test_every_example_number_of_every_region_and_type(region: str | None) -> None:
    for cc, national in EXAMPLES:
        for raw in (f"+{cc}{national}", f"+{cc}0{national}", f"{cc}{national}", f" +{cc}{national} ",
                    f"+{cc}{national[:-1]}", f"+{cc}{national}9", f"+{cc}1{national}", f"+{cc}8{national}"):
            assert_same(raw, region)


digits = st.text("0123456789", min_size=0, max_size=18)


@settings(max_examples=3000, deadline=None)
@given(cc=st.sampled_from(COUNTRY_CODES), national=digits, region=st.sampled_from(REGIONS),
       prefix=st.sampled_from(["+", "", "00", "+0", " +", "+1"]))
@example(cc=1, national="12122000001", region=None, prefix="+")   # NANP national prefix "1" inside
@example(cc=7, national="8001234567", region=None, prefix="+")    # RU/KZ: national prefix 8
@example(cc=39, national="0612345678", region=None, prefix="+")   # IT leading zero
@example(cc=54, national="91123456789", region=None, prefix="+")  # AR: mobile "9" transform rule
@example(cc=52, national="15512345678", region=None, prefix="+")  # MX: legacy "1" mobile prefix
def test_fast_path_matches_parsing(cc: int, national: str, region: str | None, prefix: str) -> None:
    assert_same(f"{prefix}{cc}{national}", region)


@settings(max_examples=1500, deadline=None)
@given(raw=st.text("+0123456789 -()", max_size=22), region=st.sampled_from(REGIONS))
def test_fast_path_matches_parsing_on_arbitrary_text(raw: str, region: str | None) -> None:
    assert_same(raw, region)


@settings(max_examples=1500, deadline=None)
@given(example_index=st.integers(0, len(EXAMPLES) - 1), edit=st.sampled_from(["keep", "drop", "add", "swap"]),
       position=st.integers(0, 20), digit=st.sampled_from("0123456789"), region=st.sampled_from(REGIONS))
def test_fast_path_matches_parsing_near_valid_numbers(example_index: int, edit: str, position: int, digit: str,
                                                       region: str | None) -> None:
    """Valid numbers one edit away from valid (and invalid) ones: where a shortcut would go wrong, if anywhere."""
    cc, national = EXAMPLES[example_index]
    i = position % (len(national) + 1)
    national = {"keep": national, "drop": national[:i] + national[i + 1:],
                "add": national[:i] + digit + national[i:],
                "swap": national[:i] + digit + national[i + 1:]}[edit]
    assert_same(f"+{cc}{national}", region)
