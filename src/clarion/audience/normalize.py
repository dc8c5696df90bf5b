"""Pure normalisation of contact fields, shared by the API and the importer. Each raises ValueError with a reason."""

from __future__ import annotations

import re
from functools import lru_cache
from zoneinfo import available_timezones

import phonenumbers
from email_validator import EmailNotValidError, validate_email

LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
MAX_TAG_LEN = 100


def normalize_email(raw: str) -> str:
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"invalid email {raw!r}: {exc}") from exc
    # One address, one contact: mailbox providers treat the local part case-insensitively in practice.
    return result.normalized.lower()


def normalize_phone(raw: str, default_region: str | None) -> str:
    text = raw.strip()
    if not text.startswith("+") and not text.startswith("00") and default_region is None:
        digits = re.sub(r"\D", "", text)
        if _is_valid_e164("+" + digits):
            return "+" + digits
        # Seed 002 writes numbers as bare international digits ("14694652751"): accept those when they parse.
        try:
            parsed = phonenumbers.parse("+" + digits, None)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"phone {raw!r} has no country code and the tenant has no default region") from exc
        if not phonenumbers.is_valid_number(parsed):
            raise ValueError(f"phone {raw!r} has no country code and the tenant has no default region")
    else:
        if _is_valid_e164(text):
            return text
        try:
            parsed = phonenumbers.parse(text, default_region)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"invalid phone {raw!r}: {exc}") from exc
        if not phonenumbers.is_valid_number(parsed):
            raise ValueError(f"invalid phone {raw!r}: not a valid number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# "+", a country code and a national number, ASCII digits only, no more digits than parse accepts (3 + 17).
_E164_SHAPE = re.compile(r"\+[1-9][0-9]{2,19}\Z")
_COUNTRY_CODE_LENGTHS = (1, 2, 3)


@lru_cache(maxsize=512)
def _national_prefix(country_code: int) -> re.Pattern[str] | None:
    """The pattern parse() tries to strip from the start of a national number of this country code, if any."""
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        raise LookupError(country_code)
    prefix = metadata.national_prefix_for_parsing
    return re.compile(prefix) if prefix else None


def _is_valid_e164(text: str) -> bool:
    """True only when normalize_phone's parsing path would accept `text` and return it unchanged: a valid number
    already in E.164 form (what imports mostly hold). Decided without phonenumbers.parse, which costs more than
    the validation itself, by building the number parse would build: a "+" number's country code is the leading
    1–3 digits that name one (no code is a prefix of another), the rest is the national number as long as it has
    no leading zero (parse would keep that apart) and does not start with the country's national prefix (parse
    might strip it). Any other case returns False and takes the full path, so the result never differs.
    """
    if _E164_SHAPE.match(text) is None:
        return False
    for length in _COUNTRY_CODE_LENGTHS:
        country_code = int(text[1:1 + length])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return False
    national = text[1 + length:]
    if not 2 <= len(national) <= 17 or national[0] == "0":
        return False
    try:
        prefix = _national_prefix(country_code)
    except LookupError:
        return False
    if prefix is not None and prefix.match(national):
        return False
    return _is_valid_number(country_code, national)


# phonenumbers' number types, in the order its _number_type_helper tries them.
_NUMBER_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
                 "fixed_line", "mobile")


def _is_valid_number(country_code: int, national: str) -> bool:
    """phonenumbers.is_valid_number of the number `national` (digits, no leading zero) of this country code, step
    for step: the region as region_code_for_number picks it, then is_valid_number_for_region. Only "is it any known
    type of the region" is answered faster (_matches_a_number_type), and the metadata lookups are made once per
    country code (_regions_of): for a +1 number phonenumbers tries up to ten patterns one call at a time, twice,
    ≈ 14 µs. Proved identical by a hypothesis test against is_valid_number."""
    regions = _regions_by_code.get(country_code)
    if regions is None:
        regions = _regions_by_code[country_code] = _regions_of(country_code)
    if len(regions) == 1:
        final = regions[0][2]
        return final is not None and _matches_a_number_type(national, final)
    for leading_digits, metadata, final in regions:
        if metadata is None:
            continue
        if leading_digits is not None:
            if leading_digits.match(national) is None:
                continue
        elif not _matches_a_number_type(national, metadata):
            continue
        elif final is metadata:
            return True  # the check is_valid_number_for_region makes, with the same metadata, just passed
        return final is not None and _matches_a_number_type(national, final)
    return False


_RegionEntry = tuple[re.Pattern[str] | None, phonenumbers.PhoneMetadata | None, phonenumbers.PhoneMetadata | None]
_regions_by_code: dict[int, tuple[_RegionEntry, ...]] = {}


def _regions_of(country_code: int) -> tuple[_RegionEntry, ...]:
    """Per region of the code, in phonenumbers' order: its leading-digits pattern and metadata (what
    region_code_for_number looks at), and the metadata is_valid_number_for_region validates against (None where
    that returns False whatever the number). An unknown code has no region: no number of it is valid."""
    entries = []
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ()):
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region.upper(), None)
        leading = metadata.leading_digits if metadata is not None else None
        final = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region.upper())
        if final is not None and region != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY and (
                country_code != phonenumbers.country_code_for_valid_region(region)):
            final = None
        entries.append((re.compile(leading) if leading is not None else None, metadata, final))
    return tuple(entries) or ((None, None, None),)


# (id of a region's metadata, number length) → (the metadata, kept so the id stays its own; the general pattern and
# the alternation of the type patterns a number of that length can match), or None when none can.
_type_patterns: dict[tuple[int, int], tuple[object, re.Pattern[str], re.Pattern[str]] | None] = {}


def _matches_a_number_type(national: str, metadata: phonenumbers.PhoneMetadata) -> bool:
    """_number_type_helper(national, metadata) != UNKNOWN, as two regular-expression matches. That helper fully
    matches the general pattern, then each type's pattern (a type applies only when the number's length is one of
    its possible lengths, and mobile is skipped when the metadata says it equals fixed line) until one matches. A
    full match of the alternation of those patterns is a full match of one of them."""
    key = (id(metadata), len(national))
    found = _type_patterns.get(key, False)
    if found is False:
        found = _type_patterns[key] = _compile_type_patterns(metadata, len(national))
    if found is None:
        return False
    _, general, types = found
    return general.fullmatch(national) is not None and types.fullmatch(national) is not None


def _compile_type_patterns(metadata: phonenumbers.PhoneMetadata, length: int
                           ) -> tuple[object, re.Pattern[str], re.Pattern[str]] | None:
    def applies(desc: phonenumbers.PhoneNumberDesc | None) -> bool:
        return (desc is not None and (not desc.possible_length or length in desc.possible_length)
                and bool(desc.national_number_pattern))

    if not applies(metadata.general_desc):
        return None
    names = _NUMBER_TYPES[:-1] if metadata.same_mobile_and_fixed_line_pattern else _NUMBER_TYPES
    patterns = [desc.national_number_pattern for desc in (getattr(metadata, name) for name in names) if applies(desc)]
    if not patterns:
        return None
    return (metadata, re.compile(metadata.general_desc.national_number_pattern),
            re.compile("|".join(f"(?:{pattern})" for pattern in patterns)))


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def normalize_timezone(raw: str) -> str:
    value = raw.strip()
    if value not in _zones():
        raise ValueError(f"unknown timezone {raw!r}: use an IANA name such as Europe/Berlin")
    return value


def normalize_locale(raw: str) -> str:
    value = raw.strip()
    if not LOCALE_RE.match(value):
        raise ValueError(f"invalid locale {raw!r}: use a language tag such as en or de-DE")
    return value.replace("_", "-")


def normalize_tags(tags: list[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        value = tag.strip()
        if not value:
            continue
        if len(value) > MAX_TAG_LEN:
            raise ValueError(f"tag {value[:20]!r}… is longer than {MAX_TAG_LEN} characters")
        if value not in out:
            out.append(value)
    return out


# Telegram chat ids and push endpoints are opaque: trimmed and bounded, nothing more.
MAX_OPAQUE_ADDRESS = 320


def normalize_address(channel: str, raw: str, default_region: str | None) -> str:
    """The address as contacts store it: lower-cased email, E.164 phone; telegram/push ids are taken as given
    (trimmed). Raises ValueError with the reason."""
    if channel == "email":
        return normalize_email(raw)
    if channel in ("sms", "whatsapp"):
        return normalize_phone(raw, default_region)
    value = raw.strip()
    if not value:
        raise ValueError("empty address")
    if len(value) > MAX_OPAQUE_ADDRESS:
        raise ValueError(f"address longer than {MAX_OPAQUE_ADDRESS} characters")
    return value
