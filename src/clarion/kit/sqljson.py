"""JSON operations SQLAlchemy has no portable form for. The dialect difference lives here, compiled per database."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import Boolean, Integer, Numeric, String, TypeDecorator, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class json_array_contains(FunctionElement[bool]):
    """True when the JSON array `column` holds the string `value`."""

    type = Boolean()
    inherit_cache = True
    name = "json_array_contains"

    def __init__(self, column: Any, value: str) -> None:
        super().__init__(column, bindparam(None, value, unique=True))


@compiles(json_array_contains, "postgresql")
def _contains_pg(element: json_array_contains, compiler: Any, **kw: Any) -> str:
    column, value = element.clauses.clauses
    return f"({compiler.process(column, **kw)} @> jsonb_build_array(CAST({compiler.process(value, **kw)} AS TEXT)))"


@compiles(json_array_contains, "sqlite")
def _contains_sqlite(element: json_array_contains, compiler: Any, **kw: Any) -> str:
    column, value = element.clauses.clauses
    return (f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) "
            f"WHERE json_each.value = {compiler.process(value, **kw)})")


def like_escape(text: str) -> str:
    """Escape LIKE wildcards so user text matches literally (used with escape='\\\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- typed access to one key of a JSON object column (the segment filter tree uses these) ------------------
#
# Each element yields the value at `key` only when its JSON type is the one asked for, else SQL NULL, so a
# comparison against the wrong type behaves like a missing key on both databases. The key is always a bound
# parameter: PostgreSQL receives the bare key for `->`, SQLite a quoted JSON path. Callers restrict keys to a
# charset without quotes, dots or brackets, so the quoted path always names exactly one top-level key.


class JsonKey(TypeDecorator[str]):
    """A top-level JSON object key, bound as the path form each database's JSON functions expect."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        return f'$."{value}"' if dialect.name == "sqlite" else value


class _JsonAt(FunctionElement[Any]):
    """A typed read of `column[key]`. Each subclass spells it once per database ({col}, {key} are filled in)."""

    inherit_cache = True
    sqlite_sql: ClassVar[str]
    postgresql_sql: ClassVar[str]

    def __init__(self, column: Any, key: str) -> None:
        super().__init__(column, bindparam(None, key, type_=JsonKey(), unique=True))


_PG_AT = "{col} -> CAST({key} AS TEXT)"
_PG_TEXT_AT = "{col} ->> CAST({key} AS TEXT)"


class json_kind_at(_JsonAt):
    """The JSON type at `key`: 'string', 'number', 'boolean', 'null', 'object', 'array'; NULL when absent."""

    type = String()
    inherit_cache = True
    name = "json_kind_at"
    sqlite_sql = ("(CASE json_type({col}, {key}) WHEN 'text' THEN 'string' WHEN 'integer' THEN 'number' "
                  "WHEN 'real' THEN 'number' WHEN 'true' THEN 'boolean' WHEN 'false' THEN 'boolean' "
                  "ELSE json_type({col}, {key}) END)")
    postgresql_sql = f"jsonb_typeof({_PG_AT})"


class json_string_at(_JsonAt):
    """The string at `key`, NULL unless it is a JSON string."""

    type = String()
    inherit_cache = True
    name = "json_string_at"
    sqlite_sql = "(CASE WHEN json_type({col}, {key}) = 'text' THEN json_extract({col}, {key}) END)"
    postgresql_sql = f"(CASE WHEN jsonb_typeof({_PG_AT}) = 'string' THEN {_PG_TEXT_AT} END)"


class json_number_at(_JsonAt):
    """The number at `key`, NULL unless it is a JSON number."""

    type = Numeric()
    inherit_cache = True
    name = "json_number_at"
    sqlite_sql = "(CASE WHEN json_type({col}, {key}) IN ('integer', 'real') THEN json_extract({col}, {key}) END)"
    postgresql_sql = f"(CASE WHEN jsonb_typeof({_PG_AT}) = 'number' THEN CAST({_PG_TEXT_AT} AS NUMERIC) END)"


class json_boolean_at(_JsonAt):
    """'true' or 'false' (text) for a JSON boolean at `key`, NULL otherwise."""

    type = String()
    inherit_cache = True
    name = "json_boolean_at"
    sqlite_sql = "(CASE WHEN json_type({col}, {key}) IN ('true', 'false') THEN json_type({col}, {key}) END)"
    postgresql_sql = f"(CASE WHEN jsonb_typeof({_PG_AT}) = 'boolean' THEN {_PG_TEXT_AT} END)"


@compiles(_JsonAt, "sqlite")
@compiles(_JsonAt, "postgresql")
def _json_at(element: _JsonAt, compiler: Any, **kw: Any) -> str:
    column, key = element.clauses.clauses
    template = element.sqlite_sql if compiler.dialect.name == "sqlite" else element.postgresql_sql
    return template.format(col=compiler.process(column, **kw), key=compiler.process(key, **kw))


class json_array_length(FunctionElement[int]):
    """Number of elements of a JSON array column (NULL for NULL)."""

    type = Integer()
    inherit_cache = True
    name = "json_array_length"


@compiles(json_array_length, "sqlite")
def _array_length_sqlite(element: json_array_length, compiler: Any, **kw: Any) -> str:
    return f"json_array_length({compiler.process(element.clauses, **kw)})"


@compiles(json_array_length, "postgresql")
def _array_length_pg(element: json_array_length, compiler: Any, **kw: Any) -> str:
    return f"jsonb_array_length({compiler.process(element.clauses, **kw)})"


# --- text comparisons that do not depend on the database's locale -------------------------------------------

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ASCII_LOWER = str.maketrans(_UPPER, _UPPER.lower())


def ascii_lower_py(text: str) -> str:
    """Python twin of `ascii_lower`: A–Z become a–z, every other character stays as it is."""
    return text.translate(ASCII_LOWER)


class ascii_lower(FunctionElement[str]):
    """Lower-case ASCII letters only. SQLite's lower() does exactly this; PostgreSQL's lower() follows the
    server locale and folds non-ASCII letters too, so there it is spelled as a fixed translate()."""

    type = String()
    inherit_cache = True
    name = "ascii_lower"


@compiles(ascii_lower, "sqlite")
def _ascii_lower_sqlite(element: ascii_lower, compiler: Any, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(ascii_lower, "postgresql")
def _ascii_lower_pg(element: ascii_lower, compiler: Any, **kw: Any) -> str:
    return f"translate({compiler.process(element.clauses, **kw)}, '{_UPPER}', '{_UPPER.lower()}')"


class binary_order(FunctionElement[str]):
    """Text that orders by code point (UTF-8 bytes): SQLite's BINARY default; COLLATE "C" on PostgreSQL,
    whose default collation would otherwise sort by the server's locale."""

    type = String()
    inherit_cache = True
    name = "binary_order"


@compiles(binary_order, "sqlite")
def _binary_order_sqlite(element: binary_order, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(binary_order, "postgresql")
def _binary_order_pg(element: binary_order, compiler: Any, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)} COLLATE "C")'
