from __future__ import annotations

import uuid

from clarion.kit.ids import new_id, new_id_hexes


def test_bulk_ids_are_version_7_uuids_in_the_same_strictly_increasing_sequence_as_new_id() -> None:
    before = new_id()
    bulk = new_id_hexes(10_000)  # more than one millisecond's 4,096 counter values: the counter rolls over
    after = new_id()
    parsed = [uuid.UUID(h) for h in bulk]
    assert all(p.hex == h for p, h in zip(parsed, bulk, strict=True))
    assert all(p.version == 7 and p.variant == uuid.RFC_4122 for p in parsed)
    assert [before.hex, *bulk, after.hex] == sorted({before.hex, *bulk, after.hex})  # increasing, no repeat
    assert len({h[-16:] for h in bulk}) == len(bulk)  # random tails differ
