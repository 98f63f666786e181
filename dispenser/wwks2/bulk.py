"""Large stock messages without garbage collection pauses.

A StockInfo of the whole machine makes tens of thousands of short-lived objects (rows,
packs, elements). With cyclic garbage collection on, passes triggered by them sweep (and
promote) them, and a full pass over the daemon's heap holds every thread, the event loop
included, for tens of ms; yet these objects form no cycles and are freed by reference
counting. ``no_gc_passes`` turns collection off for such work (spanning awaits: the
whole process goes without cyclic collection for that second or two, as the core's bulk
work does) and back on if it was on.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["no_gc_passes"]


@contextmanager
def no_gc_passes() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
