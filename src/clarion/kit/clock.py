"""The one source of "now". Tests and simulations move it; nothing else calls datetime.now()."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._frozen: datetime | None = None
        self._offset = timedelta(0)

    def now(self) -> datetime:
        if self._frozen is not None:
            return self._frozen
        return datetime.now(UTC) + self._offset

    def today(self) -> date:
        return self.now().date()

    def freeze(self, at: datetime) -> None:
        self._frozen = at if at.tzinfo else at.replace(tzinfo=UTC)

    def advance(self, delta: timedelta) -> None:
        if self._frozen is not None:
            self._frozen += delta
        else:
            self._offset += delta

    def reset(self) -> None:
        self._frozen, self._offset = None, timedelta(0)


clock = Clock()


def utcnow() -> datetime:
    return clock.now()
