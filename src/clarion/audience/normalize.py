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
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    return bool(phonenumbers.is_valid_number(number))


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
