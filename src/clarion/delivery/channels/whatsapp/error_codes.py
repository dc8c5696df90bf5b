"""What a Cloud API error code means for the message: try again later, never, or the person opted out.

The same codes arrive synchronously (the Graph API error body of a send) and asynchronously (the `errors` of a
failed status webhook), so both paths classify through here.
"""

from __future__ import annotations

from typing import Any, Literal

Outcome = Literal["transient", "permanent", "opted_out"]

# Throttling and temporary trouble on Meta's side: the same message goes through later.
TRANSIENT_CODES = frozenset({
    1,       # API unknown: Meta asks to retry
    2,       # API service temporarily unavailable
    4,       # application request limit reached
    17,      # user request limit reached
    32,      # page-level throttling
    613,     # calls within one hour exceeded
    80004,   # too many calls to this business account
    80007,   # WhatsApp Business Account rate limit
    130429,  # Cloud API throughput reached
    131000,  # something went wrong (Meta: retry)
    131016,  # service unavailable
    131048,  # spam rate limit: the number is restricted for a while
    131056,  # pair rate limit: too many messages to this recipient in a short time
    131057,  # business account in maintenance mode
    133016,  # account register/deregister rate limit
})

# The recipient stopped marketing messages from this business (user_preferences "stop").
OPTED_OUT_CODES = frozenset({131050})

# OAuthException 190: the access token expired or was revoked.
ACCESS_TOKEN_INVALID = 190


def classify(code: int | None, http_status: int | None = None) -> Outcome:
    """The outcome of an error `code`; an unknown code falls back on the HTTP status when there is one
    (429 and 5xx are temporary on every Graph endpoint)."""
    if code in OPTED_OUT_CODES:
        return "opted_out"
    if code in TRANSIENT_CODES:
        return "transient"
    if http_status is not None and (http_status == 429 or http_status >= 500):
        return "transient"
    return "permanent"


def as_code(value: Any) -> int | None:
    """Codes are integers in Graph responses; tolerate a numeric string, reject anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
