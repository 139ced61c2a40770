"""Pausing Python's cyclic garbage collector around bulk reads of the Dagster event log.

Reading the newest events of thousands of assets builds millions of small containers; each burst of
allocations starts a collection, and in a process that also holds the definitions of 10,000 datasets (2.8
million objects) the oldest generation's collections cost seconds: gathering the status page took 14.5-15.9 s
collected as usual, 10.6-11.7 s paused. Reference counting still frees what a read drops; objects in cycles
wait for the first collection after the pause.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block; nested and concurrent blocks (sensors evaluated in
    threads) resume it when the last one ends, and only if it was running when the first one began (a
    `gc.disable()` made by other code during the block is undone then)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            if _depth > 0:  # 0 in a child forked inside the block: the fork hook resumed the collector already
                _depth -= 1
                if _depth == 0 and _was_enabled:
                    gc.enable()


def _resume_in_child() -> None:
    """A child forked while another thread's block was open would never see that block end: resume at once."""
    global _depth, _lock
    _lock = threading.Lock()
    if _depth and _was_enabled:
        gc.enable()
    _depth = 0


os.register_at_fork(after_in_child=_resume_in_child)
