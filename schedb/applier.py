"""The State under pysyncobj: each committed log entry applied, and snapshots loaded.

`StateHolder` is the pysyncobj consumer that holds the state machine (schedb.fsm.machine).
Its one replicated method takes the encoded command (schedb.commands): an entry that cannot
be decoded, or whose apply raises, stops the node with its own exit code, since skipping it
or half-applying it would leave this node unlike the others for ever. pysyncobj snapshots
the holder's attributes (its `state`) with pickle, and loads them through `_deserialize`;
the class paths of snapshots written before schedb.fsm are registered first
(schedb.fsm.snapshot_compat). `TouchJournal` notes which jobs each applied command touched,
for the console's event feed. Runs on pysyncobj's tick thread; schedb.raft owns the rest.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from pysyncobj import SyncObjConsumer, replicated

from schedb.commands import Command, UndecodableCommand, decode, jobs_touched
from schedb.fsm import snapshot_compat
from schedb.fsm.machine import StateMachine
from schedb.fsm.model import Result

log = structlog.get_logger("schedb.raft")  # these lines have always been the Raft adapter's
EXIT_CORRUPT_LOG = 70
EXIT_APPLY_FAILED = 71
TOUCHED_MAX = 10_000  # commands noted and not drained yet; past it: one None (resync)
TOUCHED_IDS_MAX = 100_000  # job ids in them (a few MB at most)
Touched = tuple[str, ...] | None  # the job ids one command touched (schedb.commands.jobs_touched); None: resync


class StateHolder(SyncObjConsumer):
    """Holds the State; pysyncobj snapshots every attribute set after super().__init__()."""

    def __init__(self, state: StateMachine, on_applied: Callable[[Command | None], None]) -> None:
        snapshot_compat.register()  # before pysyncobj may load a snapshot pickled by an older version
        self.lock = threading.Lock()
        self._on_applied = on_applied
        # Bumped when pysyncobj replaces the state wholesale (a snapshot loaded at start or
        # sent by the leader): readers that follow changes incrementally start over.
        self.generation = 0
        super().__init__()
        self.state = state

    def _deserialize(self, data: Any) -> None:  # pysyncobj's snapshot hook (tick thread)
        with self.lock:
            super()._deserialize(data)
            self.generation += 1
        self._on_applied(None)

    @replicated
    def apply_command(self, data: bytes) -> Result:
        try:
            command = decode(data)
        except UndecodableCommand as exc:
            # Skipping an entry would let this node diverge from the others for ever.
            log.critical("undecodable_log_entry", error=str(exc))
            os._exit(EXIT_CORRUPT_LOG)
        try:
            with self.lock:
                result = self.state.apply(command)
        except Exception:
            # pysyncobj would apply the entry again on every tick, for ever, while the node
            # reports ready; and a half-applied entry may have left the state unlike the others'.
            log.critical("apply_failed", command=type(command).__name__, exc_info=True)
            os._exit(EXIT_APPLY_FAILED)
        self._on_applied(command)
        return result


class TouchJournal:
    """Which jobs the applied commands touched, in order, while someone listens (the event
    feed, from its first subscriber to its last) and until the asyncio side drains them (four
    times a second). None in it: a snapshot replaced the state, a command's ids could not be
    told, or more came than it holds: whoever drains it starts over from the state. Bounded:
    at most TOUCHED_MAX entries and TOUCHED_IDS_MAX ids, then one None. Written on the tick
    thread, drained on the loop (deque appends and pops are atomic)."""

    def __init__(self) -> None:
        self._entries: deque[Touched] = deque()
        self._ids = 0  # job ids in the entries (a bulk create names up to a thousand)
        self._listening = False

    def listen(self, on: bool) -> None:
        """Start (afresh) or stop noting: nobody listening, nothing is kept."""
        self._listening = on
        self._entries.clear()
        self._ids = 0

    def note(self, command: Command | None) -> None:
        """Quick, and never raises: it runs in the apply loop."""
        if not self._listening:
            return
        try:
            ids = jobs_touched(command) if command is not None else None
        except Exception:  # a command apply refused for its odd fields: look at everything again
            ids = None
        if ids == ():
            return
        if ids is None or len(self._entries) >= TOUCHED_MAX or self._ids + len(ids) > TOUCHED_IDS_MAX:
            if self._entries and self._entries[-1] is None:
                return
            self._entries.append(None)
            return
        self._entries.append(ids)
        self._ids += len(ids)

    def drain(self) -> list[Touched]:
        out = []
        while self._entries:
            entry = self._entries.popleft()
            out.append(entry)
            self._ids -= len(entry) if entry is not None else 0
        return out
