"""`GET /api/v1/events`: the console's live feed (events.py) as Server-Sent Events.

Each event is one `data:` line of JSON. A comment line goes out after 10 s without an event,
so proxies keep the stream open and the console notices a dead node. The stream ends when the
key is revoked (checked every 2 s), when the listener falls behind (its queue is full), when a
write cannot go out within a few seconds (a client that does not read), or when the node
stops; the console then reconnects, to another node if this one is gone.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from schedb.api.auth import current_actor, identify
from schedb.api.context import NODE
from schedb.api.events import EventFeed, Subscriber, frame
from schedb.api.problems import Problem
from schedb.api.telemetry import CORRELATION_ID
from schedb.clock import monotonic
from schedb.node import Node

PING_S = 10.0
AUTH_CHECK_S = 2.0  # a key revoked while its console listens: the stream ends within this
WRITE_S = 5.0  # a client that takes longer to take a frame is cut off
PING = b": ping\n\n"
FEED = web.AppKey("event_feed", EventFeed)


async def stream_events(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    feed = request.app[FEED]
    subscriber = feed.subscribe(current_actor.get(), request.transport)
    # The correlation id goes out here: telemetry adds it after the handler, too late for a stream.
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no", "X-Correlation-ID": request[CORRELATION_ID]})
    try:
        await response.prepare(request)
        await _write(subscriber, response, b"retry: 2000\n" + feed.hello())
        await _pump(node, request, subscriber, response)
    except (ConnectionError, TimeoutError):
        pass  # the console went away, or does not read
    finally:
        feed.unsubscribe(subscriber)
    return response


async def _pump(node: Node, request: web.Request, subscriber: Subscriber, response: web.StreamResponse) -> None:
    checked = wrote = monotonic()
    while True:
        try:
            data = await asyncio.wait_for(subscriber.queue.get(), AUTH_CHECK_S)
        except TimeoutError:
            data = PING
        now = monotonic()
        if now - checked >= AUTH_CHECK_S:  # on the clock: events may never pause
            checked = now
            if not _still_allowed(node, request):
                await _write(subscriber, response, frame({"type": "unauthorized"}))
                return
        if data is None:
            return
        if data is not PING or now - wrote >= PING_S:
            await _write(subscriber, response, data)
            wrote = now


async def _write(subscriber: Subscriber, response: web.StreamResponse, data: bytes) -> None:
    try:
        await asyncio.wait_for(response.write(data), WRITE_S)
    except TimeoutError:
        subscriber.end()  # its send buffer is full and stays full: let the connection go
        raise


def _still_allowed(node: Node, request: web.Request) -> bool:
    if not node.config.auth.enabled:
        return True
    with contextlib.suppress(Problem):
        identify(node, request)
        return True
    return False


def install(app: web.Application, node: Node) -> None:
    feed = EventFeed(node)
    app[FEED] = feed

    async def close_streams(_app: web.Application) -> None:
        feed.close()  # before aiohttp waits for the handlers to finish

    app.on_shutdown.append(close_streams)
