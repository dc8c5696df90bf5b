"""The segment filter tree: validation, compilation to SQL, and a plain-Python reference evaluator.

A tree is JSON. A node is one of

    {"all": [node, ...]}        true when every child is true (at least one child)
    {"any": [node, ...]}        true when some child is true (at least one child)
    {"not": node}               true when the child is false
    {"field": F, "op": O, "value": V}   a leaf

Every node is either true or false for a contact — there is no third "unknown" value. A leaf about a
missing field is false (so `not` of it is true), whatever its op, except `exists`.

Fields and their ops:

* `email`, `phone`, `first_name`, `last_name`, `locale`, `timezone` (text columns; missing = NULL)
    - `eq`, `ne`: exact, case-sensitive equality of the stored (already normalised) text.
    - `in`, `not_in`: a non-empty list of strings; membership, case-sensitive.
    - `gt`, `gte`, `lt`, `lte`: ordering by Unicode code point (byte order of UTF-8), never by a locale.
    - `contains`, `starts_with`: substring / prefix match, case-insensitive for ASCII letters only
      (A–Z equal a–z; every other character, including É/é, must match exactly). `%`, `_` and `\\` in the
      value are literal characters.
    - `exists`: true → the field is set (an empty string counts as set); false → it is not.
* `created_at`: an ISO 8601 datetime with a timezone (naive is rejected); `eq`, `ne`, `gt`, `gte`, `lt`,
  `lte`, `exists`. Compared as instants with microsecond precision.
* `attributes.<key>`: one top-level key of the contact's attributes. The key is 1–100 characters of
  letters, digits, `_`, `-` and spaces (starting with a letter, digit or `_`). A value compares only with
  an attribute of the same JSON type: a number value with numeric attributes (compared numerically),
  a string value with string attributes (as for text columns), a boolean with booleans. An attribute of
  another type, JSON null, or a missing key behaves as missing.
    - `eq`, `ne`: string, number or boolean. `ne` needs an attribute of the value's type that differs.
    - `in`, `not_in`: a non-empty list of strings, or of numbers, or of booleans (one type per list).
    - `gt`, `gte`, `lt`, `lte`: string or number.
    - `contains`, `starts_with`: string, on string attributes.
    - `exists`: true → the key is present with a non-null value (of any type); false → absent or null.
  Numbers must be finite; integers and floats compare exactly within ±2**52 (beyond that the databases
  round differently).
* `tags`: `has` (a string: the contact carries that tag, case-sensitive), `has_any` / `has_all` (a non-empty
  list of strings), `exists` (true → at least one tag).
* `subscription.<channel>` (channel: email, sms, whatsapp, telegram, push) on the contact's consent for that
  channel (its row, else "subscribed" on a channel it is subscribed to by default, see audience.consent); none =
  missing: `eq`, `ne` (a status: subscribed, unsubscribed, bounced, complained), `in`, `not_in` (list of
  statuses), `exists` (true → the contact has a consent status on the channel).

`exists` may omit `value` (meaning true). Values are always bound parameters; field names select from a
fixed table and attribute keys travel as bound JSON paths, so no input text ever becomes SQL. A tree is at
most 20 levels deep and 500 nodes large; strings at most 1,000 characters, lists at most 1,000 items.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, cast, false, func, not_, or_, true
from sqlalchemy import String as SAString
from sqlalchemy.types import Numeric

from clarion.audience.repository import consent_matches, has_consent
from clarion.errors import Invalid, field_error
from clarion.kit.sqljson import (
    ascii_lower,
    ascii_lower_py,
    binary_order,
    json_array_contains,
    json_array_length,
    json_boolean_at,
    json_kind_at,
    json_number_at,
    json_string_at,
    like_escape,
)
from clarion.models import Contact, ContactSubscription
from clarion.models.audience import CHANNELS, SUBSCRIPTION_STATUSES

MAX_DEPTH = 20
MAX_NODES = 500
MAX_STRING = 1000
MAX_LIST = 1000
# Beyond 2**53 a float no longer holds every integer; keep filter numbers where all three evaluators agree.
MAX_NUMBER = float(2**52)

TEXT_FIELDS = ("email", "phone", "first_name", "last_name", "locale", "timezone")
TEXT_OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "starts_with", "exists")
DATETIME_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "exists")
ATTRIBUTE_OPS = TEXT_OPS
TAG_OPS = ("has", "has_any", "has_all", "exists")
SUBSCRIPTION_OPS = ("eq", "ne", "in", "not_in", "exists")
ORDER_OPS = ("gt", "gte", "lt", "lte")
LIST_OPS = ("in", "not_in", "has_any", "has_all")
ATTRIBUTE_KEY_RE = re.compile(r"^\w[\w\- ]{0,99}$")
LEAF_KEYS = frozenset({"field", "op", "value"})
BRANCH_KEYS = ("all", "any", "not")

FIELD_HELP = ("email, phone, first_name, last_name, locale, timezone, created_at, attributes.<key>, tags, "
              "subscription.<channel>")


# --- validation ------------------------------------------------------------------------------------------

def _path_loc(path: str) -> list[str | int]:
    """'filter.all[2].not' → ['body', 'filter', 'all', 2, 'not'] for the problem's errors[].loc."""
    loc: list[str | int] = ["body"]
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        loc.append(int(part[1:-1]) if part.startswith("[") else part)
    return loc


def _fail(path: str, message: str) -> Invalid:
    return Invalid(f"{path}: {message}", errors=[field_error(_path_loc(path), message, "filter_error")])


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _field_kind(field: Any, path: str) -> tuple[str, str | None]:
    """('text'|'datetime'|'attribute'|'tags'|'subscription', detail) for a field name, or Invalid."""
    if not isinstance(field, str):
        raise _fail(path, f"'field' must be a string, got {_type_name(field)}")
    if field in TEXT_FIELDS:
        return "text", field
    if field == "created_at":
        return "datetime", field
    if field == "tags":
        return "tags", None
    if field.startswith("attributes."):
        key = field[len("attributes."):]
        if not ATTRIBUTE_KEY_RE.match(key):
            raise _fail(path, f"invalid attribute key {key!r}: use 1–100 letters, digits, '_', '-' or spaces, "
                              "starting with a letter, digit or '_'")
        return "attribute", key
    if field.startswith("subscription."):
        channel = field[len("subscription."):]
        if channel not in CHANNELS:
            raise _fail(path, f"unknown channel {channel!r} in field {field!r}; channels: {', '.join(CHANNELS)}")
        return "subscription", channel
    raise _fail(path, f"unknown field {field!r}; fields: {FIELD_HELP}")


_OPS_BY_KIND = {"text": TEXT_OPS, "datetime": DATETIME_OPS, "attribute": ATTRIBUTE_OPS, "tags": TAG_OPS,
                "subscription": SUBSCRIPTION_OPS}


def _check_string(value: Any, path: str, what: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"{what} must be a string, got {_type_name(value)}")
    if len(value) > MAX_STRING:
        raise _fail(path, f"{what} is longer than {MAX_STRING} characters")
    if "\x00" in value:
        raise _fail(path, f"{what} contains a NUL character")
    return value


def _check_number(value: Any, path: str, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, f"{what} must be a number, got {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, f"{what} must be a finite number")
    if abs(value) > MAX_NUMBER:
        raise _fail(path, f"{what} must be between -2**52 and 2**52")
    return value


def _check_scalar(value: Any, path: str, what: str, allowed: tuple[str, ...]) -> Any:
    kind = _type_name(value)
    if kind not in allowed:
        raise _fail(path, f"{what} must be {' or '.join(allowed)}, got {kind}")
    if kind == "string":
        return _check_string(value, path, what)
    if kind == "number":
        return _check_number(value, path, what)
    return value


def _check_list(value: Any, path: str, op: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, f"'{op}' needs a list value, got {_type_name(value)}")
    if not value:
        raise _fail(path, f"'{op}' needs a non-empty list")
    if len(value) > MAX_LIST:
        raise _fail(path, f"'{op}' takes at most {MAX_LIST} values")
    return value


def _check_datetime(value: Any, path: str) -> str:
    text = _check_string(value, path, "created_at value")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(path, f"created_at value {text!r} is not an ISO 8601 datetime") from None
    if moment.tzinfo is None:
        raise _fail(path, f"created_at value {text!r} has no timezone; add one, e.g. '{text}Z' or '+02:00'")
    return moment.astimezone(UTC).isoformat()


def _check_status(value: Any, path: str, what: str) -> str:
    if value not in SUBSCRIPTION_STATUSES or not isinstance(value, str):
        raise _fail(path, f"{what} must be one of {', '.join(SUBSCRIPTION_STATUSES)}, got {value!r}")
    return value


def _leaf_value(kind: str, op: str, value: Any, path: str) -> Any:
    if op == "exists":
        if not isinstance(value, bool):
            raise _fail(path, f"'exists' takes true or false, got {_type_name(value)}")
        return value
    if kind == "text":
        if op in ("in", "not_in"):
            return [_check_string(v, f"{path}.value[{i}]", "each value") for i, v in
                    enumerate(_check_list(value, path, op))]
        return _check_string(value, path, f"the value of '{op}'")
    if kind == "datetime":
        return _check_datetime(value, path)
    if kind == "tags":
        if op == "has":
            return _check_string(value, path, "the value of 'has'")
        return [_check_string(v, f"{path}.value[{i}]", "each tag") for i, v in
                enumerate(_check_list(value, path, op))]
    if kind == "subscription":
        if op in ("in", "not_in"):
            return [_check_status(v, f"{path}.value[{i}]", "each value") for i, v in
                    enumerate(_check_list(value, path, op))]
        return _check_status(value, path, f"the value of '{op}'")
    # attribute
    if op in ("in", "not_in"):
        items = _check_list(value, path, op)
        checked = [_check_scalar(v, f"{path}.value[{i}]", "each value", ("string", "number", "boolean"))
                   for i, v in enumerate(items)]
        if len({_type_name(v) for v in checked}) > 1:
            raise _fail(path, f"the values of '{op}' must all be strings, all numbers or all booleans")
        return checked
    if op in ("contains", "starts_with"):
        return _check_string(value, path, f"the value of '{op}'")
    if op in ORDER_OPS:
        return _check_scalar(value, path, f"the value of '{op}'", ("string", "number"))
    return _check_scalar(value, path, f"the value of '{op}'", ("string", "number", "boolean"))


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0


def _validate_node(node: Any, path: str, depth: int, budget: _Budget) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise _fail(path, f"the filter is nested deeper than {MAX_DEPTH} levels")
    budget.nodes += 1
    if budget.nodes > MAX_NODES:
        raise _fail(path, f"the filter has more than {MAX_NODES} nodes")
    if not isinstance(node, dict):
        raise _fail(path, f"a node must be an object, got {_type_name(node)}")
    branch = [k for k in BRANCH_KEYS if k in node]
    if branch:
        if len(node) != 1:
            extra = sorted(k for k in node if k != branch[0])
            raise _fail(path, f"a '{branch[0]}' node takes no other keys, got {', '.join(map(repr, extra))}")
        key = branch[0]
        if key == "not":
            return {"not": _validate_node(node["not"], f"{path}.not", depth + 1, budget)}
        children = node[key]
        if not isinstance(children, list):
            raise _fail(f"{path}.{key}", f"'{key}' needs a list of nodes, got {_type_name(children)}")
        if not children:
            raise _fail(f"{path}.{key}", f"'{key}' needs at least one node")
        return {key: [_validate_node(child, f"{path}.{key}[{i}]", depth + 1, budget)
                      for i, child in enumerate(children)]}
    extra = sorted(k for k in node if k not in LEAF_KEYS)
    if extra:
        raise _fail(path, f"unexpected key {extra[0]!r}; a node is {{all}}, {{any}}, {{not}} or "
                          "{field, op, value}")
    if "field" not in node or "op" not in node:
        missing = "field" if "field" not in node else "op"
        raise _fail(path, f"a leaf needs '{missing}'")
    kind, _detail = _field_kind(node["field"], path)
    op = node["op"]
    allowed = _OPS_BY_KIND[kind]
    if not isinstance(op, str) or op not in allowed:
        field = node["field"]
        known = op in TEXT_OPS or op in TAG_OPS if isinstance(op, str) else False
        reason = f"op {op!r} does not apply to field {field!r}" if known else f"unknown op {op!r}"
        raise _fail(path, f"{reason}; ops for {field!r}: {', '.join(allowed)}")
    if "value" not in node:
        if op != "exists":
            raise _fail(path, f"op '{op}' needs a 'value'")
        value: Any = True
    else:
        value = node["value"]
    return {"field": node["field"], "op": op, "value": _leaf_value(kind, op, value, path)}


def validate_tree(tree: Any, path: str = "filter") -> dict[str, Any]:
    """The normalised tree (created_at values in UTC, `exists` values explicit), or Invalid naming the node."""
    return _validate_node(tree, path, 1, _Budget())


# --- compilation to SQL ----------------------------------------------------------------------------------

def _text_leaf(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "eq":
        return column == value
    if op == "ne":
        return column != value
    if op == "in":
        return column.in_(value)
    if op == "not_in":
        return column.not_in(value)
    if op in ORDER_OPS:
        ordered = binary_order(column)
        return {"gt": ordered > value, "gte": ordered >= value, "lt": ordered < value, "lte": ordered <= value}[op]
    needle = like_escape(ascii_lower_py(value))
    pattern = f"%{needle}%" if op == "contains" else f"{needle}%"
    return ascii_lower(column).like(pattern, escape="\\")


def _compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    return {"eq": column == value, "ne": column != value, "gt": column > value, "gte": column >= value,
            "lt": column < value, "lte": column <= value}[op]


def _number(value: float) -> Any:
    # Bound as its shortest decimal text: PostgreSQL then compares the same decimal JSON stored for the attribute.
    return cast(cast(repr(value) if isinstance(value, float) else str(value), SAString), Numeric)


def _attribute_leaf(key: str, op: str, value: Any) -> ColumnElement[bool]:
    column = Contact.attributes
    if op == "exists":
        present = func.coalesce(json_kind_at(column, key), "null") != "null"
        return present if value else ~present
    sample = value[0] if isinstance(value, list) else value
    kind = _type_name(sample)
    if kind == "string":
        return _text_leaf(json_string_at(column, key), op, value)
    if kind == "boolean":
        target = json_boolean_at(column, key)
        words = [("true" if v else "false") for v in value] if isinstance(value, list) else (
            "true" if value else "false")
        if op == "in":
            return target.in_(words)
        if op == "not_in":
            return target.not_in(words)
        return _compare(target, op, words)
    target = json_number_at(column, key)
    if op == "in":
        return or_(*(target == _number(v) for v in value))
    if op == "not_in":
        return and_(target.is_not(None), *(target != _number(v) for v in value))
    return _compare(target, op, _number(value))


def _subscription_leaf(channel: str, op: str, value: Any) -> ColumnElement[bool]:
    if op == "exists":
        present = has_consent(channel)
        return present if value else not_(present)
    status = ContactSubscription.status
    condition = {"eq": lambda: status == value, "ne": lambda: status != value,
                 "in": lambda: status.in_(value), "not_in": lambda: status.not_in(value)}[op]()
    return consent_matches(channel, condition, subscribed_matches=_py_compare("subscribed", op, value))


def _tags_leaf(op: str, value: Any) -> ColumnElement[bool]:
    if op == "exists":
        has_some = func.coalesce(json_array_length(Contact.tags), 0) > 0
        return has_some if value else ~has_some
    if op == "has":
        return json_array_contains(Contact.tags, value)
    checks = [json_array_contains(Contact.tags, tag) for tag in value]
    return or_(*checks) if op == "has_any" else and_(*checks)


def _leaf_sql(node: Mapping[str, Any]) -> ColumnElement[bool]:
    field, op, value = node["field"], node["op"], node["value"]
    if field in TEXT_FIELDS:
        column = getattr(Contact, field)
        if op == "exists":
            return column.is_not(None) if value else column.is_(None)
        return _text_leaf(column, op, value)
    if field == "created_at":
        if op == "exists":
            return true() if value else false()
        return _compare(Contact.created_at, op, datetime.fromisoformat(value))
    if field == "tags":
        return _tags_leaf(op, value)
    if field.startswith("attributes."):
        return _attribute_leaf(field[len("attributes."):], op, value)
    return _subscription_leaf(field[len("subscription."):], op, value)


def _node_sql(node: Mapping[str, Any]) -> ColumnElement[bool]:
    if "all" in node:
        return and_(*(_node_sql(child) for child in node["all"]))
    if "any" in node:
        return or_(*(_node_sql(child) for child in node["any"]))
    if "not" in node:
        # A leaf on a missing value is SQL NULL; two-valued logic needs NOT(NULL) to be true, so fold it first.
        return not_(func.coalesce(_node_sql(node["not"]), false()))
    return _leaf_sql(node)


def compile_tree(tree: Mapping[str, Any]) -> ColumnElement[bool]:
    """A WHERE condition on `contacts` (not tenant-scoped: the repository adds that) for a validated tree."""
    return _node_sql(tree)


# --- the reference evaluator -----------------------------------------------------------------------------

def _py_compare(actual: Any, op: str, value: Any) -> bool:
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
        "in": lambda a, b: a in b, "not_in": lambda a, b: a not in b,
        "contains": lambda a, b: ascii_lower_py(b) in ascii_lower_py(a),
        "starts_with": lambda a, b: ascii_lower_py(a).startswith(ascii_lower_py(b)),
    }
    return ops[op](actual, value)


def _py_leaf(node: Mapping[str, Any], contact: Mapping[str, Any]) -> bool:
    field, op, value = node["field"], node["op"], node["value"]
    if field in TEXT_FIELDS or field == "created_at":
        actual = contact.get(field)
        if op == "exists":
            return (actual is not None) == value
        if actual is None:
            return False
        return _py_compare(actual, op, datetime.fromisoformat(value) if field == "created_at" else value)
    if field == "tags":
        tags = contact.get("tags") or []
        if op == "exists":
            return bool(tags) == value
        if op == "has":
            return value in tags
        return (any if op == "has_any" else all)(tag in tags for tag in value)
    if field.startswith("subscription."):
        status = (contact.get("subscriptions") or {}).get(field[len("subscription."):])
        if op == "exists":
            return (status is not None) == value
        return status is not None and _py_compare(status, op, value)
    attributes = contact.get("attributes") or {}
    actual = attributes.get(field[len("attributes."):])
    if op == "exists":
        return (actual is not None) == value
    sample = value[0] if isinstance(value, list) else value
    if actual is None or _type_name(actual) != _type_name(sample):
        return False
    return _py_compare(actual, op, value)


def evaluate(tree: Mapping[str, Any], contact: Mapping[str, Any]) -> bool:
    """The semantics above in plain Python, for one contact given as a mapping of its fields plus
    `attributes`, `tags` and `subscriptions` ({channel: status}). Used to check the SQL, never to serve."""
    if "all" in tree:
        return all(evaluate(child, contact) for child in tree["all"])
    if "any" in tree:
        return any(evaluate(child, contact) for child in tree["any"])
    if "not" in tree:
        return not evaluate(tree["not"], contact)
    return _py_leaf(tree, contact)
