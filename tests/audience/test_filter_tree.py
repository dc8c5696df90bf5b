"""The filter tree: validation messages, and the property that SQLite, PostgreSQL and the plain-Python
reference evaluator select exactly the same contacts for any valid tree."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, false, func, select
from sqlalchemy.orm import Session

from clarion.audience.consent import channel_bits
from clarion.audience.segments.filters import MAX_DEPTH, compile_tree, evaluate, validate_tree
from clarion.audience.segments.service import target_audience_to_filter, validate_filter
from clarion.config import to_sync_url
from clarion.errors import Invalid
from clarion.models import Contact, ContactSubscription, Tenant
from clarion.models.audience import CHANNELS, SUBSCRIPTION_STATUSES

# --- validation ------------------------------------------------------------------------------------------


def _invalid(tree: Any) -> Invalid:
    with pytest.raises(Invalid) as caught:
        validate_filter(tree)
    return caught.value


def test_unknown_field_names_the_node_path() -> None:
    tree = {"all": [{"field": "email", "op": "eq", "value": "a@b.c"},
                    {"field": "tags", "op": "has", "value": "x"},
                    {"any": [{"field": "emial", "op": "eq", "value": "x"}]}]}
    error = _invalid(tree)
    assert error.message.startswith("filter.all[2].any[0]: unknown field 'emial'")
    assert error.errors is not None
    assert error.errors[0]["loc"] == ["body", "filter", "all", 2, "any", 0]


@pytest.mark.parametrize(("tree", "path", "words"), [
    ({"field": "email", "op": "has", "value": "x"}, "filter", "does not apply"),
    ({"field": "email", "op": "like", "value": "x"}, "filter", "unknown op 'like'"),
    ({"field": "email", "op": "eq", "value": 3}, "filter", "must be a string"),
    ({"field": "email", "op": "in", "value": "a"}, "filter", "needs a list"),
    ({"field": "email", "op": "in", "value": []}, "filter", "non-empty list"),
    ({"field": "email", "op": "eq"}, "filter", "needs a 'value'"),
    ({"all": []}, "filter.all", "at least one node"),
    ({"any": {"field": "email"}}, "filter.any", "list of nodes"),
    ({"not": [1]}, "filter.not", "must be an object"),
    ([{"field": "email", "op": "exists"}], "filter", "must be an object, got list"),
    ({"field": "email", "op": "eq", "value": "x", "extra": 1}, "filter", "unexpected key 'extra'"),
    ({"all": [{"field": "email", "op": "exists"}], "any": []}, "filter", "takes no other keys"),
    ({"field": "attributes.x'); DROP TABLE contacts;--", "op": "eq", "value": "x"}, "filter",
     "invalid attribute key"),
    ({"field": "attributes.a.b", "op": "eq", "value": "x"}, "filter", "invalid attribute key"),
    ({"field": "attributes.", "op": "exists"}, "filter", "invalid attribute key"),
    ({"field": "attributes.n", "op": "gt", "value": True}, "filter", "string or number"),
    ({"field": "attributes.n", "op": "in", "value": [1, "1"]}, "filter", "all be strings, all numbers"),
    ({"field": "attributes.n", "op": "eq", "value": None}, "filter", "got null"),
    ({"field": "attributes.n", "op": "eq", "value": {"$gt": 1}}, "filter", "got object"),
    ({"field": "attributes.n", "op": "eq", "value": 2**60}, "filter", "between"),
    ({"field": "created_at", "op": "gt", "value": "2024-01-01T00:00:00"}, "filter", "no timezone"),
    ({"field": "created_at", "op": "gt", "value": "yesterday"}, "filter", "not an ISO 8601"),
    ({"field": "created_at", "op": "contains", "value": "2024"}, "filter", "does not apply"),
    ({"field": "subscription.fax", "op": "eq", "value": "subscribed"}, "filter", "unknown channel 'fax'"),
    ({"field": "subscription.email", "op": "eq", "value": "maybe"}, "filter", "must be one of"),
    ({"field": "tags", "op": "has_all", "value": ["a", 1]}, "filter.value[1]", "must be a string"),
    ({"field": "tags", "op": "eq", "value": "vip"}, "filter", "does not apply"),
    ({"field": "email", "op": "exists", "value": "yes"}, "filter", "true or false"),
    ({"field": "(SELECT password FROM api_keys)", "op": "eq", "value": "x"}, "filter", "unknown field"),
])
def test_malformed_trees_are_rejected_with_their_path(tree: Any, path: str, words: str) -> None:
    error = _invalid(tree)
    assert error.status == 422
    assert error.message.startswith(f"{path}: "), error.message
    assert words in error.message


def test_depth_and_size_are_bounded() -> None:
    deep: dict[str, Any] = {"field": "email", "op": "exists"}
    for _ in range(MAX_DEPTH):
        deep = {"not": deep}
    assert "deeper than" in _invalid(deep).message
    wide = {"any": [{"field": "email", "op": "eq", "value": str(i)} for i in range(600)]}
    assert "more than 500 nodes" in _invalid(wide).message


def test_normalisation_is_idempotent() -> None:
    tree = {"all": [{"field": "created_at", "op": "gte", "value": "2024-03-01T10:00:00+02:00"},
                    {"field": "phone", "op": "exists"}]}
    normalised = validate_filter(tree)
    assert normalised["all"][0]["value"] == "2024-03-01T08:00:00+00:00"
    assert normalised["all"][1]["value"] is True
    assert validate_filter(normalised) == normalised


def test_target_audience_translates_to_attribute_equality_and_tags_has_all() -> None:
    tree = target_audience_to_filter({"customer_tier": "premium", "city": ["New York", "Boston"],
                                      "tags": ["fashion", "vip"]})
    assert tree == {"all": [
        {"field": "attributes.customer_tier", "op": "eq", "value": "premium"},
        {"field": "attributes.city", "op": "in", "value": ["New York", "Boston"]},
        {"field": "tags", "op": "has_all", "value": ["fashion", "vip"]},
    ]}
    with pytest.raises(Invalid) as caught:
        target_audience_to_filter(["premium"])  # type: ignore[arg-type]
    assert caught.value.message.startswith("target_audience:")
    with pytest.raises(Invalid) as caught:
        target_audience_to_filter({"tier": {"in": ["a"]}})
    assert caught.value.message.startswith("target_audience.tier:")


# --- the property: three evaluators, one answer ----------------------------------------------------------

NAMES = ["Ada", "ada", "ADA", "adam", "Zoë", "ZOË", "zoë", "Émile", "émile", "a%b", "a_b", "aXb", "100%",
         "back\\slash", "", " ", "o'brien", "x'); DROP TABLE contacts;--", "Straße", "STRASSE", "İlker", "b", "B"]
TEXT_ALPHABET = "aAbBzZ%_\\ éÉßöÖ'\"-0İ"
# Short needles that sit on the edges: ASCII vs non-ASCII case, LIKE wildcards, escapes, multi-letter folds.
FRAGMENTS = ["a", "A", "ad", "AD", "é", "É", "ë", "Ë", "i", "İ", "ß", "ss", "SS", "%", "_", "\\", "'", "a%",
             "a_", "x%", "x_", "b", "B", "z", "Z", "mile", "MILE", "@ex", "0"]
ATTRIBUTE_KEYS = ["tier", "score", "city", "vip", "Tier", "odd key"]
ATTRIBUTE_VALUES: list[Any] = ["premium", "Premium", "gold", "New York", "new york", "a%", "", 0, 1, 2, -3, 1.5,
                               2.0, 0.1, 10, True, False, None, [1, 2], {"nested": "premium"}, "1", "true"]
TAGS = ["vip", "VIP", "fashion", "a%", "é", "sale"]
LOCALES = ["en", "en-US", "de-DE", "fr", None]
ZONES = ["Europe/Berlin", "America/New_York", "UTC", None]
BASE_TIME = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _contact_rows(seed: int = 2024, n: int = 90) -> list[dict[str, Any]]:
    """A corpus built to hit the edges: mixed case, LIKE wildcards, non-ASCII, mixed JSON types, gaps."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        attributes = {key: rnd.choice(ATTRIBUTE_VALUES) for key in ATTRIBUTE_KEYS if rnd.random() < 0.6}
        rows.append({
            "email": None if rnd.random() < 0.15 else f"{rnd.choice(['a', 'A', 'ad', 'x%', 'x_', 'é'])}{i}@ex.com",
            "phone": None if rnd.random() < 0.5 else f"+4930{100000 + i}",
            "first_name": rnd.choice(NAMES + [None]),
            "last_name": rnd.choice(NAMES + [None]),
            "locale": rnd.choice(LOCALES),
            "timezone": rnd.choice(ZONES),
            "created_at": BASE_TIME + timedelta(minutes=rnd.randrange(0, 600), microseconds=rnd.randrange(0, 3)),
            "attributes": attributes,
            "tags": rnd.sample(TAGS, rnd.randrange(0, 4)),
            # Consent as stored: rows for some channels, and channels subscribed by default (no row needed).
            "consent_rows": {ch: rnd.choice(SUBSCRIPTION_STATUSES) for ch in CHANNELS if rnd.random() < 0.4},
            "default_channels": [ch for ch in CHANNELS if rnd.random() < 0.35],
        })
    for row in rows:
        # What the reference evaluator sees: a row decides; else a default channel is subscribed.
        row["subscriptions"] = {**{ch: "subscribed" for ch in row["default_channels"]}, **row["consent_rows"]}
    return rows


@dataclass
class Corpus:
    engines: dict[str, Engine]
    tenant_ids: dict[str, uuid.UUID]
    contacts: dict[str, list[dict[str, Any]]]  # per backend: the rows with their ids


def _load(engine: Engine, rows: list[dict[str, Any]]) -> tuple[uuid.UUID, list[dict[str, Any]]]:
    with Session(engine) as session, session.begin():
        tenant = Tenant(name="filter-property")
        session.add(tenant)
        session.flush()
        stored = []
        for row in rows:
            fields = {k: v for k, v in row.items() if k not in ("subscriptions", "consent_rows", "default_channels")}
            contact = Contact(tenant_id=tenant.id, default_subscribed_channels=channel_bits(row["default_channels"]),
                              **fields)
            contact.subscriptions = [ContactSubscription(tenant_id=tenant.id, channel=ch, status=status)
                                     for ch, status in row["consent_rows"].items()]
            session.add(contact)
            session.flush()
            stored.append({**row, "id": contact.id})
        return tenant.id, stored


@pytest.fixture(scope="module")
def corpus(sqlite_url: str, pg_url: str) -> Iterator[Corpus]:
    engines = {"sqlite": create_engine(to_sync_url(sqlite_url)), "postgresql": create_engine(to_sync_url(pg_url))}
    rows = _contact_rows()
    tenant_ids, contacts = {}, {}
    for name, engine in engines.items():
        tenant_ids[name], contacts[name] = _load(engine, rows)
    yield Corpus(engines, tenant_ids, contacts)
    for engine in engines.values():
        engine.dispose()


def _texts() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NAMES), st.sampled_from(FRAGMENTS), st.text(TEXT_ALPHABET, max_size=4))


def _created_at() -> st.SearchStrategy[str]:
    offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])
    return st.builds(lambda minutes, tz: (BASE_TIME + timedelta(minutes=minutes)).astimezone(tz).isoformat(),
                     st.integers(-10, 610), offsets)


def _text_leaf(field: str) -> st.SearchStrategy[dict[str, Any]]:
    scalar_ops = st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "contains", "starts_with"])
    return st.one_of(
        st.builds(lambda op, v: {"field": field, "op": op, "value": v}, scalar_ops, _texts()),
        st.builds(lambda op, v: {"field": field, "op": op, "value": v}, st.sampled_from(["in", "not_in"]),
                  st.lists(_texts(), min_size=1, max_size=3)),
        st.builds(lambda v: {"field": field, "op": "exists", "value": v}, st.booleans()),
    )


def _attribute_leaf() -> st.SearchStrategy[dict[str, Any]]:
    field = st.sampled_from(ATTRIBUTE_KEYS).map(lambda key: f"attributes.{key}")
    strings = st.one_of(st.sampled_from([v for v in ATTRIBUTE_VALUES if isinstance(v, str)]), _texts())
    numbers = st.one_of(st.integers(-4, 11), st.sampled_from([0.1, 1.5, -2.5, 2.0, 1e-5]))
    booleans = st.booleans()
    leaf = lambda op, v, f: {"field": f, "op": op, "value": v}
    return st.one_of(
        st.builds(leaf, st.sampled_from(["eq", "ne"]), st.one_of(strings, numbers, booleans), field),
        st.builds(leaf, st.sampled_from(["gt", "gte", "lt", "lte"]), st.one_of(strings, numbers), field),
        st.builds(leaf, st.sampled_from(["contains", "starts_with"]), strings, field),
        st.builds(leaf, st.sampled_from(["in", "not_in"]),
                  st.one_of(*(st.lists(s, min_size=1, max_size=3) for s in (strings, numbers, booleans))), field),
        st.builds(leaf, st.just("exists"), booleans, field),
    )


def _leaves() -> st.SearchStrategy[dict[str, Any]]:
    leaf = lambda f, op, v: {"field": f, "op": op, "value": v}
    text_fields = ["email", "phone", "first_name", "last_name", "locale", "timezone"]
    channels = st.sampled_from(CHANNELS).map(lambda ch: f"subscription.{ch}")
    statuses = st.sampled_from(SUBSCRIPTION_STATUSES)
    names = st.sampled_from(["first_name", "last_name", "email"]).flatmap(_text_leaf)
    return st.one_of(
        names,
        st.sampled_from(text_fields).flatmap(_text_leaf),
        _attribute_leaf(),
        names,
        _attribute_leaf(),
        st.builds(leaf, st.just("created_at"), st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
                  _created_at()),
        st.builds(leaf, st.just("tags"), st.just("has"), st.sampled_from(TAGS)),
        st.builds(leaf, st.just("tags"), st.sampled_from(["has_any", "has_all"]),
                  st.lists(st.sampled_from(TAGS), min_size=1, max_size=3)),
        st.builds(leaf, st.just("tags"), st.just("exists"), st.booleans()),
        st.builds(leaf, channels, st.sampled_from(["eq", "ne"]), statuses),
        st.builds(leaf, channels, st.sampled_from(["in", "not_in"]), st.lists(statuses, min_size=1, max_size=2)),
        st.builds(leaf, channels, st.just("exists"), st.booleans()),
    )


trees = st.recursive(
    _leaves(),
    lambda children: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, children),
    ),
    max_leaves=8,
)


def _sql_ids(corpus: Corpus, backend: str, tree: dict[str, Any]) -> set[uuid.UUID]:
    condition = compile_tree(tree)
    stmt = select(Contact.id).where(Contact.tenant_id == corpus.tenant_ids[backend], condition)
    with Session(corpus.engines[backend]) as session:
        return set(session.execute(stmt).scalars().all())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees)
def test_sqlite_postgresql_and_python_select_the_same_contacts(corpus: Corpus, tree: dict[str, Any]) -> None:
    normalised = validate_tree(tree)
    expected = {row["id"] for row in corpus.contacts["sqlite"] if evaluate(normalised, row)}
    assert _sql_ids(corpus, "sqlite", normalised) == expected
    by_position = {row["id"]: i for i, row in enumerate(corpus.contacts["sqlite"])}
    pg_ids = {row["id"]: i for i, row in enumerate(corpus.contacts["postgresql"])}
    expected_pg = {row["id"] for row in corpus.contacts["postgresql"] if evaluate(normalised, row)}
    assert _sql_ids(corpus, "postgresql", normalised) == expected_pg
    # Same rows, inserted in the same order into both databases: the answers must name the same positions.
    assert sorted(by_position[i] for i in expected) == sorted(pg_ids[i] for i in expected_pg)


def test_the_corpus_makes_the_property_meaningful(corpus: Corpus) -> None:
    """Guard against a vacuous property: typical leaves select some but not all contacts."""
    total = len(corpus.contacts["sqlite"])
    for tree in ({"field": "first_name", "op": "contains", "value": "ADA"},
                 {"field": "attributes.score", "op": "gt", "value": 1},
                 {"field": "first_name", "op": "starts_with", "value": "a%"},
                 {"not": {"field": "attributes.tier", "op": "eq", "value": "premium"}},
                 {"field": "subscription.email", "op": "ne", "value": "subscribed"}):
        for backend in ("sqlite", "postgresql"):
            assert 0 < len(_sql_ids(corpus, backend, validate_tree(tree))) < total, (backend, tree)


def test_the_corpus_stores_consent_both_ways(corpus: Corpus) -> None:
    """Consent by default (no row), overridden by a row, and by a row alone all occur, and SQL tells them apart."""
    rows = corpus.contacts["postgresql"]
    by_default = {r["id"] for r in rows if "email" in r["default_channels"] and "email" not in r["consent_rows"]}
    overridden = {r["id"] for r in rows if "email" in r["default_channels"]
                  and r["consent_rows"].get("email", "subscribed") != "subscribed"}
    by_row = {r["id"] for r in rows if "email" not in r["default_channels"]
              and r["consent_rows"].get("email") == "subscribed"}
    assert by_default and overridden and by_row
    for backend in ("sqlite", "postgresql"):
        positions = {row["id"]: i for i, row in enumerate(corpus.contacts[backend])}
        subscribed = {positions[i] for i in _sql_ids(corpus, backend, validate_tree(
            {"field": "subscription.email", "op": "eq", "value": "subscribed"}))}
        pg_positions = {row["id"]: i for i, row in enumerate(rows)}
        assert {pg_positions[i] for i in by_default | by_row} <= subscribed
        assert not {pg_positions[i] for i in overridden} & subscribed


def _leaf_grid() -> list[dict[str, Any]]:
    """Every field × op × edge value as a single leaf (invalid combinations skipped), each also negated."""
    numbers: list[Any] = [0, 1, 1.5, 2, -3, 0.1, 10]
    strings = sorted(set(FRAGMENTS + NAMES + [v for v in ATTRIBUTE_VALUES if isinstance(v, str)]))
    candidates: list[dict[str, Any]] = []
    for field in ("first_name", "last_name", "email", "locale", "timezone", "phone"):
        for op in ("eq", "ne", "gt", "gte", "lt", "lte", "contains", "starts_with"):
            candidates += [{"field": field, "op": op, "value": v} for v in strings]
        candidates += [{"field": field, "op": "in", "value": strings[i:i + 3]} for i in range(0, len(strings), 3)]
    for key in ("tier", "score", "vip"):
        field = f"attributes.{key}"
        for op in ("eq", "ne", "gt", "gte", "lt", "lte", "contains", "starts_with", "in", "not_in"):
            for v in strings[:12] + numbers + [True, False]:
                candidates.append({"field": field, "op": op, "value": [v] if op in ("in", "not_in") else v})
        candidates += [{"field": field, "op": "exists", "value": b} for b in (True, False)]
    for tag in TAGS:
        candidates.append({"field": "tags", "op": "has", "value": tag})
    for channel in CHANNELS:
        field = f"subscription.{channel}"
        for status in SUBSCRIPTION_STATUSES:
            for op in ("eq", "ne"):
                candidates.append({"field": field, "op": op, "value": status})
        for op in ("in", "not_in"):
            candidates += [{"field": field, "op": op, "value": ["subscribed", "bounced"]},
                           {"field": field, "op": op, "value": ["unsubscribed"]}]
        candidates += [{"field": field, "op": "exists", "value": b} for b in (True, False)]
    grid = []
    for leaf in candidates:
        try:
            normalised = validate_tree(leaf)
        except Invalid:
            continue
        grid += [normalised, {"not": normalised}]
    return grid


def _truth_table(corpus: Corpus, backend: str, tree_list: list[dict[str, Any]]) -> list[set[uuid.UUID]]:
    """One query per 40 trees: each tree becomes a boolean column, so thousands of leaves check quickly."""
    answers: list[set[uuid.UUID]] = []
    with Session(corpus.engines[backend]) as session:
        for start in range(0, len(tree_list), 40):
            batch = tree_list[start:start + 40]
            columns = [func.coalesce(compile_tree(t), false()) for t in batch]
            rows = session.execute(select(Contact.id, *columns)
                                   .where(Contact.tenant_id == corpus.tenant_ids[backend])).all()
            answers += [{row[0] for row in rows if row[1 + i]} for i in range(len(batch))]
    return answers


def test_every_single_leaf_agrees_on_both_databases(corpus: Corpus) -> None:
    grid = _leaf_grid()
    assert len(grid) > 1000
    for backend in ("sqlite", "postgresql"):
        rows = corpus.contacts[backend]
        for tree, found in zip(grid, _truth_table(corpus, backend, grid), strict=True):
            expected = {row["id"] for row in rows if evaluate(tree, row)}
            assert found == expected, (backend, tree)
