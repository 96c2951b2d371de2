"""The Raft adapter: the only code that crosses between pysyncobj's tick thread
and the node's asyncio loop.

- `Replica.submit(command)` (asyncio side) proposes a command and awaits its
  commit with a timeout of our own: a command forwarded by a follower may
  never get its callback if the leader dies.
- `StateHolder.apply_command` (tick thread, schedb.applier) decodes one log
  entry and applies it to the State under a lock; readers on the asyncio side
  take the same lock. It then wakes the asyncio side (coalesced) so the
  executor can look at the new state.
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
from typing import Any

import structlog
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf

from schedb.applier import StateHolder
from schedb.commands import Command, encode
from schedb.config import Config
from schedb.fsm.core import State
from schedb.fsm.machine import StateMachine
from schedb.fsm.model import Result
from schedb.metrics import NodeMetrics

log = structlog.get_logger("schedb.raft")
# Silence from the leader longer than this (ten heartbeats) is a gap after which the fence
# waits for the log to be applied (_Node.fence_until_applied).
LEADER_GAP_S = 1.0


class SubmitError(RuntimeError):
    """The command was not committed. `retryable` says whether trying again may help;
    `unknown` says it may still commit later (a timeout)."""

    def __init__(self, reason: str, *, retryable: bool = True, unknown: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.unknown = unknown


_FAIL_NAMES = {v: k.lower() for k, v in vars(FAIL_REASON).items() if k.isupper()}


class _Node(SyncObj):
    """SyncObj that records contact times as Raft messages arrive (tick thread).

    A joining node (`raft.join`) stands for no election until a leader has spoken
    to it: the moment the cluster adds it, its long-passed election deadline would
    otherwise make it call an election at once, and its higher term would depose a
    healthy leader (Raft's "disruptive server"; pysyncobj has no pre-vote)."""

    def __init__(self, self_addr: str, peers: list[str], conf: SyncObjConf, holder: StateHolder,
                 join: bool, long_gap_s: float) -> None:
        self.leader_heard_at = 0.0
        self.fence_until_applied = 0  # the commit index learnt after the last gap (leader_heard_within)
        self.fresh_time_needed_ms = 0  # this node's wall clock when it heard a leader after a long gap
        self._long_gap_s = long_gap_s
        self.may_lead = True  # set by the clock watch (Replica.set_may_lead)
        self.follower_acks: dict[str, tuple[float, int]] = {}
        self._joining = join
        super().__init__(self_addr, peers, conf, consumers=[holder])

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        if self._joining:
            if self.leader_heard_at:
                self._joining = False
            else:
                self._SyncObj__raftElectionDeadline = time.monotonic() + 3600.0
        if not self.may_lead:  # its clock is off most members' (schedb.clockwatch): let another lead
            self._SyncObj__raftElectionDeadline = time.monotonic() + self._SyncObj__conf.raftMaxTimeout
        SyncObj._onTick(self, timeToWait)

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 - pysyncobj's name
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries" and message.get("term", -1) >= self.raftCurrentTerm:
            now = time.monotonic()
            gap_s = now - self.leader_heard_at
            if gap_s > LEADER_GAP_S:
                # Heard again after a gap (a freeze, a partition, a start): this message's entries
                # are not applied yet, and what it commits may move this node's fires. The fence
                # holds until the log is applied that far. Set before leader_heard_at, which the
                # executor reads first.
                self.fence_until_applied = max(self.fence_until_applied, int(message.get("commit_index", 0)))
            if gap_s > self._long_gap_s:
                # Long enough for the leader to have moved this node's fires. The message may have
                # waited in the socket through a freeze, its commit index from before the moves:
                # only leader time stamped after now proves the view is fresh (Replica.leader_heard_within).
                self.fresh_time_needed_ms = max(self.fresh_time_needed_ms, int(time.time() * 1000))
            self.leader_heard_at = now
        elif kind == "next_node_idx":
            match = message["next_node_idx"] - 1 if message.get("success") else -1
            previous = self.follower_acks.get(node.id, (0.0, 0))[1]
            self.follower_acks[node.id] = (time.monotonic(), max(previous, match))
            self._forget_departed_acks()
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _forget_departed_acks(self) -> None:
        """Acks of addresses that are no longer members go, as members come and go. A new dict:
        other threads copy this one without a lock."""
        ids = {member.id for member in self._SyncObj__otherNodes}  # a handful: cheap on every ack
        if not ids.issuperset(self.follower_acks):
            self.follower_acks = {addr: ack for addr, ack in self.follower_acks.items() if addr in ids}


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
        # Called on the tick thread with each applied command (None: a snapshot replaced the
        # state); the console's event feed listens here. Listeners must be quick and not block.
        self.command_listeners: list[Callable[[Command | None], None]] = []
        self._pending = asyncio.Semaphore(config.http.pending_commands_max)
        # The state starts with the default bounds; the leader's config values follow through
        # the log (SetLimits), so that every node applies the same ones.
        self.holder = StateHolder(StateMachine(), self._applied)
        self._node = _Node(config.raft.listen, list(config.raft.peers), _syncobj_conf(config), self.holder,
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
        for listener in self.command_listeners:
            try:
                listener(command)
            except Exception:  # the state has changed already: a listener's bug must not stop the apply loop
                log.exception("command_listener_failed")
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

    def read(self, fn: Callable[[State], Any]) -> Any:
        """Run fn on the state while no command is being applied."""
        with self.holder.lock:
            return fn(self.holder.state)

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
        if node._isLeader():
            return True
        if time.monotonic() - node.leader_heard_at >= seconds:
            return False
        if node.raftLastApplied < node.fence_until_applied:
            return False
        # After a gap longer than the fence, the applied state must carry leader time (its tick
        # comes every ~0.3 s) stamped after this node heard the leader again, allowing for the
        # leader's clock being up to clock.max_offset_ms behind this one's.
        needed_ms = node.fresh_time_needed_ms
        if needed_ms and self.holder.state.now_ms < needed_ms + self._config.clock.max_offset_ms:
            return False
        if needed_ms and node.fresh_time_needed_ms == needed_ms:  # met: a clock corrected later must not keep it up
            node.fresh_time_needed_ms = 0
        return True

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
        now = time.monotonic()
        commit = self._node.raftCommitIndex
        acks = dict(self._node.follower_acks)  # copy: the tick thread writes it
        members = set(self.members())
        return sorted(addr for addr, (at, match) in acks.items()
                      if addr in members and now - at < seconds and match >= commit - lag_max)

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
        now = time.monotonic()
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


def _syncobj_conf(config: Config) -> SyncObjConf:
    r = config.raft
    data = config.data_path
    data.mkdir(parents=True, exist_ok=True)
    return SyncObjConf(
        # pysyncobj listens on every interface unless told: keep the Raft port on raft.listen only
        # (a loopback one may run without raft.password, config._check_raft_password).
        bindAddress=r.listen,
        journalFile=str(data / "raft.journal"),
        fullDumpFile=str(data / "raft.dump"),
        # One-at-a-time commits matter more to us than bulk throughput: we batch
        # fires into commands ourselves (DESIGN.md: ~0.3 ms vs ~100 ms per commit).
        appendEntriesUseBatch=False,
        appendEntriesPeriod=r.heartbeat_s,
        raftMinTimeout=r.election_min_s,
        raftMaxTimeout=r.election_max_s,
        # Rely on Raft timeouts and TCP keepalive instead of pysyncobj's lazy idle check,
        # which drops the first vote request on a stale link (slow elections).
        connectionTimeout=3600.0,
        connectionRetryTime=r.connection_retry_s,
        leaderFallbackTimeout=r.leader_fallback_s,
        logCompactionMinEntries=r.compaction_min_entries,
        logCompactionMinTime=r.compaction_min_s,
        commandsQueueSize=config.http.pending_commands_max * 4,
        password=r.password or None,
        # Members are added and removed through the log (schedb.membership); a restarted
        # node takes the member set from its journal and dump, not from raft.peers.
        dynamicMembershipChange=True,
    )
