"""The collector's policy for Python's cyclic garbage collector (issue #5: request tails).

A full collection walks every container object the process holds. In a long-running
collector most of them never die: modules, classes, functions and the objects built at
start-up (the app, its routes, templates, config). Walking them on every full collection
adds a pause to whatever request happens to allocate at that moment. Two measures:

1. The head keeps its samples and labels in objects the collector does not walk (arrays of
   floats, tuples of strings; collector/head.py), so the fleet's size does not lengthen
   the pauses.
2. Once the collector serves (`vpsmon collector run` and `vpsmon up` call it from their ready
   callback, vpsmon/cli.py), `freeze_startup_objects` collects once and moves every surviving object
   to the permanent generation (`gc.freeze`, https://docs.python.org/3/library/gc.html#gc.freeze):
   later collections skip them. This is done once, not periodically: an object frozen is
   never collected, so freezing again later would keep any garbage cycle alive at that
   moment for good (a leak that grows with uptime).

3. Full collections ten times rarer (`gc.set_threshold(700, 10, 100)`, third threshold 10 by
   default). Python runs a full collection after ten collections of the middle generation,
   provided the objects that survived since the last one exceed a quarter of the long-lived
   ones; with the start-up objects frozen the long-lived ones are few, so that proviso no
   longer holds them back, and a request that allocates a lot (a day of chart rows) met one
   every few requests. Young collections, which find most garbage, keep their defaults;
   cyclic garbage waits longer for a full collection, a few MB at most.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("vpsmon.collector")


FULL_COLLECTION_THRESHOLD = 100  # collections of the middle generation between full ones


def freeze_startup_objects() -> int:
    """Collect, freeze what survives, make full collections rarer; returns how many objects
    were frozen."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
    frozen = gc.get_freeze_count()
    log.info("garbage collector: start-up objects frozen count=%d", frozen)
    return frozen
