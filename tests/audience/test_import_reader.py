"""The importer reads CSV rows in bulk and numbers them afterwards (importer.RecordReader): the lines, cells and
malformed lines it gives are those of reading one row at a time and asking the reader where each one starts,
whatever the values hold (line breaks of every kind, quotes, blank lines) and however the reads are sliced."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import example, given, settings
from hypothesis import strategies as st

from clarion.audience.import_validation import Rejection
from clarion.audience.importer import RecordReader


def one_row_at_a_time(text: str) -> tuple[list[int], list[list[str]], list[Rejection]]:
    """The plain reading: each row's line is the reader's line count before it, plus one."""
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    lines: list[int] = []
    cells: list[list[str]] = []
    malformed: list[Rejection] = []
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            malformed.append(Rejection(line, f"malformed CSV: {exc}"))
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        lines.append(line)
        cells.append(row)
    return lines, cells, malformed


def in_slices(text: str, sizes: list[int]) -> tuple[list[int], list[list[str]], list[Rejection]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    source = RecordReader(reader)
    lines: list[int] = []
    cells: list[list[str]] = []
    malformed: list[Rejection] = []
    turn = 0
    while not source.exhausted:
        got_lines, got_cells, got_malformed = source.read(sizes[turn % len(sizes)])
        turn += 1
        lines += got_lines
        cells += got_cells
        malformed += got_malformed
    return lines, cells, malformed


@contextmanager
def field_limit(limit: int) -> Iterator[None]:
    """A small field size limit, so long values make the reader raise csv.Error mid-file."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


VALUE = st.text(alphabet=["a", "b", " ", ",", '"', "\n", "\r", "é"], max_size=12)
ROW = st.one_of(
    st.lists(VALUE, min_size=0, max_size=4).map(lambda cells: ("row", cells)),
    st.sampled_from(["\n", "\r\n", "   \n", "\r", 'x"y,z\n', '"unterminated\n']).map(lambda raw: ("raw", raw)),
)


def as_csv(rows: list[tuple[str, object]], terminator: str) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=terminator)
    writer.writerow(["e", "n"])  # shorter than the smallest field limit
    for kind, value in rows:
        if kind == "row":
            writer.writerow(value)  # type: ignore[arg-type]
        else:
            out.write(value)  # type: ignore[arg-type]
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(ROW, max_size=25), terminator=st.sampled_from(["\n", "\r\n"]),
       sizes=st.lists(st.integers(1, 7), min_size=1, max_size=3), limit=st.sampled_from([8, 1 << 17]))
@example(rows=[("row", ["a\r\nb", "c"]), ("row", ["d", "e"])], terminator="\n", sizes=[5], limit=1 << 17)
@example(rows=[("row", ["long value", "x"]), ("row", ["d", "e"])], terminator="\r\n", sizes=[1], limit=8)
@example(rows=[("row", [",\r", "\n"]), ("row", ["", ""])], terminator="\n", sizes=[2], limit=8)
def test_bulk_reading_numbers_rows_as_reading_one_at_a_time(rows: list[tuple[str, object]], terminator: str,
                                                            sizes: list[int], limit: int) -> None:
    text = as_csv(rows, terminator)
    with field_limit(limit):
        expected = one_row_at_a_time(text)
        got = in_slices(text, sizes)
    assert got == expected


def test_a_value_spanning_lines_moves_the_next_rows_down() -> None:
    text = 'email,first_name\na@x.com,"two\r\nlines"\nb@x.com,"three\rlines\nhere"\n\nc@x.com,plain\n'
    lines, cells, malformed = in_slices(text, [10])
    assert lines == [2, 4, 8]
    assert [row[0] for row in cells] == ["a@x.com", "b@x.com", "c@x.com"]
    assert malformed == []
