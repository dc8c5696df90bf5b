from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from clarion.audience.importer import EmailNormalizer, attribute_value
from clarion.audience.normalize import normalize_email


async def upload(api: httpx.AsyncClient, text: str | bytes) -> httpx.Response:
    data = text.encode() if isinstance(text, str) else text
    return await api.post("/api/v1/contacts/import", files={"file": ("contacts.csv", data, "text/csv")})


async def all_contacts(api: httpx.AsyncClient) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        page = (await api.get("/api/v1/contacts", params={"limit": 500, **({"cursor": cursor} if cursor else {})})).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


BAD_ROWS_CSV = (
    "email,phone,first_name,timezone,tags\n"            # 1
    "ada@example.com,+442079460958,Ada,Europe/London,vip\n"  # 2 good
    "not-an-email,,Bob,,\n"                             # 3 bad email
    "carl@example.com,12,Carl,,\n"                      # 4 bad phone
    "dora@example.com,,Dora,Mars/Olympus,\n"            # 5 bad timezone
    ",,Nobody,,\n"                                      # 6 neither email nor phone
    "eve@example.com,+4930901820,\"Eve\nmultiline\",,\n"  # 7-8 good, a quoted value spanning two lines
    "ada@example.com,+4930901820,Ada again,,\n"         # 9 in-file conflict: Ada's email, Eve's phone
    "fay@example.com,,Fay,,\n"                          # 10 good
)


async def test_bad_rows_are_reported_by_line_and_good_rows_imported(api: httpx.AsyncClient) -> None:
    response = await upload(api, BAD_ROWS_CSV)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["created"] == 3
    assert body["updated"] == 0
    rejected = {r["line"]: r["reason"] for r in body["rejected"]}
    assert sorted(rejected) == [3, 4, 5, 6, 9]
    assert "email" in rejected[3]
    assert "phone" in rejected[4]
    assert "timezone" in rejected[5]
    assert "email or a phone" in rejected[6]
    assert "different contacts" in rejected[9]
    contacts = {c["email"]: c for c in await all_contacts(api)}
    assert set(contacts) == {"ada@example.com", "eve@example.com", "fay@example.com"}
    assert contacts["ada@example.com"]["first_name"] == "Ada"
    assert contacts["eve@example.com"]["first_name"] == "Eve\nmultiline"
    subs = {ch: s["status"] for ch, s in contacts["ada@example.com"]["subscriptions"].items()}
    assert subs == {"email": "subscribed", "sms": "subscribed", "whatsapp": "subscribed"}
    assert {s["source"] for s in contacts["ada@example.com"]["subscriptions"].values()} == {"import"}
    assert set(contacts["fay@example.com"]["subscriptions"]) == {"email"}


async def test_upsert_by_email_then_by_phone(api: httpx.AsyncClient) -> None:
    first = await upload(api, "email,phone,first_name,city,tags\n"
                              "ann@example.com,+14155550101,Ann,Paris,a;b\n"
                              ",+14155550102,Ben,Rome,x\n")
    assert first.json() == {"created": 2, "updated": 0, "rejected": []}
    ann = next(c for c in await all_contacts(api) if c["email"] == "ann@example.com")
    await api.patch(f"/api/v1/contacts/{ann['id']}", json={"subscriptions": {"sms": "unsubscribed"}})

    second = await upload(api, "EMAIL,Phone,last_name,tier,tags\n"
                               "ANN@example.com,,Smith,gold,b;c\n"          # by email
                               "ben@example.com,+1 415 555 0102,Bond,,y\n"  # by phone, gains an email
                               "new@example.com,,,,\n")
    body = second.json()
    assert body == {"created": 1, "updated": 2, "rejected": []}
    contacts = {c["phone"] or c["email"]: c for c in await all_contacts(api)}
    ann = contacts["+14155550101"]
    assert ann["first_name"] == "Ann" and ann["last_name"] == "Smith"
    assert ann["attributes"] == {"city": "Paris", "tier": "gold"}
    assert ann["tags"] == ["a", "b", "c"]
    assert ann["subscriptions"]["sms"]["status"] == "unsubscribed"  # an import never changes consent
    ben = contacts["+14155550102"]
    assert ben["email"] == "ben@example.com"
    assert ben["attributes"] == {"city": "Rome"}
    assert ben["tags"] == ["x", "y"]
    assert set(ben["subscriptions"]) == {"sms", "whatsapp"}
    assert len(contacts) == 3


async def test_row_taking_another_contacts_phone_is_rejected(api: httpx.AsyncClient) -> None:
    await upload(api, "email,phone\nx@example.com,+14155550111\ny@example.com,+14155550112\n")
    response = await upload(api, "email,phone\nx@example.com,+14155550112\n")
    assert response.json()["rejected"][0]["line"] == 2
    assert response.json()["updated"] == 0


async def test_attribute_values_are_typed_and_numeric_filters_work(api: httpx.AsyncClient) -> None:
    response = await upload(api, "email,score,ratio,zip,big,flag,other,sci,empty\n"
                                 "t@example.com,42,3.5,0123,12345678901234567890,TRUE,false,1e5,\n")
    assert response.json()["created"] == 1
    contact = (await all_contacts(api))[0]
    assert contact["attributes"] == {"score": 42, "ratio": 3.5, "zip": "0123", "big": "12345678901234567890",
                                     "flag": True, "other": False, "sci": "1e5"}


def test_attribute_value_rule() -> None:
    assert attribute_value("-7") == -7
    assert attribute_value("0") == 0
    assert attribute_value("1.50") == "1.50"
    assert attribute_value("+5") == "+5"
    assert attribute_value("nan") == "nan"
    assert attribute_value("0.1") == 0.1
    assert attribute_value("-") == "-"


async def test_bom_and_header_case_and_blank_lines(api: httpx.AsyncClient) -> None:
    text = "\ufeff  E-Mail ,  EMAIL , First_Name \r\nx,bom@example.com,Zoe\r\n\r\n"
    response = await upload(api, text.encode("utf-8"))
    assert response.json() == {"created": 1, "updated": 0, "rejected": []}
    contact = (await all_contacts(api))[0]
    assert contact["email"] == "bom@example.com"
    assert contact["first_name"] == "Zoe"
    assert contact["attributes"] == {"E-Mail": "x"}


@pytest.mark.parametrize("payload, fragment", [
    (b"first_name,city\nAda,Paris\n", "email or a phone"),
    (b"", "empty"),
    (b"email\n\xff\xfeada@example.com\n", "UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not"),
    (b"email,Email\na@example.com,b@example.com\n", "twice"),
])
async def test_unusable_files_are_rejected_whole(api: httpx.AsyncClient, payload: bytes, fragment: str) -> None:
    response = await upload(api, payload)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert fragment in response.json()["detail"]
    assert await all_contacts(api) == []


async def test_import_needs_write_scope(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/contacts/import", headers=api.tenant.read_headers,  # type: ignore[attr-defined]
                              files={"file": ("c.csv", b"email\na@example.com\n", "text/csv")})
    assert response.status_code == 403


def _chunk_test_csv() -> str:
    lines = ["email,phone,first_name,tags,n"]
    for i in range(12):
        lines.append(f"user{i}@example.com,+1415555{i:04d},U{i},t{i % 3},{i}")
    lines += [
        "user1@example.com,,Again,extra,",       # update of a row created earlier
        ",+14155550002,,more,",                  # update by phone
        "user3@example.com,+14155550004,,,",     # conflict with rows 4 and 6
        "bad,,,,",
        "user20@example.com,+14155550020,,,",
        "user21@example.com,+14155550020,,,",    # phone taken by the row just above: updates it by phone
        "solo@example.com,,Solo,,",
        "solo@example.com,+14155550099,,,",      # gains a phone; its default consent stays the creating row's
    ]
    return "\n".join(lines) + "\n"


async def test_many_small_chunks_give_the_same_result_as_one(api: httpx.AsyncClient, app,  # type: ignore[no-untyped-def]
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import make_tenant

    monkeypatch.setattr(app.state.settings, "import_chunk_rows", 10_000)
    one_chunk = (await upload(api, _chunk_test_csv())).json()
    snapshot_one = sorted((c["email"], c["phone"], c["first_name"], c["tags"], c["attributes"],
                           sorted(c["subscriptions"])) for c in await all_contacts(api))

    other = await make_tenant(app.state.db, "Chunky")
    monkeypatch.setattr(app.state.settings, "import_chunk_rows", 3)
    api.headers.update(other.headers)
    many_chunks = (await upload(api, _chunk_test_csv())).json()
    snapshot_many = sorted((c["email"], c["phone"], c["first_name"], c["tags"], c["attributes"],
                            sorted(c["subscriptions"])) for c in await all_contacts(api))

    assert one_chunk == many_chunks
    assert one_chunk["created"] == 14 and one_chunk["updated"] == 4
    assert [r["line"] for r in one_chunk["rejected"]] == [16, 17]
    assert snapshot_one == snapshot_many
    assert len(snapshot_one) == 14
    assert ("solo@example.com", "+14155550099", "Solo", [], {}, ["email"]) in snapshot_one


@pytest.mark.parametrize("chunk_rows", [3, 10_000])
async def test_a_chunk_meeting_an_existing_contact_updates_it_whatever_the_chunking(
        api: httpx.AsyncClient, app, monkeypatch: pytest.MonkeyPatch, chunk_rows: int) -> None:  # type: ignore[no-untyped-def]
    """Chunks are first written without a lookup; the one that meets a known contact falls back to the lookup and
    must come out exactly as if it had looked up from the start: nothing of the failed attempt stays behind."""
    known = (await api.post("/api/v1/contacts", json={"email": "known@example.com", "first_name": "Old",
                                                       "subscriptions": {"email": "unsubscribed"}})).json()
    monkeypatch.setattr(app.state.settings, "import_chunk_rows", chunk_rows)
    lines = [f"fresh{i}@example.com,,Fresh{i}" for i in range(9)]
    lines.insert(6, "known@example.com,+14155550160,New")
    body = (await upload(api, "email,phone,first_name\n" + "\n".join(lines) + "\n")).json()
    assert body == {"created": 9, "updated": 1, "rejected": []}
    contacts = {c["email"]: c for c in await all_contacts(api)}
    assert len(contacts) == 10
    updated = contacts["known@example.com"]
    assert (updated["id"], updated["first_name"], updated["phone"]) == (known["id"], "New", "+14155550160")
    assert updated["subscriptions"] == known["subscriptions"]  # an import never changes existing consent


async def test_cli_imports_a_file(tmp_path: Path, database_url: str, db, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from clarion.cli.main import app as cli
    from clarion.config import get_settings
    from tests.conftest import make_tenant

    tenant = await make_tenant(db, "CLI")
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("email,phone,first_name\ncli@example.com,+14155550199,Cli\nnope,,\n")
    monkeypatch.setenv("CLARION_DATABASE_URL", database_url)
    monkeypatch.setenv("CLARION_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLARION_IMPORT_CHUNK_ROWS", "1")
    get_settings.cache_clear()
    try:
        # The command runs its own event loop; run it off this test's loop.
        import asyncio

        result = await asyncio.to_thread(CliRunner().invoke, cli, ["import", "contacts", str(csv_file),
                                                                   "--tenant", str(tenant.id)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout.strip().splitlines()[-1])
    assert body == {"created": 1, "updated": 0, "rejected": [{"line": 3, "reason": body["rejected"][0]["reason"]}]}
    assert "invalid email" in body["rejected"][0]["reason"]
    from clarion.audience import service

    async with db.transaction() as session:
        ids = await service.contact_ids_by_email(session, tenant.id, ["cli@example.com"])
    assert len(ids) == 1


ATEXT = "abcxyzABCXYZ0189_!#$%&'*+-/=?^`{|}~."
HOST = "abcxyzABCXYZ0189-."


@settings(max_examples=400, deadline=None)
@given(local=st.text(alphabet=ATEXT, min_size=0, max_size=70),
       domain=st.one_of(st.text(alphabet=HOST, min_size=0, max_size=30),
                        st.sampled_from(["example.com", "Example.COM", "localhost", "a.test", "x.local", "a.b.c.d",
                                         "xn--bcher-kva.de", "1.2.3.4", "a.123", "-a.com", "a-.com", "a" * 64 + ".com"])))
def test_email_fast_path_agrees_with_email_validator(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    try:
        expected: str | Exception = normalize_email(address)
    except ValueError as exc:
        expected = exc
    try:
        got: str | Exception = EmailNormalizer()(address)
    except ValueError as exc:
        got = exc
    if isinstance(expected, Exception):
        assert isinstance(got, ValueError) and str(got) == str(expected)
    else:
        assert got == expected


# --- the fast paths give the results of the plain rules ---------------------------------------------------

def _reference_row(line: int, cells: list[str], columns, default_region):  # type: ignore[no-untyped-def]
    """The row rules written out plainly on top of audience.normalize, with no caches and no shortcuts."""
    from clarion.audience import normalize
    from clarion.audience.import_validation import ImportRow, Rejection

    if any("\x00" in value for value in cells):
        return Rejection(line, "the row contains a NUL character")
    if len(cells) > columns.width:
        return Rejection(line, f"{len(cells)} cells but the header has {columns.width} columns")
    cells = cells + [""] * (columns.width - len(cells))

    def cell(name: str) -> str | None:
        index = columns.known.get(name)
        return (cells[index].strip() or None) if index is not None else None

    problems: list[str] = []
    values: dict[str, object] = {}
    for name, check in (("email", normalize.normalize_email),
                        ("phone", lambda v: normalize.normalize_phone(v, default_region))):
        value = cell(name)
        if value is not None:
            try:
                value = check(value)
            except ValueError as exc:
                problems.append(str(exc))
        values[name] = value
    if values["email"] is None and values["phone"] is None and not problems:
        problems.append("a contact needs an email or a phone")
    for name in ("first_name", "last_name"):
        values[name] = cell(name)
        if values[name] is not None and len(values[name]) > 200:  # type: ignore[arg-type]
            problems.append(f"{name} is longer than 200 characters")
    values["locale"] = cell("locale")
    if values["locale"] is not None:
        try:
            values["locale"] = normalize.normalize_locale(values["locale"])  # type: ignore[arg-type]
            if len(values["locale"]) > 35:  # type: ignore[arg-type]
                raise ValueError("locale is longer than 35 characters")
        except ValueError as exc:
            problems.append(str(exc))
    values["timezone"] = cell("timezone")
    if values["timezone"] is not None:
        try:
            values["timezone"] = normalize.normalize_timezone(values["timezone"])  # type: ignore[arg-type]
        except ValueError as exc:
            problems.append(str(exc))
    tags: list[str] = []
    if cell("tags") is not None:
        try:
            tags = normalize.normalize_tags(cell("tags").split(";"))  # type: ignore[union-attr]
        except ValueError as exc:
            problems.append(str(exc))
    attributes = {name: attribute_value(cells[i].strip()) for i, name in columns.attributes if cells[i].strip()}
    if problems:
        return Rejection(line, "; ".join(problems))
    return ImportRow(line, values["email"], values["phone"], values["first_name"], values["last_name"],
                     values["locale"], values["timezone"], json.dumps(tags), json.dumps(attributes))


PHONES = st.one_of(
    st.from_regex(r"\+1212[2-9][0-9]{6}", fullmatch=True),
    st.from_regex(r"\+(44|49|33|81|86|7|39|55)[0-9]{6,11}", fullmatch=True),
    st.from_regex(r"(00|\+)?[0-9 ()\-]{0,16}", fullmatch=True),
    st.sampled_from(["+442079460958", "+4930901820", "14694652751", "+1 415 555 0102", "020 7946 0958",
                     "+39 06 698 1", "+7 8 495 123 4567", "abc", "+", ""]),
)
CELL = st.text(alphabet=st.sampled_from("ab ;;Zé_-1.0\x00"), max_size=8)
ROWS = st.lists(st.tuples(
    st.one_of(st.sampled_from(["", "a@example.com", "B.c@Example.COM", "bad", "x@y", " d@e.org "]), CELL),
    PHONES,
    CELL, st.one_of(CELL, st.just("n" * 201)),
    st.sampled_from(["", "en", "de_DE", "pt-BR", "x", "en-" + "a" * 40, " fr "]),
    st.sampled_from(["", "Europe/Berlin", "Mars/Olympus", " Asia/Tokyo ", "UTC"]),
    st.sampled_from(["", "a;b;a", " ; ", "t" * 101, "vip", "x; y ;z"]),
    st.sampled_from(["", "42", "-7", "1.50", "TRUE", "0123", "3.5", "paris"]),
).map(list), max_size=30)


# Chunks whose emails are all empty or plain ASCII: the column-wide email check, not the per-address fallback
# (unless a domain is one email-validator refuses or changes).
PLAIN_EMAIL_ROWS = st.lists(st.tuples(
    st.sampled_from(["", "a@example.com", "B.c@Example.COM", "x.y+z@sub.example.org", "q@a.b", "t@xn--bcher-kva.de",
                     "h@Exam-ple.co"]),
    PHONES, CELL, CELL, st.just(""), st.just(""), st.just(""), st.sampled_from(["", "42", "paris"]),
).map(list), max_size=30)


@settings(max_examples=300, deadline=None)
@given(rows=st.one_of(ROWS, PLAIN_EMAIL_ROWS), default_region=st.sampled_from([None, "US", "GB"]),
       extra=st.integers(0, 2))
def test_chunk_validation_matches_the_plain_rules(rows: list[list[str]], default_region: str | None,
                                                  extra: int) -> None:
    from clarion.audience.import_validation import ImportRow, validate_chunk
    from clarion.audience.importer import parse_header

    columns = parse_header(["email", "phone", "first_name", "last_name", "locale", "timezone", "tags", "city"])
    records = [(i + 2, cells + ["extra"] * (extra if i % 5 == 4 else 0)) for i, cells in enumerate(rows)]
    got_rows, got_rejections = validate_chunk(columns, default_region, [line for line, _ in records],
                                              [cells for _, cells in records])
    expected = [_reference_row(line, cells, columns, default_region) for line, cells in records]
    assert got_rows == [tuple(r) for r in expected if isinstance(r, ImportRow)]
    assert got_rejections == [r for r in expected if not isinstance(r, ImportRow)]


async def test_imported_rows_are_stored_exactly_as_the_orm_stores_them(api: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    """The import writes pre-serialised values past SQLAlchemy's type processing: they must be the ORM's bytes."""
    from sqlalchemy import text

    created = await api.post("/api/v1/contacts", json={"email": "orm@example.com", "phone": "+14155550177",
                                                        "attributes": {"city": "Paris", "n": 3}, "tags": ["a", "é"]})
    assert created.status_code == 201, created.text
    response = await upload(api, "email,phone,city,n,tags\nimp@example.com,+14155550178,Paris,3,a;é\n")
    assert response.json()["created"] == 1
    columns = ("id", "tenant_id", "attributes", "tags", "created_at", "updated_at", "default_subscribed_channels")
    shape = ", ".join(f"typeof({c}), length({c})" if db.dialect == "sqlite" else f"pg_typeof({c})::text"
                      for c in columns)
    async with db.transaction() as session:
        rows = (await session.execute(text(f"SELECT email, {shape}, attributes, tags, default_subscribed_channels, "
                                           "created_via FROM contacts "
                                           "WHERE email IN ('orm@example.com', 'imp@example.com') ORDER BY email")
                                      )).all()
        subscription_rows = (await session.execute(text(
            "SELECT count(*) FROM contact_subscriptions s JOIN contacts c ON c.id = s.contact_id "
            "WHERE c.email IN ('orm@example.com', 'imp@example.com')"))).scalar_one()
    imported, orm = rows
    # same storage class, length and JSON text, column by column; the same default consent (email, sms, whatsapp)
    assert imported[1:-1] == orm[1:-1]
    assert (imported[-1], orm[-1]) == ("import", "api")
    assert subscription_rows == 0  # default consent is not stored as rows
    # and the ORM reads them back: ids, aware UTC datetimes, JSON
    listed = {c["email"]: c for c in await all_contacts(api)}
    imp = listed["imp@example.com"]
    assert imp["attributes"] == {"city": "Paris", "n": 3} and imp["tags"] == ["a", "é"]
    assert imp["created_at"].endswith(("Z", "+00:00"))
    assert (await api.get(f"/api/v1/contacts/{imp['id']}")).json()["phone"] == "+14155550178"


async def test_a_chunk_that_loses_a_race_stops_the_import_with_409_and_writes_nothing_after_it(pg_url: str) -> None:
    """PostgreSQL writes chunk N in a task while chunk N+1 is validated: a failure there must still end the
    import (409), with the chunks before it committed and nothing after it. race0 exists already, so the import
    looks addresses up from its first chunk on; another writer takes an email of chunk 2 after chunk 2 looked it
    up (its uncommitted insert holds the unique index until it commits)."""
    import asyncio
    import io

    import psycopg

    from clarion.audience import importer
    from clarion.db import Database
    from clarion.errors import Conflict
    from tests.conftest import make_tenant

    db = Database(pg_url)
    try:
        tenant = await make_tenant(db, "Race")
        async with db.transaction() as session:
            from clarion.audience import service
            from clarion.audience.schemas import ContactCreate

            await service.create_contact(session, tenant.id, ContactCreate(email="race0@example.com"))
        rows = [f"race{i}@example.com" for i in range(9)]
        csv_bytes = ("email\n" + "\n".join(rows) + "\n").encode()
        plain_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
        rival = await psycopg.AsyncConnection.connect(plain_url)
        committed_rival: list[asyncio.Task[None]] = []

        async def take_race4_then_commit_soon() -> None:
            await rival.execute(
                "INSERT INTO contacts (id, tenant_id, email, attributes, tags, created_at, updated_at) "
                "VALUES (gen_random_uuid(), %s, 'race4@example.com', '{}', '[]', now(), now())", (tenant.id,))

            async def commit_later() -> None:
                await asyncio.sleep(0.5)
                await rival.commit()
            committed_rival.append(asyncio.create_task(commit_later()))

        chunks_done = 0
        async with db.sessions() as session:
            async def after_chunk() -> None:
                nonlocal chunks_done
                await session.commit()
                chunks_done += 1
                if chunks_done == 1:
                    await take_race4_then_commit_soon()

            try:
                await importer.import_csv(session, tenant.id, io.BytesIO(csv_bytes), default_region=None,
                                          chunk_rows=3, after_chunk=after_chunk)
                raise AssertionError("the import should have stopped with a conflict")
            except Conflict as exc:
                assert exc.status == 409 and "changed while the import ran" in exc.message
            await session.rollback()
        await asyncio.gather(*committed_rival)
        await rival.close()
        async with db.transaction() as session:
            from sqlalchemy import text

            stored = (await session.execute(text("SELECT email FROM contacts WHERE tenant_id = :t ORDER BY email"),
                                            {"t": tenant.id})).scalars().all()
        # chunk 1 (race0–2) committed; chunk 2 (race3–5) failed whole; chunk 3 (race6–8) never written
        assert stored == ["race0@example.com", "race1@example.com", "race2@example.com", "race4@example.com"]
        assert chunks_done == 1
    finally:
        await db.dispose()


async def test_the_owner_lookup_probes_the_unique_indexes_whatever_the_statistics(db) -> None:  # type: ignore[no-untyped-def]
    """The per-chunk lookup must cost what the chunk holds, not what the tenant holds: one probe of the unique
    (tenant_id, email) / (tenant_id, phone) index per address, never a scan of the tenant hashed against the list
    (what the planners pick without fresh statistics, which a growing import never has)."""
    import io

    from sqlalchemy import event

    from clarion.audience import importer
    from clarion.audience.import_repository import ContactImportRepo
    from tests.conftest import make_tenant

    tenant = await make_tenant(db, "Probe")
    rows = "\n".join(f"probe{i}@example.com,+1415556{i:04d}" for i in range(3000))
    async with db.transaction() as session:
        await importer.import_csv(session, tenant.id, io.BytesIO(f"email,phone\n{rows}\n".encode()),
                                  default_region=None, chunk_rows=5000)
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append((statement, parameters))

    async with db.transaction() as session:
        event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
        try:
            found = await ContactImportRepo(session, tenant.id).find_owners(
                ["probe7@example.com", "nobody@example.com"], ["+14155560008"])
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
        statement, parameters = statements[-1]  # the lookup itself (PostgreSQL may check its statistics first)
        explain = "EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN "
        raw = (await session.connection()).exec_driver_sql
        plan = "\n".join(str(row[-1]) for row in (await raw(explain + statement, parameters)).all())
    assert sorted(c.email for c in found) == ["probe7@example.com", "probe8@example.com"]
    if db.dialect == "sqlite":  # SQLite names a UNIQUE constraint's index itself
        assert "(tenant_id=? AND email=?)" in plan and "(tenant_id=? AND phone=?)" in plan, plan
    else:
        assert "Index Cond: ((tenant_id = " in plan and "AND ((email)::text = j.value))" in plan, plan
        assert "AND ((phone)::text = j_1.value))" in plan, plan
        assert "uq_contacts_tenant_id_email" in plan and "uq_contacts_tenant_id_phone" in plan, plan
    assert "Hash" not in plan and "SCAN c " not in plan, plan


async def test_imported_ids_are_version_7_uuids_rising_in_file_order_between_ids_made_before_and_after(
        api: httpx.AsyncClient, app, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """On SQLite the ids of a chunk are built by its INSERT … SELECT from stamps reserved in kit.ids; on
    PostgreSQL in Python. Either way: the layout and sequence of new_id, across chunks and the counter's roll."""
    from clarion.kit.ids import new_id

    monkeypatch.setattr(app.state.settings, "import_chunk_rows", 1500)  # several chunks
    rows = 5000  # more than one millisecond's 4,096 counter values
    before = new_id()
    response = await upload(api, "email,first_name,n\n" + "".join(f"id{i}@example.com,N{i},{i}\n" for i in range(rows)))
    after = new_id()
    assert response.json() == {"created": rows, "updated": 0, "rejected": []}
    contacts = await all_contacts(api)
    assert sorted((c["email"], c["first_name"], c["attributes"]) for c in contacts) == sorted(
        (f"id{i}@example.com", f"N{i}", {"n": i}) for i in range(rows))  # every value in its own row and column
    by_email = {c["email"]: uuid.UUID(c["id"]) for c in contacts}
    ids = [by_email[f"id{i}@example.com"] for i in range(rows)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert [before, *ids, after] == sorted({before, *ids, after})  # strictly increasing, file order, no repeat
    assert len({i.hex[-16:] for i in ids}) == rows  # random tails differ
