"""The cyclic garbage collector: what it leaves alone once a process has started, and its pace during bulk work
(imports, send batches)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_YOUNG_COLLECTION_THRESHOLD = 50_000
_lock = threading.Lock()
_running = 0
_saved_threshold: tuple[int, ...] | None = None


def freeze_startup_objects() -> None:
    """Move everything alive now (modules, routes, models, caches: what lives as long as the process) out of
    every later collection, so a full one scans only what requests and batches allocate. Called once a process
    has started (the app's startup, `clarion worker`): the full collections of a tracking load went from ~9% of
    its time to ~1%."""
    gc.collect()
    gc.freeze()


@contextmanager
def rarer_young_collections() -> Iterator[None]:
    """While any bulk work runs, CPython's cyclic garbage collector looks at young objects every 50,000 container
    allocations instead of every 700.

    Bulk work allocates several containers per item (an import's CSV cells, rows and tag lists; a send batch's
    contexts, rendered parts and messages) that live for a chunk and form no cycles; at the default threshold the
    collector keeps re-scanning them: ~30% of an import's validation, ~8% of a send batch's CPU (measured with
    bench/import_contacts.py and bench/send_pipeline.py). Nothing is left uncollected: the same collections
    happen, less often. Process-wide, so counted: the last one to finish restores the threshold."""
    global _running, _saved_threshold
    with _lock:
        if _running == 0:
            _saved_threshold = gc.get_threshold()
            young, *older = _saved_threshold
            gc.set_threshold(max(young, _YOUNG_COLLECTION_THRESHOLD), *older)
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _saved_threshold is not None:
                gc.set_threshold(*_saved_threshold)
