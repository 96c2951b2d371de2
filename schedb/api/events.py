"""Live updates for the console: `GET /api/v1/events` streams Server-Sent Events.

One EventFeed per node turns what the node sees into small events and fans them
out to its subscribers, each filtered to what the subscriber's key may see:

- `hello`: sent first; the cluster as this node sees it (the console learns the
  other nodes' addresses from it, to fail over to).
- `cluster`: the role, leader, term or a member's connection changed (looked at
  every second), and every few seconds anyway for the log indexes and the
  in-flight webhooks.
- `executions`: the execution records committed since the last look.
- `jobs`: ids of jobs created, changed or deleted (`many` when too many to list).
- `dead_letters`: fire ids added to or removed from the dead-letter queue.
- `resync`: a snapshot replaced the state; the console fetches again what it shows.

The job ids come from the commands as they apply (Replica.command_listeners,
on the tick thread); everything else is compared with what the feed saw on its
previous look, four times a second, and only while someone listens. Each
subscriber has a bounded queue: one that falls behind is dropped, and its
console reconnects and fetches afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from schedb import tenancy
from schedb.api.auth import current_actor, identify
from schedb.api.cluster import cluster_status
from schedb.api.context import NODE
from schedb.api.problems import Problem
from schedb.api.telemetry import CORRELATION_ID
from schedb.api.views import execution_view
from schedb.commands import Command, CreateJob, CreateJobs, DeleteJob, RegisterJobs, ReplaceJob
from schedb.node import Node
from schedb.state import State

log = structlog.get_logger("schedb.events")
SUBSCRIBERS_MAX = 64
QUEUE_MAX = 256
TICK_S = 0.25
CLUSTER_EVERY_S = 3.0
PING_S = 10.0  # a comment line: proxies keep the stream open, the console notices a dead node
AUTH_CHECK_S = 2.0  # a key revoked while its console listens: the stream ends within this
IDS_MAX = 200  # ids in one `jobs` or `dead_letters` event; past it the console refetches
EXECUTIONS_MAX = 200  # per look; more than that since the last look: `resync`
TOUCHED_MAX = 10_000
Event = dict[str, Any]
PING: Event = {}  # no event for PING_S: a comment line goes out instead


@dataclass(eq=False)
class Subscriber:
    actor: dict[str, Any]
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))

    def sees(self, team: str | None) -> bool:
        """`team` None: an event about the cluster, not about any team's jobs."""
        return team is None or tenancy.is_admin(self.actor) or team == self.actor.get("team")


class EventFeed:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        # Written by the tick thread (deque appends are atomic), drained by the loop.
        self._touched: deque[tuple[str, ...] | None] = deque(maxlen=TOUCHED_MAX)
        self._job_team: dict[str, str] = {}  # the team of each job, so a deleted job's team is known
        self._letter_team: dict[str, str] = {}
        self._last_execution: dict[str, Any] | None = None
        self._cluster_sig: tuple[Any, ...] = ()
        self._cluster_at = 0.0
        node.replica.command_listeners.append(self._note)

    # -- subscribers (loop) ---------------------------------------------------------

    def subscribe(self, actor: dict[str, Any]) -> Subscriber:
        if len(self._subscribers) >= SUBSCRIBERS_MAX:
            raise Problem(503, "Too many listeners", f"at most {SUBSCRIBERS_MAX} event streams per node",
                          kind="too-many-listeners", headers={"Retry-After": "5"})
        if not self._subscribers:
            self._start()
        subscriber = Subscriber(actor)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    def close(self) -> None:
        """The node is stopping: end every stream (aiohttp would wait for them)."""
        for subscriber in list(self._subscribers):
            self._drop(subscriber)

    def _drop(self, subscriber: Subscriber) -> None:
        self.unsubscribe(subscriber)
        while True:  # make room for the end marker
            try:
                subscriber.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                subscriber.queue.get_nowait()

    def hello(self) -> Event:
        return {"type": "hello", "cluster": cluster_status(self._node)}

    # -- the tick thread ----------------------------------------------------------------

    def _note(self, command: Command | None) -> None:
        if not self._subscribers:
            return
        if command is None:
            self._touched.append(None)
        elif isinstance(command, CreateJob | ReplaceJob):
            self._touched.append((str(command.spec.get("id")),))
        elif isinstance(command, DeleteJob):
            self._touched.append((str(command.job_id),))
        elif isinstance(command, CreateJobs):
            self._touched.append(tuple(str(s.get("id")) for s in command.specs if isinstance(s, dict)))
        elif isinstance(command, RegisterJobs):
            self._touched.append(("service:" + str(command.service),))

    # -- looking (loop) ----------------------------------------------------------------

    def _start(self) -> None:
        self._touched.clear()
        self._node.replica.read(self._remember)
        self._cluster_sig, self._cluster_at = (), 0.0
        self._task = asyncio.create_task(self._run(), name="event-feed")

    def _remember(self, state: State) -> None:
        self._job_team = {job_id: job["team"] for job_id, job in state.jobs.items()}
        self._letter_team = {fire_id: self._job_team.get(letter["job_id"], "")
                             for fire_id, letter in state.dead_letters.items()}
        self._last_execution = state.recent[-1] if state.recent else None

    async def _run(self) -> None:
        while self._subscribers:
            try:
                for team, event in self._look():
                    self._publish(team, event)
            except Exception:  # a bug here must not end the feed for every console
                log.exception("event_feed_failed")
            await asyncio.sleep(TICK_S)

    def _publish(self, team: str | None, event: Event) -> None:
        for subscriber in list(self._subscribers):
            if subscriber.sees(team):
                try:
                    subscriber.queue.put_nowait(event)
                except asyncio.QueueFull:
                    log.info("event_listener_dropped", reason="fell behind")
                    self._drop(subscriber)

    def _look(self) -> list[tuple[str | None, Event]]:
        events = self._cluster_events()
        touched = [self._touched.popleft() for _ in range(len(self._touched))]
        if None in touched:
            self._node.replica.read(self._remember)
            return [*events, (None, {"type": "resync"})]
        return events + self._node.replica.read(lambda state: self._state_events(state, touched))

    def _cluster_events(self) -> list[tuple[str | None, Event]]:
        view = self._node.replica.view()
        links = tuple(sorted((addr, peer["connected"]) for addr, peer in view.peers.items()))
        sig = (view.role, view.leader_addr, view.term, links)
        now = time.monotonic()
        if sig == self._cluster_sig and now - self._cluster_at < CLUSTER_EVERY_S:
            return []
        self._cluster_sig, self._cluster_at = sig, now
        return [(None, {"type": "cluster", "cluster": cluster_status(self._node)})]

    def _state_events(self, state: State, touched: list[tuple[str, ...]]) -> list[tuple[str | None, Event]]:
        return [*self._job_events(state, touched), *self._execution_events(state), *self._letter_events(state)]

    def _job_events(self, state: State, touched: list[tuple[str, ...]]) -> list[tuple[str | None, Event]]:
        by_team: dict[str, set[str]] = {}
        for ids in touched:
            for job_id in _expand(state, ids):
                job = state.jobs.get(job_id)
                team = job["team"] if job is not None else self._job_team.pop(job_id, None)
                if job is not None:
                    self._job_team[job_id] = job["team"]
                if team is not None:
                    by_team.setdefault(team, set()).add(job_id)
        return [(team, _id_event("jobs", "ids", sorted(ids))) for team, ids in by_team.items()]

    def _execution_events(self, state: State) -> list[tuple[str | None, Event]]:
        fresh: list[dict[str, Any]] = []
        for row in reversed(state.recent):
            if row is self._last_execution:
                break
            fresh.append(row)
            if len(fresh) > EXECUTIONS_MAX:
                self._last_execution = state.recent[-1]
                return [(None, {"type": "resync"})]
        if not fresh:
            return []
        self._last_execution = fresh[0]
        by_team: dict[str, list[dict[str, Any]]] = {}
        for row in reversed(fresh):  # oldest first
            job = state.jobs.get(row["job_id"])
            if job is not None and row["committed_ms"] >= job["created_ms"]:
                by_team.setdefault(job["team"], []).append(execution_view(row))
        return [(team, {"type": "executions", "executions": rows}) for team, rows in by_team.items()]

    def _letter_events(self, state: State) -> list[tuple[str | None, Event]]:
        letters = state.dead_letters
        if len(letters) == len(self._letter_team) and letters.keys() == self._letter_team.keys():
            return []
        added = [f for f in letters if f not in self._letter_team]
        removed = [f for f in self._letter_team if f not in letters]
        changes: dict[str, tuple[list[str], list[str]]] = {}
        for fire_id in added:
            job = state.jobs.get(letters[fire_id]["job_id"])
            team = self._letter_team[fire_id] = job["team"] if job is not None else ""
            changes.setdefault(team, ([], []))[0].append(fire_id)
        for fire_id in removed:
            changes.setdefault(self._letter_team.pop(fire_id), ([], []))[1].append(fire_id)
        return [(team, {"type": "dead_letters", "added": a[:IDS_MAX], "removed": r[:IDS_MAX],
                        "many": len(a) > IDS_MAX or len(r) > IDS_MAX}) for team, (a, r) in changes.items()]


def _expand(state: State, ids: tuple[str, ...]) -> list[str]:
    """A registration touches every job of its service (new, changed, orphaned)."""
    if len(ids) == 1 and ids[0].startswith("service:"):
        prefix = ids[0].removeprefix("service:") + "."
        return [job_id for job_id in state.jobs if job_id.startswith(prefix)]
    return list(ids)


def _id_event(kind: str, key: str, ids: list[str]) -> Event:
    return {"type": kind, key: ids[:IDS_MAX], "many": len(ids) > IDS_MAX}


def frame(event: Event) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


FEED = web.AppKey("event_feed", EventFeed)


async def stream_events(request: web.Request) -> web.StreamResponse:
    """The event stream; it ends when the key is revoked, the listener falls behind, or the
    node stops. The console then reconnects (to another node if this one is gone)."""
    node = request.app[NODE]
    feed = request.app[FEED]
    subscriber = feed.subscribe(current_actor.get())
    # The correlation id goes out here: telemetry adds it after the handler, too late for a stream.
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no", "X-Correlation-ID": request[CORRELATION_ID]})
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n" + frame(feed.hello()))
        await _pump(node, request, subscriber, response)
    except (ConnectionResetError, ConnectionError):
        pass  # the console went away
    finally:
        feed.unsubscribe(subscriber)
    return response


async def _pump(node: Node, request: web.Request, subscriber: Subscriber, response: web.StreamResponse) -> None:
    checked = wrote = time.monotonic()
    while True:
        try:
            event = await asyncio.wait_for(subscriber.queue.get(), AUTH_CHECK_S)
        except TimeoutError:
            event = PING
        now = time.monotonic()
        if now - checked >= AUTH_CHECK_S:  # on the clock: events may never pause
            checked = now
            if not _still_allowed(node, request):
                await response.write(frame({"type": "unauthorized"}))
                return
        if event is None:
            return
        if event is not PING:
            await response.write(frame(event))
            wrote = now
        elif now - wrote >= PING_S:
            await response.write(b": ping\n\n")
            wrote = now


def _still_allowed(node: Node, request: web.Request) -> bool:
    """A key revoked while its console listens: the stream ends at the next ping."""
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
        feed.close()

    app.on_shutdown.append(close_streams)
