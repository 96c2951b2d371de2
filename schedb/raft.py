"""The Raft adapter: the only code that crosses between pysyncobj's tick thread
and the node's asyncio loop.

- `Replica.submit(command)` (asyncio side) proposes a command and awaits its
  commit with a timeout of our own: a command forwarded by a follower may
  never get its callback if the leader dies.
- `StateHolder.apply_command` (tick thread, schedb.applier) decodes one log
  entry and applies it to the State under a lock; `Replica.read(query, *args)`
  runs a named query (schedb.fsm.queries, schedb.fire_queries) on the asyncio
  side under the same lock. It then notes the jobs the command touched (a
  bounded journal the event feed drains) and wakes the asyncio side (coalesced)
  so the executor can look at the new state. No code of the API, executor or
  dispatcher runs on the tick thread.
- `Replica` also tracks contact: when this node last heard from a leader
  (the executor's fence) and when each follower last acknowledged the log
  (the dispatcher's notion of "alive").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import structlog
from pysyncobj import FAIL_REASON, SyncObj

from schedb.applier import StateHolder, Touched, TouchJournal
from schedb.clock import monotonic
from schedb.commands import Command, RegisterNode, encode
from schedb.config import Config
from schedb.fsm.core import State
from schedb.fsm.machine import StateMachine
from schedb.fsm.model import Result
from schedb.metrics import NodeMetrics
from schedb.raft_node import RaftNode, syncobj_conf

log = structlog.get_logger("schedb.raft")
P = ParamSpec("P")
R = TypeVar("R")


class SubmitError(RuntimeError):
    """The command was not committed. `retryable` says whether trying again may help;
    `unknown` says it may still commit later (a timeout)."""

    def __init__(self, reason: str, *, retryable: bool = True, unknown: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.unknown = unknown


_FAIL_NAMES = {v: k.lower() for k, v in vars(FAIL_REASON).items() if k.isupper()}




@dataclass(frozen=True)
class RaftView:
    """A consistent picture of the Raft side for the API and the dispatcher."""

    self_addr: str
    role: str  # leader | follower | candidate
    leader_addr: str | None
    term: int
    commit_index: int
    last_applied: int
    log_len: int
    ready: bool
    peers: dict[str, dict[str, Any]]


class Replica:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None],
                 metrics: NodeMetrics) -> None:
        self._config = config
        self._metrics = metrics
        self._loop = loop
        self._on_change = on_change
        self._change_pending = threading.Event()
        self._touched = TouchJournal()  # noted on the tick thread, drained by the event feed
        # Bumped when the registered nodes' addresses may have changed (a RegisterNode, a
        # snapshot): readers of them cache until it moves (the egress guard, per webhook call).
        self.nodes_version = 0
        self._pending = asyncio.Semaphore(config.http.pending_commands_max)
        # The state starts with the default bounds; the leader's config values follow through
        # the log (SetLimits), so that every node applies the same ones.
        self.holder = StateHolder(StateMachine(), self._applied)
        self._node = RaftNode(config.raft.listen, list(config.raft.peers), syncobj_conf(config), self.holder,
                           join=config.raft.join, long_gap_s=config.scheduler.fence_s)
        os.register_at_fork(after_in_child=self._close_raft_listener)

    def _close_raft_listener(self) -> None:
        """In pysyncobj's snapshot child: let go of the Raft port. A node restarted right after a
        SIGKILL could not listen while that child lives, and until it listens pysyncobj applies
        its journal without the snapshot under it."""
        server = getattr(getattr(self._node, "_SyncObj__transport", None), "_server", None)
        sock = getattr(server, "_TcpServer__socket", None)
        if sock is not None:
            sock.close()

    # -- tick thread → loop ----------------------------------------------------

    def _applied(self, command: Command | None) -> None:
        """Tick thread, after each apply (None: a snapshot replaced the state). Nothing may raise
        here: pysyncobj would apply the same entry again."""
        try:
            self._touched.note(command)
        except Exception:
            log.exception("touch_journal_failed")
        if command is None or isinstance(command, RegisterNode):
            self.nodes_version += 1
        if not self._change_pending.is_set():
            self._change_pending.set()
            with contextlib.suppress(RuntimeError):  # the loop is closed: the node is shutting down
                self._loop.call_soon_threadsafe(self._deliver_change)

    def _deliver_change(self) -> None:
        self._change_pending.clear()
        self._on_change()

    # -- proposals --------------------------------------------------------------

    @property
    def has_capacity(self) -> bool:
        return not self._pending.locked()

    async def submit(self, command: Command, timeout_s: float | None = None) -> Result:
        """Propose and await the local apply of the command; raises SubmitError."""
        data = encode(command)
        name = type(command).__name__
        async with self._pending:
            future: asyncio.Future[Result] = self._loop.create_future()

            def on_done(result: Result, error: int) -> None:
                self._loop.call_soon_threadsafe(_settle, future, result, error)

            started = time.perf_counter()
            self.holder.apply_command(data, callback=on_done)
            try:
                result = await asyncio.wait_for(future, timeout_s or self._config.http.commit_timeout_s)
            except TimeoutError as exc:
                self._metrics.commit_failures.labels(name, "commit_timeout").inc()
                raise SubmitError("commit_timeout", unknown=True) from exc
            except SubmitError as exc:
                self._metrics.commit_failures.labels(name, exc.reason).inc()
                raise
            self._metrics.commit_latency.labels(name).observe(time.perf_counter() - started)
            return result

    # -- reads ------------------------------------------------------------------

    def read(self, query: Callable[Concatenate[State, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a named query (schedb.fsm.queries, schedb.fire_queries) on the state while no
        command is being applied; it returns a copy, used after the lock is released."""
        with self.holder.lock:
            return query(self.holder.state, *args, **kwargs)

    def listen_touched(self, on: bool) -> None:
        """Note which jobs applied commands touch (on), or stop and forget (off)."""
        self._touched.listen(on)

    def drain_touched(self) -> list[Touched]:
        """The job ids each command applied since the last drain touched, in order (None:
        start over from the state; see schedb.applier.TouchJournal)."""
        return self._touched.drain()

    @property
    def generation(self) -> int:
        """Changes when the state was replaced by a snapshot rather than changed by a command."""
        return self.holder.generation

    def is_leader(self) -> bool:
        return self._node._isLeader()

    def caught_up(self) -> bool:
        """Has this node, since it started, applied the log up to a leader's commit index?
        Until then its state is a replay of the past: fires it shows may have moved since."""
        return bool(self._node.isReady())

    def set_may_lead(self, may_lead: bool) -> None:
        """Whether this node stands for election (False: its clock disagrees with most members')."""
        self._node.may_lead = may_lead

    def has_quorum(self) -> bool:
        """Connected to a majority (TCP): without it nothing can commit."""
        return bool(self._node.hasQuorum)

    def leader_heard_within(self, seconds: float) -> bool:
        """The executor's fence: has a leader (or this node as leader) spoken lately, and is this
        node's view fresh? A follower frozen (SIGSTOP) past the fence hears the leader the moment
        it thaws, while its state still gives it fires that moved away meanwhile, and the first
        messages it reads were sent during the freeze: it must not fire from that view."""
        node = self._node
        return node.fence.open(monotonic(), seconds, node.raftLastApplied, self.holder.state.now_ms,
                               self._config.clock.max_offset_ms, leading=node._isLeader())

    def members(self) -> list[str]:
        """Raft addresses of the other members, as this node's log has them now."""
        for _ in range(5):
            try:  # a set the tick thread changes on a membership change
                return sorted(node.id for node in list(self._node._SyncObj__otherNodes))
            except RuntimeError:
                continue
        return _members_of(_status_copy(self._node))

    def has_peers(self) -> bool:
        return bool(self.members())

    def live_followers(self, seconds: float, lag_max: int) -> list[str]:
        """Raft addresses of members that acknowledged the log within `seconds`
        and whose match index is within `lag_max` entries of the commit index."""
        acks = dict(self._node.follower_acks)  # copy: the tick thread writes it
        return live_followers(acks, self.members(), monotonic(), self._node.raftCommitIndex, seconds, lag_max)

    async def change_membership(self, action: str, raft_addr: str, timeout_s: float) -> None:
        """Add or remove one member through the log; returns once the change committed.
        Callers serialize changes (schedb.api.membership): pysyncobj 0.3.17 does not."""
        change = {"add": self._node.addNodeToCluster, "remove": self._node.removeNodeFromCluster}[action]
        future: asyncio.Future[Result] = self._loop.create_future()
        change(raft_addr, callback=lambda result, error: self._loop.call_soon_threadsafe(
            _settle, future, result, error))
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError as exc:
            raise SubmitError("commit_timeout", unknown=True) from exc

    def transfer_leadership(self) -> None:
        """Ask the most caught-up connected follower to take over (Raft TimeoutNow).
        Best effort: the caller watches is_leader() for the outcome."""
        self._node.transferLeadership()

    def last_ack(self, raft_addr: str) -> float:
        """Monotonic time of the follower's last answer to the leader; 0.0 if none yet."""
        return self._node.follower_acks.get(raft_addr, (0.0, 0))[0]

    def view(self) -> RaftView:
        node = self._node
        status = _status_copy(node)
        role = {0: "follower", 1: "candidate", 2: "leader"}.get(status.get("state", 0), "follower")
        leader = status.get("leader")
        now = monotonic()
        acks = dict(node.follower_acks)
        peers = {
            addr: {
                "connected": status.get(f"partner_node_status_server_{addr}") == 2,
                "match_index": status.get(f"match_idx_server_{addr}"),
                "last_ack_ms_ago": round((now - acks[addr][0]) * 1000) if addr in acks else None,
            }
            for addr in _members_of(status)
        }
        return RaftView(self_addr=self._config.raft.listen, role=role,
                        leader_addr=leader.id if leader is not None else None,
                        term=status.get("raft_term", 0), commit_index=status.get("commit_idx", 0),
                        last_applied=status.get("last_applied", 0), log_len=status.get("log_len", 0),
                        ready=bool(node.isReady()), peers=peers)

    def close(self) -> None:
        self._node.destroy()


def live_followers(acks: dict[str, tuple[float, int]], members: list[str], now: float, commit_index: int,
                   seconds: float, lag_max: int) -> list[str]:
    """Of `members`, those whose last answer (acks: address → (monotonic time, match index)) came
    within `seconds` of now and whose match index is within `lag_max` of the commit index."""
    return sorted(addr for addr, (at, match) in acks.items()
                  if addr in members and now - at < seconds and match >= commit_index - lag_max)


def _settle(future: asyncio.Future[Result], result: Result, error: int) -> None:
    if future.done():
        return
    if error == FAIL_REASON.SUCCESS:
        future.set_result(result)
    elif error == FAIL_REASON.QUEUE_FULL:
        future.set_exception(SubmitError("queue_full"))
    else:
        future.set_exception(SubmitError(_FAIL_NAMES.get(error, str(error)),
                                         unknown=error in (FAIL_REASON.DISCARDED, FAIL_REASON.UNKNOWN_OUTCOME)))


def _status_copy(node: SyncObj) -> dict[str, Any]:
    # getStatus iterates dicts the tick thread mutates; retry the rare collision.
    for _ in range(5):
        try:
            return node.getStatus()
        except RuntimeError:
            continue
    return {}


def _members_of(status: dict[str, Any]) -> list[str]:
    prefix = "partner_node_status_server_"
    return sorted(key[len(prefix):] for key in status if key.startswith(prefix))
