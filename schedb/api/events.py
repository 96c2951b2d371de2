"""Live updates for the console: what `GET /api/v1/events` (eventstream.py) streams.

One EventFeed per node turns what the node sees into small events and fans them
out to its subscribers, each filtered to what the subscriber's key may see:

- `cluster`: the role, leader, term or a member's connection changed (looked at
  every look), and every few seconds anyway for the log indexes and the
  in-flight webhooks.
- `executions`: the execution records committed since the last look, in events of
  at most 200 rows.
- `jobs`: ids of jobs created, changed or deleted (`many` when too many to list).
- `dead_letters`: fire ids added to or removed from the dead-letter queue.
- `resync`: a snapshot replaced the state, or more happened than the feed follows
  one by one; the console fetches again what it shows.

The job ids come from the commands as they apply (Replica.command_listeners,
on the tick thread); everything else is compared with what the feed saw on its
previous look, four times a second, and only while someone listens. An event is
encoded once, whoever receives it. Each subscriber has a bounded queue: one that
falls behind is dropped (its connection aborted), and its console reconnects
and fetches afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog

from schedb.api.cluster import cluster_status
from schedb.api.problems import Problem
from schedb.api.views import execution_view
from schedb.clock import monotonic
from schedb.commands import Command, CreateJob, CreateJobs, DeleteJob, RegisterJobs, ReplaceJob
from schedb.fsm import tenancy
from schedb.fsm.core import State
from schedb.node import Node

log = structlog.get_logger("schedb.events")
SUBSCRIBERS_MAX = 64
SUBSCRIBERS_PER_KEY_MAX = 8  # one key cannot take every stream of a node
QUEUE_MAX = 256
TICK_S = 0.25
CLUSTER_EVERY_S = 3.0
IDS_MAX = 200  # ids in one `jobs` or `dead_letters` event; past it the console refetches
EXECUTIONS_PER_EVENT = 200
EXECUTIONS_PER_LOOK_MAX = 5_000  # more than that since the last look: `resync`
TOUCHED_MAX = 10_000  # commands noted between two looks; past it: `resync`
Event = dict[str, Any]
Published = tuple[str | None, Event]  # (the team it is about, or None: the cluster; the event)


def frame(event: Event) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


@dataclass(eq=False)
class Subscriber:
    actor: dict[str, Any]
    # Frames to send; None ends the stream.
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    transport: asyncio.BaseTransport | None = None  # aborted when the stream is dropped

    def sees(self, team: str | None) -> bool:
        """`team` None: an event about the cluster, not about any team's jobs."""
        return team is None or tenancy.is_admin(self.actor) or team == self.actor.get("team")

    def end(self) -> None:
        """End the stream now: its handler may be stuck writing to a client that does not read,
        and aiohttp's shutdown would wait for that handler."""
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)
        if self.transport is not None:
            self.transport.abort()


class EventFeed:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        # Written by the tick thread (deque appends are atomic), drained by the loop.
        self._touched: deque[tuple[str, ...] | None] = deque()
        self._job_team: dict[str, str] = {}  # the team of each job, so a deleted job's team is known
        self._letter_team: dict[str, str] = {}
        self._last_execution: dict[str, Any] | None = None
        self._cluster_sig: tuple[Any, ...] = ()
        self._cluster_at = 0.0
        node.replica.command_listeners.append(self._note)

    # -- subscribers (loop) ---------------------------------------------------------

    def subscribe(self, actor: dict[str, Any], transport: asyncio.BaseTransport | None) -> Subscriber:
        key = actor.get("key")  # "" with auth off: one shared caller, bounded by SUBSCRIBERS_MAX only
        same_key = sum(1 for s in self._subscribers if key and s.actor.get("key") == key)
        if len(self._subscribers) >= SUBSCRIBERS_MAX or same_key >= SUBSCRIBERS_PER_KEY_MAX:
            raise Problem(503, "Too many listeners", f"at most {SUBSCRIBERS_MAX} event streams per node, "
                          f"{SUBSCRIBERS_PER_KEY_MAX} per key", kind="too-many-listeners", headers={"Retry-After": "5"})
        subscriber = Subscriber(actor, transport=transport)
        self._subscribers.add(subscriber)  # first: commands from now on are noted
        if self._task is None:
            self._start()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    def close(self) -> None:
        """The node is stopping: end every stream."""
        for subscriber in list(self._subscribers):
            self._drop(subscriber)

    def _drop(self, subscriber: Subscriber) -> None:
        self.unsubscribe(subscriber)
        subscriber.end()

    def hello(self) -> bytes:
        return frame({"type": "hello", "cluster": cluster_status(self._node)})

    # -- the tick thread ----------------------------------------------------------------

    def _note(self, command: Command | None) -> None:
        """Which jobs a command touches. Quick, and never raises: it runs in the apply loop."""
        if not self._subscribers:
            return
        if len(self._touched) >= TOUCHED_MAX or command is None:
            if not self._touched or self._touched[-1] is not None:
                self._touched.append(None)  # resync (a snapshot, or more than the feed follows)
            return
        try:
            ids = _touched_by(command)
        except Exception:  # a command apply refused for its odd fields: look at everything again
            ids = None
        if ids != ():
            self._touched.append(ids)

    # -- looking (loop) ----------------------------------------------------------------

    def _start(self) -> None:
        """The first subscriber came: what the state holds now is the starting point (a command
        noted before this read is in it already; one after it is in `_touched`)."""
        self._drain_touched()
        self._node.replica.read(self._remember)
        self._cluster_sig, self._cluster_at = self._cluster_signature(), monotonic()  # hello has it
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
        data = frame(event)  # once, whoever receives it
        for subscriber in list(self._subscribers):
            if subscriber.sees(team):
                try:
                    subscriber.queue.put_nowait(data)
                except asyncio.QueueFull:
                    log.info("event_listener_dropped", reason="fell behind", key=subscriber.actor.get("key"))
                    self._drop(subscriber)

    def _drain_touched(self) -> list[tuple[str, ...] | None]:
        out = []
        while self._touched:
            out.append(self._touched.popleft())
        return out

    def _look(self) -> list[Published]:
        events = self._cluster_events()
        touched = self._drain_touched()
        if None in touched:
            self._node.replica.read(self._remember)
            return [*events, (None, {"type": "resync"})]
        return events + self._node.replica.read(lambda state: self._state_events(state, touched))

    def _cluster_signature(self) -> tuple[Any, ...]:
        view = self._node.replica.view()
        links = tuple(sorted((addr, peer["connected"]) for addr, peer in view.peers.items()))
        return view.role, view.leader_addr, view.term, links

    def _cluster_events(self) -> list[Published]:
        sig = self._cluster_signature()
        now = monotonic()
        if sig == self._cluster_sig and now - self._cluster_at < CLUSTER_EVERY_S:
            return []
        self._cluster_sig, self._cluster_at = sig, now
        return [(None, {"type": "cluster", "cluster": cluster_status(self._node)})]

    def _state_events(self, state: State, touched: list[tuple[str, ...]]) -> list[Published]:
        return [*self._job_events(state, touched), *self._execution_events(state), *self._letter_events(state)]

    def _job_events(self, state: State, touched: list[tuple[str, ...]]) -> list[Published]:
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

    def _execution_events(self, state: State) -> list[Published]:
        fresh: list[dict[str, Any]] = []
        for row in reversed(state.recent):
            if row is self._last_execution:
                break
            fresh.append(row)
            if len(fresh) > EXECUTIONS_PER_LOOK_MAX:
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
        return [(team, {"type": "executions", "executions": rows[i:i + EXECUTIONS_PER_EVENT]})
                for team, rows in by_team.items() for i in range(0, len(rows), EXECUTIONS_PER_EVENT)]

    def _letter_events(self, state: State) -> list[Published]:
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


def _touched_by(command: Command) -> tuple[str, ...] | None:
    """The job ids a command may change; () for none; None: it cannot tell (resync)."""
    if isinstance(command, CreateJob | ReplaceJob):
        return (str(command.spec["id"]),) if isinstance(command.spec, dict) and "id" in command.spec else None
    if isinstance(command, DeleteJob):
        return (str(command.job_id),)
    if isinstance(command, CreateJobs):
        if not isinstance(command.specs, list):
            return None
        return tuple(str(s["id"]) for s in command.specs if isinstance(s, dict) and "id" in s)
    if isinstance(command, RegisterJobs):
        return ("service:" + str(command.service),)
    return ()


def _expand(state: State, ids: tuple[str, ...]) -> list[str]:
    """A registration touches every job of its service (new, changed, orphaned)."""
    if len(ids) == 1 and ids[0].startswith("service:"):
        prefix = ids[0].removeprefix("service:") + "."
        return [job_id for job_id in state.jobs if job_id.startswith(prefix)]
    return list(ids)


def _id_event(kind: str, key: str, ids: list[str]) -> Event:
    return {"type": kind, key: ids[:IDS_MAX], "many": len(ids) > IDS_MAX}
