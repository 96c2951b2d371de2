"""The event loop a node and its delivery workers run on: uvloop's (a dependency, except on
Windows), which per webhook call and API request spends less CPU than asyncio's own
(scripts/benchkit/client_cpu.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    # uvloop resolves names (aiohttp's resolver: the webhooks') on libuv's thread pool, 4 threads
    # unless told otherwise: a few receivers with slow DNS must not hold every other lookup.
    os.environ.setdefault("UV_THREADPOOL_SIZE", "32")
    return uvloop.new_event_loop
