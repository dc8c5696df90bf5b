"""PostgreSQL imports send a chunk as COPY text built by the importer (import_repository.copy_text): every value
comes back exactly as it went in, whatever characters it holds; and the stored contacts are the same on both
databases."""

from __future__ import annotations

import re

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clarion.audience.import_repository import copy_text
from tests.audience.test_import import all_contacts, upload

_UNESCAPE = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def parse_copy_text(text: str) -> list[list[str | None]]:
    """PostgreSQL's reading of text-format COPY (the subset copy_text writes): lines end at a raw newline, values
    end at a raw tab, \\N alone is NULL, and a backslash escapes the next character."""
    assert text.endswith("\n")
    rows = []
    for line in text[:-1].split("\n"):
        rows.append([None if field == "\\N" else re.sub(r"\\(.)", lambda m: _UNESCAPE[m.group(1)], field)
                     for field in line.split("\t")])
    return rows


# Runs of these spell every escape case: \N inside or as a whole value, a backslash before a tab, CR LF…
tricky_text = st.text(alphabet=["a", "é", "\\", "N", "\t", "\n", "\r", " ", "{", '"'], max_size=12)
optional_text = st.none() | tricky_text


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(optional_text, optional_text, optional_text, optional_text, optional_text,
                          optional_text, tricky_text, tricky_text), min_size=1, max_size=5))
@example([("a@b.c", None, "x\\Ny", "tab\there", "en", None, '{"k": "\\u00e9"}', "[]")])
@example([(None, None, None, None, None, None, "{}", "[]")])
def test_copy_text_gives_back_every_value(values: list[tuple[str | None, ...]]) -> None:
    rows = [("0" * 32, "tenant", *fields, "2026-12-07T10:00:00+00:00", "2026-12-07T10:00:00+00:00", 3, "import")
            for fields in values]
    parsed = parse_copy_text(copy_text(rows))
    assert parsed == [[None if value is None else str(value) for value in row] for row in rows]


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
