"""A tiny deterministic cluster for tests/sim/test_raft_model.py: RaftNodeModel nodes on one
event heap in simulated seconds, a lossy reordering network with partitions, crashes that keep
the Disk, pauses that hold a node's events, and checkers that run after every event.

Not the simulator engine (devkit/sim has its own): just enough of one to prove the model safe.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from devkit.sim.raft_log import Disk
from devkit.sim.raft_model import Fail, RaftNodeModel, RaftTiming


@dataclass
class Net:
    delay_min_s: float = 0.001
    delay_max_s: float = 0.030
    slow_p: float = 0.03  # the odd message that takes slow_s
    slow_s: float = 0.300
    drop_p: float = 0.0


class Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ListMachine:
    """Appends each applied entry; apply returns the new length, the entry's place in the
    global sequence if the node's sequence is a prefix of it."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.checked = 0  # how much of items the sequence checker has seen

    def apply(self, data: bytes) -> int:
        self.items.append(data)
        return len(self.items)

    def snapshot(self) -> bytes:
        return msgpack.packb(self.items)

    def restore(self, data: bytes) -> None:
        self.items = list(msgpack.unpackb(data))
        self.checked = 0


class NodeHost:
    """One process incarnation of a node: a crash kills the host, a restart makes a new one."""

    def __init__(self, cluster: Cluster, node_id: str, incarnation: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.rng = random.Random(f"{cluster.seed}:{node_id}:{incarnation}")
        self.dead = False
        self.forwards: dict[tuple[str, int], list[NodeHost]] = {}  # forwards received, not yet answered
        self.ambiguous_answer = False  # it got the answer to an earlier process's forward (_forwarder_answered)

    def now(self) -> float:
        return self.cluster.now + self.cluster.offsets[self.node_id]

    def call_later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> Timer:
        timer = Timer()
        self.cluster.schedule(delay_s, self, lambda: timer.cancelled or fn(*args), "timer")
        return timer

    def send(self, to: str, message: dict[str, Any]) -> None:
        self.cluster.transmit(self, to, message)

    def process_alive(self, node_id: str) -> bool:
        return self.cluster.models[node_id] is not None


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    host: NodeHost | None = field(compare=False)
    fn: Callable[[], Any] = field(compare=False)
    kind: str = field(compare=False)


class Cluster:
    def __init__(self, seed: int, n: int = 3, timing: RaftTiming | None = None, net: Net | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)  # the network's and the chaos's; each node has its own
        self.timing = timing or RaftTiming(compaction_min_entries=40)
        self.net = net or Net()
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.now = 0.0
        self.offsets = {i: self.rng.uniform(10.0, 1000.0) for i in self.ids}
        self.disks = {i: Disk() for i in self.ids}
        self.models: dict[str, RaftNodeModel | None] = dict.fromkeys(self.ids)
        self.hosts: dict[str, NodeHost] = {}
        self.machines: dict[str, ListMachine] = {}
        self.incarnations = dict.fromkeys(self.ids, 0)
        self.blocked: set[tuple[str, str]] = set()
        self.paused: dict[str, list[_Event]] = {}
        self.may_lead = dict.fromkeys(self.ids, True)
        self._heap: list[_Event] = []
        self._seq = 0
        self.trace = hashlib.sha256()
        # what the checkers collect
        self.history: list[bytes] = []  # the one sequence every node's applied entries are a prefix of
        self.leaders: dict[int, str] = {}  # term -> the node that led it
        self.outcomes: dict[bytes, tuple[Any, int]] = {}
        self.snapshots_installed = 0
        self.fallbacks: list[tuple[float, str]] = []
        self.misattributed: list[bytes] = []  # answered SUCCESS with another command's result (see _outcome)
        self._seen: dict[str, tuple[bool, int, bool]] = {}  # node -> (leads, term, ready) after its last event
        self.watchers: list[Callable[[RaftNodeModel], None]] = []  # a test's own checks after every event
        for node in self.ids:
            self.start(node)

    # -- the event heap --------------------------------------------------------------

    def schedule(self, delay_s: float, host: NodeHost | None, fn: Callable[[], Any], kind: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, _Event(self.now + delay_s, self._seq, host, fn, kind))

    def at(self, time_s: float, fn: Callable[[], Any]) -> None:
        """A harness action (fault, heal) at an absolute time, on no node's loop."""
        self.schedule(time_s - self.now, None, fn, "action")

    def run_until(self, time_s: float) -> None:
        while self._heap and self._heap[0].at <= time_s:
            event = heapq.heappop(self._heap)
            self.now = event.at
            self._run(event)
        self.now = max(self.now, time_s)

    def _run(self, event: _Event) -> None:
        host = event.host
        if host is None:
            event.fn()
            return
        if host.dead:
            return
        if host.node_id in self.paused:  # a stopped process runs nothing; its events wait
            self.paused[host.node_id].append(event)
            return
        self.trace.update(f"{event.at:.9f} {host.node_id} {event.kind}\n".encode())
        event.fn()
        self._check_node(host.node_id)

    # -- the network -----------------------------------------------------------------

    def transmit(self, sender: NodeHost, dst: str, message: dict[str, Any]) -> None:
        src, target = sender.node_id, self.hosts[dst]
        meant_for = self._forwarder_answered(sender, dst, message)
        if (src, dst) in self.blocked or self.models[dst] is None or self.rng.random() < self.net.drop_p:
            return
        delay = self.rng.uniform(self.net.delay_min_s, self.net.delay_max_s)
        if self.rng.random() < self.net.slow_p:
            delay = self.net.slow_s
        wire = msgpack.packb(message)  # plain values only, and no object shared with the sender
        kind = f"{message['type']} from {src} term {message.get('term')}"
        self.schedule(delay, target, lambda: self._deliver(dst, sender, wire, meant_for), kind)

    def _deliver(self, dst: str, sender: NodeHost, wire: bytes, meant_for: NodeHost | None) -> None:
        model = self.models[dst]
        if model is None:
            return
        message = msgpack.unpackb(wire)
        if message["type"] == "apply_command":  # the leader answers forwards in their order
            sender_queue = self.hosts[dst].forwards.setdefault((sender.node_id, message["request_id"]), [])
            sender_queue.append(sender)
        if meant_for is not None and meant_for is not self.hosts[dst]:
            self.hosts[dst].ambiguous_answer = True
        model.receive(sender.node_id, message)

    def _forwarder_answered(self, leader: NodeHost, dst: str, message: dict[str, Any]) -> NodeHost | None:
        """pysyncobj numbers a node's forwards from 1 in each process: an answer to a forward may
        reach a later process of the node, which takes it for the answer to its own forward of the
        same number. The process whose forward this answers: NodeHost.ambiguous_answer."""
        if message["type"] != "apply_command_response":
            return None
        senders = leader.forwards.get((dst, message["request_id"]), [])
        return senders.pop(0) if senders else None

    def partition(self, *groups: list[str]) -> None:
        """Drop every message between different groups, both ways."""
        self.blocked = {(a, b) for g in groups for h in groups if g is not h for a in g for b in h}

    def isolate(self, node: str) -> None:
        self.partition([node], [i for i in self.ids if i != node])

    def heal(self) -> None:
        self.blocked = set()

    # -- processes -------------------------------------------------------------------

    def start(self, node: str) -> None:
        self.incarnations[node] += 1
        host = NodeHost(self, node, self.incarnations[node])
        machine = ListMachine()
        model = RaftNodeModel(host, self.ids, self.timing, self.disks[node], machine,
                              on_applied=lambda: self._check_sequence(machine),
                              on_snapshot_loaded=lambda: self._snapshot_loaded(node, machine))
        model.may_lead = self.may_lead[node]
        self._seen.pop(node, None)  # a new process starts not ready
        self.hosts[node], self.machines[node], self.models[node] = host, machine, model

    def crash(self, node: str) -> None:
        model = self.models[node]
        if model is None:
            return
        model.stop()
        self.hosts[node].dead = True
        self.models[node] = None
        self.paused.pop(node, None)

    def restart(self, node: str) -> None:
        if self.models[node] is None:
            self.start(node)

    def pause(self, node: str) -> None:
        self.paused.setdefault(node, [])

    def resume(self, node: str) -> None:
        for event in self.paused.pop(node, []):  # in their order, now
            self.schedule(0.0, event.host, event.fn, event.kind)

    def set_may_lead(self, node: str, may_lead: bool) -> None:
        self.may_lead[node] = may_lead
        model = self.models[node]
        if model is not None:
            model.may_lead = may_lead

    def propose(self, node: str, data: bytes) -> None:
        """Propose on the node's own loop (a paused node proposes when it resumes)."""
        host = self.hosts[node]
        self.schedule(0.0, host, lambda: self._propose_now(node, data), "propose")

    def _propose_now(self, node: str, data: bytes) -> None:
        model = self.models[node]
        assert model is not None
        model.propose(data, lambda result, error: self._outcome(node, data, result, error))

    # -- checkers ---------------------------------------------------------------------

    def _outcome(self, node: str, data: bytes, result: Any, error: int) -> None:
        assert data not in self.outcomes, f"two callbacks for {data!r}"
        self.outcomes[data] = (result, error)
        if error != Fail.SUCCESS:
            return
        # the proposer's callback follows its own apply of that very entry (which
        # _check_sequence then holds against every other node's)
        items = self.machines[node].items
        if len(items) >= result and items[result - 1] == data:
            return
        # the answer to a forward that outlived its process went to the next one (_forwarder_answered)
        assert self.hosts[node].ambiguous_answer, f"{data!r} answered with place {result}"
        self.misattributed.append(data)

    def _check_sequence(self, machine: ListMachine) -> None:
        """State machine safety: every node applies a prefix of one sequence."""
        for place in range(machine.checked, len(machine.items)):
            if place == len(self.history):
                assert machine.items[place] not in self.history, "an entry applied twice"
                self.history.append(machine.items[place])
            assert machine.items[place] == self.history[place], f"nodes disagree at entry {place + 1}"
        machine.checked = len(machine.items)

    def _snapshot_loaded(self, node: str, machine: ListMachine) -> None:
        model = self.models[node]
        self.snapshots_installed += model is not None and model.leader_id is not None  # else a restart's own
        self._check_sequence(machine)

    def _check_node(self, node: str) -> None:
        model = self.models[node]
        if model is None:
            return
        if model.is_leader:  # election safety: one leader per term, ever
            assert self.leaders.setdefault(model.term, node) == node, f"two leaders in term {model.term}"
        was_leader, term, was_ready = self._seen.get(node, (False, 0, False))
        if was_leader and not model.is_leader and model.term == term:  # stepped down in its own term
            self.fallbacks.append((self.now, node))
        assert model.ready or not was_ready, "ready went back to False"
        self._seen[node] = (model.is_leader, model.term, model.ready)
        for watch in self.watchers:
            watch(model)

    # -- views for the tests ------------------------------------------------------------

    def model(self, node: str) -> RaftNodeModel:
        """The node's running model (it must run)."""
        model = self.models[node]
        assert model is not None, f"{node} is down"
        return model

    def live(self) -> list[RaftNodeModel]:
        return [m for m in self.models.values() if m is not None]

    def leader(self) -> RaftNodeModel | None:
        """The leader of the highest term, if any node leads."""
        leaders = [m for m in self.live() if m.is_leader]
        return max(leaders, key=lambda m: m.term) if leaders else None
