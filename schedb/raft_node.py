"""pysyncobj's node, with what schedb needs to know of the Raft traffic (tick thread):
when this node last heard from a leader, and the commit index and leader time it must
have applied after a gap (the executor's fence, schedb.fence);
when each follower last acknowledged the log (the dispatcher's notion of "alive"); and
whether this node may stand for election (a joining node, a clock that disagrees).
"""

from __future__ import annotations

from typing import Any

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer

from schedb.clock import monotonic, wall_ms
from schedb.config import Config
from schedb.fence import ECHO, Echoes, Fence


class RaftNode(SyncObj):
    """SyncObj that records contact times as Raft messages arrive (tick thread).

    A joining node (`raft.join`) stands for no election until a leader has spoken
    to it: the moment the cluster adds it, its long-passed election deadline would
    otherwise make it call an election at once, and its higher term would depose a
    healthy leader (Raft's "disruptive server"; pysyncobj has no pre-vote)."""

    def __init__(self, self_addr: str, peers: list[str], conf: SyncObjConf, holder: SyncObjConsumer,
                 join: bool, long_gap_s: float) -> None:
        self.fence = Fence(long_gap_s)  # when this node last heard a leader, and what it must apply since
        self.echoes = Echoes()  # the round trips the fence counts (schedb.fence)
        self.may_lead = True  # set by the clock watch (Replica.set_may_lead)
        self.follower_acks: dict[str, tuple[float, int]] = {}
        self._joining = join
        super().__init__(self_addr, peers, conf, consumers=[holder])
        self._stamp_outgoing()

    def _stamp_outgoing(self) -> None:
        """Every Raft message this node sends passes through the transport's send: stamp the
        round-trip fields there (schedb.fence.Echoes). pysyncobj ignores fields it does not know."""
        transport = self._SyncObj__transport
        send = transport.send

        def send_stamped(node: Any, message: Any) -> Any:
            if isinstance(message, dict):
                self.echoes.stamp(node.id, message, monotonic())
            return send(node, message)

        transport.send = send_stamped

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        if self._joining:
            if self.fence.leader_heard_at:
                self._joining = False
            else:
                self._SyncObj__raftElectionDeadline = monotonic() + 3600.0
        if self._isLeader():
            self.fence.leading()  # deposed, it waits to hear the next leader (Fence.leading)
        if not self.may_lead:  # its clock is off most members' (schedb.clockwatch): let another lead
            self._SyncObj__raftElectionDeadline = monotonic() + self._SyncObj__conf.raftMaxTimeout
        SyncObj._onTick(self, timeToWait)

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 - pysyncobj's name
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries" and message.get("term", -1) >= self.raftCurrentTerm:
            self.fence.heard(monotonic(), wall_ms(), int(message.get("commit_index", 0)), message.get(ECHO))
        elif kind == "next_node_idx":
            match = message["next_node_idx"] - 1 if message.get("success") else -1
            previous = self.follower_acks.get(node.id, (0.0, 0))[1]
            self.follower_acks[node.id] = (monotonic(), max(previous, match))
            self.echoes.replied(node.id, message)
            self._forget_departed_acks()
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _forget_departed_acks(self) -> None:
        """Acks of addresses that are no longer members go, as members come and go. A new dict:
        other threads copy this one without a lock."""
        ids = {member.id for member in self._SyncObj__otherNodes}  # a handful: cheap on every ack
        self.echoes.keep_only(ids)
        if not ids.issuperset(self.follower_acks):
            self.follower_acks = {addr: ack for addr, ack in self.follower_acks.items() if addr in ids}


def syncobj_conf(config: Config) -> SyncObjConf:
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
