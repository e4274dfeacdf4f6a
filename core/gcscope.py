"""Decode a large JSON answer that a block holds for a while without the cyclic GC walking it.

A fleet's Argo CD list (10,000 apps: 18 MB, about 230,000 dicts and lists) is decoded, compared
and dropped within one poll. Decoded JSON holds no reference cycles, so the cyclic collector can
never free any of it, yet while it is alive every collection walks it: decoding it alone allocates
enough containers to trigger one or two full collections of the whole process (measured: 0.3-0.5 s
at 10,000 apps on the bench machine, most of a no-change poll's variance), and the survivors are
walked again by each later young collection until they are freed.

`bulk_scope()` marks a block that holds such data. Inside it, `json_loads_bulk` decodes with the
collector paused and then moves every object tracked so far into the permanent generation
(`gc.freeze`, O(1)); the block's own later allocations are collected as usual. When the last such
block in the process ends, the permanent generation goes back to the oldest one (`gc.unfreeze`,
O(1)): whatever the block still referenced is collected normally from then on, and what it dropped
was already freed by reference counting. Nothing is ever kept from collection after the block.

A process that froze objects itself (a pre-fork server's `gc.freeze()` before forking) keeps them
frozen: then `json_loads_bulk` only pauses the collector while it decodes. Outside a scope it is a
plain `json.loads`. Concurrent scopes (threads) share the freeze until the last one ends; a race
between threads can only cost a collection, never skip one after the scopes end.
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_local = threading.local()
_scopes = 0  # open scopes, all threads
_frozen_by_us = False


@contextmanager
def bulk_scope() -> Iterator[None]:
    """Hold large decoded JSON (`json_loads_bulk`) in this block without the collector walking it."""
    global _scopes, _frozen_by_us
    with _lock:
        _scopes += 1
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        with _lock:
            _scopes -= 1
            if _scopes == 0 and _frozen_by_us:
                gc.unfreeze()
                _frozen_by_us = False


def json_loads_bulk(data: bytes | str) -> Any:
    """`json.loads`, without collections over the result while the current `bulk_scope` lasts."""
    return bulk_call(lambda: json.loads(data))


def bulk_call(build: Callable[[], T]) -> T:
    """Run `build` (which decodes acyclic data), keeping what it builds out of collections while
    the current `bulk_scope` lasts (a plain call outside one)."""
    if not getattr(_local, "depth", 0):
        return build()
    global _frozen_by_us
    enabled = gc.isenabled()
    gc.disable()
    try:
        return build()
    finally:
        with _lock:
            if _frozen_by_us or gc.get_freeze_count() == 0:
                gc.freeze()
                _frozen_by_us = True
        if enabled:
            gc.enable()
