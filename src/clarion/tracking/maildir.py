"""A Maildir inbox of bounce messages, shared safely by any number of workers.

A worker claims a message by renaming it from new/ into cur/ with an empty info suffix (`name:2,`): rename is
atomic, so exactly one worker wins each file. Once the message is applied and committed, the file gets the
Seen flag (`name:2,S`). A claimed file left unflagged (its worker died between claim and commit) is taken up
again after `stale_after`, so every message is applied at least once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CLAIMED_SUFFIX = ":2,"
DONE_SUFFIX = ":2,S"


def ensure(maildir: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)


def claim(maildir: Path, *, limit: int, stale_after: float = 600.0) -> list[Path]:
    """Up to `limit` messages now owned by this caller, oldest first: new ones, then abandoned claims."""
    ensure(maildir)
    claimed: list[Path] = []
    now = time.time()
    fresh = sorted((p for p in (maildir / "new").iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: p.name)
    for path in fresh:
        if len(claimed) >= limit:
            return claimed
        base = path.name.split(":", 1)[0]
        target = maildir / "cur" / f"{base}{CLAIMED_SUFFIX}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            continue  # another worker took it first
        os.utime(target, (now, now))  # the claim's age, not the delivery's, decides when it counts as abandoned
        claimed.append(target)
    for path in sorted((maildir / "cur").glob(f"*{CLAIMED_SUFFIX}")):
        if len(claimed) >= limit:
            break
        try:
            if now - path.stat().st_mtime < stale_after or path in claimed:
                continue
            os.utime(path, (now, now))  # re-claim; two workers racing here both apply it: at-least-once
        except FileNotFoundError:
            continue
        claimed.append(path)
    return claimed


def mark_done(path: Path) -> Path:
    done = path.with_name(path.name[: -len(CLAIMED_SUFFIX)] + DONE_SUFFIX)
    os.rename(path, done)
    return done
