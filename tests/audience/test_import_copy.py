"""PostgreSQL imports send a chunk in COPY's binary format, built by the importer (import_repository.copy_binary):
every value comes back exactly as it went in, whatever characters it holds; and the stored contacts are the same on
both databases."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clarion.audience.consent import default_bits_of
from clarion.audience.import_repository import COPY_SIGNATURE, COPY_TRAILER, CopyShared, copy_binary
from tests.audience.test_import import all_contacts, upload


def parse_copy_binary(data: bytes) -> list[list[bytes | None]]:
    """PostgreSQL's reading of binary-format COPY: after the signature, per row a field count and each field's
    32-bit length (-1: NULL) and bytes, until the trailer."""
    assert data.startswith(COPY_SIGNATURE) and data.endswith(COPY_TRAILER)
    position, rows = len(COPY_SIGNATURE), []
    while data[position:position + 2] != COPY_TRAILER:
        count = int.from_bytes(data[position:position + 2], "big")
        position += 2
        row: list[bytes | None] = []
        for _ in range(count):
            length = int.from_bytes(data[position:position + 4], "big", signed=True)
            position += 4
            row.append(None if length == -1 else data[position:position + length])
            position += max(length, 0)
        rows.append(row)
    assert position + 2 == len(data)
    return rows


tricky_text = st.text(alphabet=["a", "é", "\\", "N", "\t", "\n", "\r", " ", "{", '"', "\x01", "\xff", "€", "😀"],
                      max_size=12)
optional_text = st.none() | tricky_text


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(optional_text, optional_text, optional_text, optional_text, optional_text,
                          optional_text, st.dictionaries(tricky_text, tricky_text, max_size=2),
                          st.lists(tricky_text, max_size=2)), min_size=1, max_size=5),
       st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)))
@example([("a@b.c", None, "x" * 300 + "é" * 800, "tab\there", "en", None, {"k": "é"}, [])], datetime(2026, 12, 7))
def test_copy_binary_gives_back_every_value(values: list[tuple[object, ...]], now: datetime) -> None:
    tenant = uuid.uuid4()
    stamp = now.replace(tzinfo=UTC)
    rows = [(line, *fields[:6], json.dumps(fields[7]), json.dumps(fields[6])) for line, fields in enumerate(values)]
    parsed = parse_copy_binary(COPY_SIGNATURE + copy_binary(rows, CopyShared(tenant, stamp, "import")) + COPY_TRAILER)
    assert len(parsed) == len(rows)
    ids = []
    for row, fields in zip(rows, parsed, strict=True):
        assert len(fields) == 14
        ids.append(uuid.UUID(bytes=fields[0]))
        assert fields[1] == tenant.bytes
        assert [None if f is None else f.decode() for f in fields[2:8]] == list(row[1:7])
        assert fields[8] == b"\x01" + row[8].encode() and fields[9] == b"\x01" + row[7].encode()  # JSONB, version 1
        micros = int.from_bytes(fields[10], "big", signed=True)
        assert datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros) == stamp
        assert fields[11] == fields[10]
        assert int.from_bytes(fields[12], "big", signed=True) == default_bits_of(row[1], row[2])
        assert fields[13] == b"import"
    assert ids == sorted(set(ids)) and all(i.version == 7 for i in ids)


async def test_values_that_copy_must_escape_are_stored_as_written(api: httpx.AsyncClient) -> None:
    csv = ("email,first_name,last_name,city,tags\n"
           'esc1@example.com,"Tab\there","Back\\slash",München,a;é\n'
           'esc2@example.com,"\\N","line\nbreak",\\t,"quote""d"\n'
           'esc3@example.com,"cr\rhere",plain,"{""json"": 1}",x\n')
    response = await upload(api, csv)
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 3, "updated": 0, "rejected": []}
    stored = {c["email"]: (c["first_name"], c["last_name"], c["attributes"], c["tags"])
              for c in await all_contacts(api)}
    assert stored == {
        "esc1@example.com": ("Tab\there", "Back\\slash", {"city": "München"}, ["a", "é"]),
        "esc2@example.com": ("\\N", "line\nbreak", {"city": "\\t"}, ['quote"d']),
        "esc3@example.com": ("cr\rhere", "plain", {"city": '{"json": 1}'}, ["x"]),
    }
