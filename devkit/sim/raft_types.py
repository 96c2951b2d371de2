"""The simulator's Raft model (devkit.sim.raft_model) and the engine around it: what the engine
gives each node (Host: clock, timers, network, random source), the state machine it replicates
(Machine), its timing (pysyncobj's SyncObjConf as schedb sets it) and the roles it reports.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol


class Handle(Protocol):
    def cancel(self) -> None: ...


class Host(Protocol):
    """The simulator engine's side of one node: its clock, timers, network and random source."""

    node_id: str
    rng: random.Random

    def now(self) -> float: ...
    def call_later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> Handle: ...
    def send(self, to: str, message: dict[str, Any]) -> None: ...
    def process_alive(self, node_id: str) -> bool: ...


class Machine(Protocol):
    def apply(self, data: bytes) -> Any: ...
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes) -> None: ...


class Role(IntEnum):
    """pysyncobj's _RAFT_STATE values (getStatus()['state'])."""

    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2


@dataclass(frozen=True)
class RaftTiming:
    heartbeat_s: float = 0.1  # appendEntriesPeriod
    election_min_s: float = 0.4
    election_max_s: float = 1.2
    leader_fallback_s: float = 3.0
    compaction_min_entries: int = 500
    connection_retry_s: float = 1.0  # how soon a node with no live peer looks again
    commands_queue_size: int = 4000  # schedb: http.pending_commands_max * 4
    commands_wait_leader: bool = True  # pysyncobj's default, which schedb keeps
