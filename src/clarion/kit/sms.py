"""SMS segment counting (GSM 03.38 / UCS-2 concatenation): what a text costs as SMS parts.

Domain-free, because two layers need the same answer: content previews show it, and SMS providers report it as
the billable units of a message when the provider's response does not say.
"""

from __future__ import annotations

from typing import Literal

SmsEncoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38: the basic character set (one septet each) and the extension table (escape + septet: two).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


def _is_gsm7(text: str) -> bool:
    return all(ch in _GSM7_BASIC or ch in _GSM7_EXTENSION for ch in text)


def _count_segments(units: list[int], single: int, multi: int) -> int:
    """Segments for characters of the given widths; a character never straddles two segments."""
    total = sum(units)
    if total <= single:
        return 1
    segments, used = 1, 0
    for width in units:
        if used + width > multi:
            segments, used = segments + 1, 0
        used += width
    return segments


def sms_segments(text: str) -> tuple[int, SmsEncoding]:
    """How many SMS parts `text` is sent as, and in which encoding: GSM-7 holds 160 septets in one part and 153 per
    part when concatenated (extension characters take two); anything else is UCS-2, 70 / 67 UTF-16 units."""
    if _is_gsm7(text):
        return _count_segments([2 if ch in _GSM7_EXTENSION else 1 for ch in text], 160, 153), "GSM-7"
    units = [2 if ord(ch) > 0xFFFF else 1 for ch in text]  # astral characters (most emoji) are surrogate pairs
    return _count_segments(units, 70, 67), "UCS-2"
