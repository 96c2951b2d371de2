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
- `circuit`: one of this node's circuits (schedb.breaker) opened, went half-open or
  closed, to the subscribers of its team (each node's own: the console asks the others).
- `resync`: a snapshot replaced the state, or more happened than the feed follows
  one by one; the console fetches again what it shows.

The job ids come from the commands as they apply: the replica journals them on
the tick thread (schedb.applier.TouchJournal) and the feed drains the journal
on the loop; nothing of the feed runs on the tick thread. Everything else is
compared with what the feed saw on its previous look (schedb.fsm.feed_queries),
four times a second, and only while someone listens. An event is
encoded once, whoever receives it. Each subscriber has a bounded queue: one that
falls behind is dropped (its connection aborted), and its console reconnects
and fetches afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from schedb.api.cluster import cluster_status
from schedb.api.problems import Problem
from schedb.api.views import execution_view
from schedb.clock import monotonic
from schedb.fsm import feed_queries, tenancy
from schedb.fsm.feed_queries import FeedBaseline, FeedChanges
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
        self._job_team: dict[str, str] = {}  # the team of each job, so a deleted job's team is known
        self._letter_team: dict[str, str] = {}
        self._executions_written = 0  # execution records written as of the last look
        self._cluster_sig: tuple[Any, ...] = ()
        self._cluster_at = 0.0
        self._circuit_states: dict[tuple[str, str, str], str] = {}  # the circuits not closed, as of the last look

    # -- subscribers (loop) ---------------------------------------------------------

    def subscribe(self, actor: dict[str, Any], transport: asyncio.BaseTransport | None) -> Subscriber:
        key = actor.get("key")  # "" with auth off: one shared caller, bounded by SUBSCRIBERS_MAX only
        same_key = sum(1 for s in self._subscribers if key and s.actor.get("key") == key)
        if len(self._subscribers) >= SUBSCRIBERS_MAX or same_key >= SUBSCRIBERS_PER_KEY_MAX:
            raise Problem(503, "Too many listeners", f"at most {SUBSCRIBERS_MAX} event streams per node, "
                          f"{SUBSCRIBERS_PER_KEY_MAX} per key", kind="too-many-listeners", headers={"Retry-After": "5"})
        subscriber = Subscriber(actor, transport=transport)
        self._subscribers.add(subscriber)
        if self._task is None:
            self._start()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task = None
            self._node.replica.listen_touched(False)

    def close(self) -> None:
        """The node is stopping: end every stream."""
        for subscriber in list(self._subscribers):
            self._drop(subscriber)

    def _drop(self, subscriber: Subscriber) -> None:
        self.unsubscribe(subscriber)
        subscriber.end()

    def hello(self) -> bytes:
        return frame({"type": "hello", "cluster": cluster_status(self._node)})

    # -- looking (loop) ----------------------------------------------------------------

    def _start(self) -> None:
        """The first subscriber came: what the state holds now is the starting point (a command
        journaled before this read is in it already; one after it is in the journal)."""
        self._node.replica.listen_touched(True)
        self._remember(self._node.replica.read(feed_queries.feed_baseline))
        self._cluster_sig, self._cluster_at = self._cluster_signature(), monotonic()  # hello has it
        self._circuit_events()  # and the circuits: a change from now on is an event
        self._task = asyncio.create_task(self._run(), name="event-feed")

    def _remember(self, baseline: FeedBaseline) -> None:
        self._job_team, self._letter_team, self._executions_written = baseline

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

    def _look(self) -> list[Published]:
        events = self._cluster_events() + self._circuit_events()
        touched = self._node.replica.drain_touched()
        if None in touched:
            self._remember(self._node.replica.read(feed_queries.feed_baseline))
            return [*events, (None, {"type": "resync"})]
        changes = self._node.replica.read(feed_queries.feed_changes, cast(list[tuple[str, ...]], touched),
                                          self._letter_team, self._executions_written, EXECUTIONS_PER_LOOK_MAX)
        return events + self._state_events(changes)

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

    def _circuit_events(self) -> list[Published]:
        """The circuits whose state changed since the last look (a circuit not listed is closed)."""
        now = {(c["team"], c["target"], json.dumps(c["override"])): c for c in self._node.breakers.circuits()}
        states = {key: c["state"] for key, c in now.items() if c["state"] != "closed"}
        changed = [key for key in states.keys() | self._circuit_states.keys()
                   if states.get(key, "closed") != self._circuit_states.get(key, "closed")]
        self._circuit_states = states
        closed = {"failures_in_a_row": 0, "open_for_s": 0.0}
        return [(team, {"type": "circuit", "node": self._node.node_id, "team": team, "target": target,
                        "override": json.loads(override), "state": states.get((team, target, override), "closed"),
                        **{k: now.get((team, target, override), closed)[k] for k in closed}})
                for team, target, override in sorted(changed)]

    def _state_events(self, changes: FeedChanges) -> list[Published]:
        self._executions_written = changes.executions_written
        return [*self._job_events(changes), *self._execution_events(changes), *self._letter_events(changes)]

    def _job_events(self, changes: FeedChanges) -> list[Published]:
        by_team: dict[str, set[str]] = {}
        for job_id, team_now in changes.jobs:
            team = team_now if team_now is not None else self._job_team.pop(job_id, None)
            if team_now is not None:
                self._job_team[job_id] = team_now
            if team is not None:
                by_team.setdefault(team, set()).add(job_id)
        return [(team, _id_event("jobs", "ids", sorted(ids))) for team, ids in by_team.items()]

    @staticmethod
    def _execution_events(changes: FeedChanges) -> list[Published]:
        if changes.executions is None:
            return [(None, {"type": "resync"})]
        by_team: dict[str, list[dict[str, Any]]] = {}
        for team, row in changes.executions:  # oldest first
            by_team.setdefault(team, []).append(execution_view(row))
        return [(team, {"type": "executions", "executions": rows[i:i + EXECUTIONS_PER_EVENT]})
                for team, rows in by_team.items() for i in range(0, len(rows), EXECUTIONS_PER_EVENT)]

    def _letter_events(self, changes: FeedChanges) -> list[Published]:
        grouped: dict[str, tuple[list[str], list[str]]] = {}
        for fire_id, team in changes.letters_added:
            self._letter_team[fire_id] = team
            grouped.setdefault(team, ([], []))[0].append(fire_id)
        for fire_id in changes.letters_removed:
            grouped.setdefault(self._letter_team.pop(fire_id), ([], []))[1].append(fire_id)
        return [(team, {"type": "dead_letters", "added": a[:IDS_MAX], "removed": r[:IDS_MAX],
                        "many": len(a) > IDS_MAX or len(r) > IDS_MAX}) for team, (a, r) in grouped.items()]


def _id_event(kind: str, key: str, ids: list[str]) -> Event:
    return {"type": kind, key: ids[:IDS_MAX], "many": len(ids) > IDS_MAX}
