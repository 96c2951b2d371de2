"""The Raft port of a simulated node: what schedb.raft.Replica offers the node's code (the
executor, the dispatcher, the clock watch, Node), over the Raft model instead of pysyncobj.

The state machine is the real one (schedb.fsm.machine.StateMachine), fed the encoded
commands of the log (schedb.commands.encode/decode) as StateHolder feeds it; snapshots are
pickles of it, as pysyncobj's are. The fence is the real one (schedb.fence.Fence), fed by
the model's append_entries as RaftNode feeds it; live followers are counted by the same
function (schedb.raft.live_followers). What the simulator watches (each apply, for the
invariants and the trace) it hears through `on_apply`.
"""

from __future__ import annotations

import asyncio
import pickle
import random
from collections import deque
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from devkit.sim.network import Network
from devkit.sim.raft_commands import Fail
from devkit.sim.raft_log import Disk
from devkit.sim.raft_model import RaftNodeModel
from devkit.sim.raft_types import RaftTiming
from devkit.sim.world import Process
from schedb.clock import monotonic, wall_ms
from schedb.commands import Command, RegisterNode, decode, encode
from schedb.config import Config
from schedb.fence import ECHO, Echoes, Fence
from schedb.fsm.core import State
from schedb.fsm.machine import StateMachine
from schedb.fsm.model import Execution, Result
from schedb.raft import RaftView, SubmitError, live_followers

P = ParamSpec("P")
R = TypeVar("R")
# (replica, the entry's bytes, its command, the result, the execution records it added) after
# each apply; the replica's state.applied numbers the commands (the log's index counts the
# leaders' no-op entries too, which are never applied).
OnApply = Callable[["SimReplica", bytes, Command, Result, list[Execution]], None]
BeforeApply = Callable[["SimReplica", Command], None]  # (replica, the command it is about to apply)


class _Host:
    """The Raft model's view of its process: clocks, timers and the network."""

    def __init__(self, process: Process, network: Network, addr_of: dict[str, str], rng: random.Random,
                 echoes: Echoes) -> None:
        self.node_id = addr_of[process.node_id]
        self.rng = rng
        self._process = process
        self._network = network
        self._echoes = echoes
        self._node_of = {addr: node_id for node_id, addr in addr_of.items()}

    def now(self) -> float:
        return self._process.monotonic()

    def call_later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        return self._process.loop.call_later(delay_s, fn, *args)

    def send(self, to: str, message: dict[str, Any]) -> None:
        self._echoes.stamp(to, message, self._process.monotonic())  # as RaftNode stamps pysyncobj's
        self._network.send(self._process.node_id, self._node_of[to], _deliver, self.node_id, message)

    def process_alive(self, node_id: str) -> bool:
        return self._process.world.alive(self._node_of[node_id])


def _deliver(process: Process, sender: str, message: dict[str, Any]) -> None:
    replica = getattr(process, "replica", None)
    if replica is not None:
        if message.get("type") == "next_node_idx":
            replica.echoes.replied(sender, message)
        replica.raft.receive(sender, message)


class SimReplica:
    def __init__(self, config: Config, process: Process, network: Network, addr_of: dict[str, str],
                 timing: RaftTiming, disk: Disk, on_change: Callable[[], None], on_apply: OnApply,
                 before_apply: BeforeApply | None = None) -> None:
        self._config = config
        self.process = process
        self.node_id = process.node_id
        self.state: StateMachine = StateMachine()
        self.generation = 0
        self.nodes_version = 0  # as schedb.raft.Replica's
        self._on_change = on_change
        self._on_apply = on_apply
        self._before_apply = before_apply
        self._change_pending = False
        self.fence = Fence(config.scheduler.fence_s)
        self.echoes = Echoes()
        host = _Host(process, network, addr_of, random.Random(f"raft:{process.node_id}:{process.incarnation}"),
                     self.echoes)
        self._members = sorted(addr for addr in addr_of.values())
        self.raft = RaftNodeModel(host, self._members, timing, disk, _Machine(self), self._changed,
                                  self._snapshot_loaded)
        self.raft.on_append_entries = self._heard
        self.raft.on_leading = self.fence.leading
        process.replica = self  # type: ignore[attr-defined]  # where messages to this process go

    # -- the model → the node -----------------------------------------------------------

    def _heard(self, message: dict[str, Any]) -> None:
        self.fence.heard(monotonic(), wall_ms(), int(message.get("commit_index", 0)), message.get(ECHO))

    def _changed(self) -> None:
        """After applies, as the tick thread wakes the loop (coalesced)."""
        if not self._change_pending:
            self._change_pending = True
            self.process.loop.call_soon(self._deliver_change)

    def _deliver_change(self) -> None:
        self._change_pending = False
        self._on_change()

    def _snapshot_loaded(self) -> None:
        self.generation += 1
        self.nodes_version += 1
        self._changed()

    # -- Replica's interface --------------------------------------------------------------

    @property
    def has_capacity(self) -> bool:
        return True

    async def submit(self, command: Command, timeout_s: float | None = None) -> Result:
        future: asyncio.Future[Result] = self.process.loop.create_future()

        def on_done(result: Any, error: int) -> None:
            if future.done():
                return
            if error == Fail.SUCCESS:
                future.set_result(result)
            else:
                future.set_exception(SubmitError(Fail(error).name.lower(), unknown=error in (
                    Fail.DISCARDED, Fail.UNKNOWN_OUTCOME)))

        self.raft.propose(encode(command), on_done)
        try:
            return await asyncio.wait_for(future, timeout_s or self._config.http.commit_timeout_s)
        except TimeoutError as exc:
            raise SubmitError("commit_timeout", unknown=True) from exc

    def read(self, query: Callable[Concatenate[State, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        return query(self.state, *args, **kwargs)

    def listen_touched(self, on: bool) -> None:
        pass  # the event feed is the API's: not simulated

    def drain_touched(self) -> list[Any]:
        return []

    def is_leader(self) -> bool:
        return self.raft.is_leader

    def caught_up(self) -> bool:
        return self.raft.ready

    def set_may_lead(self, may_lead: bool) -> None:
        self.raft.may_lead = may_lead

    def has_quorum(self) -> bool:
        return self.raft.has_quorum()

    def leader_heard_within(self, seconds: float) -> bool:
        return self.fence.open(monotonic(), seconds, self.raft.last_applied, self.state.now_ms,
                               self._config.clock.max_offset_ms, leading=self.raft.is_leader)

    def members(self) -> list[str]:
        return self.raft.peers

    def has_peers(self) -> bool:
        return bool(self.raft.peers)

    def live_followers(self, seconds: float, lag_max: int) -> list[str]:
        return live_followers(dict(self.raft.follower_acks), self.raft.peers, monotonic(), self.raft.commit_index,
                              seconds, lag_max)

    def transfer_leadership(self) -> None:
        self.raft.transfer_leadership()

    def last_ack(self, raft_addr: str) -> float:
        return self.raft.follower_acks.get(raft_addr, (0.0, 0))[0]

    def view(self) -> RaftView:
        raft = self.raft
        return RaftView(self_addr=self._config.raft.listen, role="leader" if raft.is_leader else "follower",
                        leader_addr=raft.leader_id, term=raft.term, commit_index=raft.commit_index,
                        last_applied=raft.last_applied, log_len=raft.log_len, ready=raft.ready, peers={})

    def close(self) -> None:
        self.raft.stop()


def _added_since(recent: deque[Execution], last: Execution | None) -> list[Execution]:
    """The execution records after `last` in the state's ring of recent ones (oldest first)."""
    added = []
    for execution in reversed(recent):
        if execution is last:
            break
        added.append(execution)
    added.reverse()
    return added


class _Machine:
    """The Raft model's state machine: the replica's StateMachine, as StateHolder applies it."""

    def __init__(self, replica: SimReplica) -> None:
        self._replica = replica

    def apply(self, data: bytes) -> Result:
        replica = self._replica
        command = decode(data)
        recent = replica.state.recent
        last = recent[-1] if recent else None
        if replica._before_apply is not None:
            replica._before_apply(replica, command)
        result = replica.state.apply(command)  # an exception here ends the run: apply must not raise
        if isinstance(command, RegisterNode):
            replica.nodes_version += 1
        replica._on_apply(replica, data, command, result, _added_since(recent, last))
        return result

    def snapshot(self) -> bytes:
        return pickle.dumps(self._replica.state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        self._replica.state = pickle.loads(data)
