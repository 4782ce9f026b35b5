"""The collector's policy for Python's cyclic garbage collector (issue #5: request tails).

A full collection walks every container object the process holds. In a long-running
collector most of them never die: modules, classes, functions and the objects built at
start-up (the app, its routes, templates, config). Walking them on every full collection
adds a pause to whatever request happens to allocate at that moment. Two measures:

1. The head keeps its samples and labels in objects the collector does not walk (arrays of
   floats, tuples of strings; collector/head.py), so the fleet's size does not lengthen
   the pauses.
2. After start-up, `freeze_startup_objects` collects once and moves every surviving object
   to the permanent generation (`gc.freeze`, https://docs.python.org/3/library/gc.html#gc.freeze):
   later collections skip them. This is done once, not periodically: an object frozen is
   never collected, so freezing again later would keep any garbage cycle alive at that
   moment for good (a leak that grows with uptime).

The thresholds stay Python's defaults: young collections are cheap, and full collections
stay rare (Python only runs one when the objects that survived since the last one exceed a
quarter of the long-lived ones).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("vpsmon.collector")


def freeze_startup_objects() -> int:
    """Collect, then freeze what survives; returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("garbage collector: start-up objects frozen count=%d", frozen)
    return frozen
