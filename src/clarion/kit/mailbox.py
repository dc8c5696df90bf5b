"""The plain ASCII mailbox: a dot-atom local part and an LDH host name, the shape almost every address has."""

from __future__ import annotations

import re

ADDR_SPEC = (r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
             r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_PLAIN_MAILBOX = re.compile(ADDR_SPEC)


def is_plain_mailbox(address: str) -> bool:
    return _PLAIN_MAILBOX.fullmatch(address) is not None
