"""The collector's garbage-collector policy (collector/gcpolicy.py, issue #5)."""

from __future__ import annotations

import gc

from vpsmon.collector.gcpolicy import FULL_COLLECTION_THRESHOLD, freeze_startup_objects


def test_start_up_objects_are_frozen_and_full_collections_made_rarer() -> None:
    before = gc.get_threshold()
    try:
        built_at_start = [{"kept": [i]} for i in range(1000)]  # lives as long as the process
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 1000
        # A full collection no longer walks them: what it walks is far fewer than what exists.
        assert len(gc.get_objects()) < frozen
        assert not any(o is built_at_start for o in gc.get_objects())
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2] and full == FULL_COLLECTION_THRESHOLD > before[2]
        # Frozen objects are still alive and usable; they are only never collected.
        assert built_at_start[999]["kept"] == [999]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
