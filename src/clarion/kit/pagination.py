"""Keyset (cursor) pagination. Never OFFSET: page N costs the same as page 1."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import Invalid, field_error

T = TypeVar("T")
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


@dataclass
class PageRows(Generic[T]):
    rows: Sequence[T]
    next_cursor: str | None


def encode_cursor(value: Any) -> str:
    raw = json.dumps(str(value) if isinstance(value, uuid.UUID) else value)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid("cursor is not one this API issued", errors=[field_error(["query", "cursor"], "malformed cursor")]) from exc


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be between 1 and {MAX_LIMIT}",
                      errors=[field_error(["query", "limit"], f"must be between 1 and {MAX_LIMIT}")])
    return limit


async def keyset_page(
    session: AsyncSession,
    stmt: Select[Any],
    key_column: Any,
    *,
    limit: int,
    cursor: str | None,
    descending: bool = False,
    key_type: type = str,
    scalars: bool = True,
) -> PageRows[Any]:
    """One page of `stmt` ordered by a unique `key_column`; the cursor is the last key seen."""
    check_limit(limit)
    if cursor is not None:
        last = decode_cursor(cursor)
        try:
            last = uuid.UUID(last) if key_type is uuid.UUID else key_type(last)
        except (TypeError, ValueError) as exc:
            raise Invalid("cursor is not one this API issued",
                          errors=[field_error(["query", "cursor"], "malformed cursor")]) from exc
        stmt = stmt.where(key_column < last if descending else key_column > last)
    stmt = stmt.order_by(key_column.desc() if descending else key_column.asc()).limit(limit + 1)
    result = await session.execute(stmt)
    rows = list(result.scalars().all() if scalars else result.all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last_row = rows[-1]
        key_name = key_column.key
        last_key = getattr(last_row, key_name) if scalars else last_row._mapping[key_name]
        next_cursor = encode_cursor(last_key)
    return PageRows(rows=rows, next_cursor=next_cursor)
