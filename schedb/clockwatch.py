"""Clock offsets between members, measured over HTTP, and what they allow.

Replicated time belongs to the leader (State._command_time): a node's clock is only an
input. Yet an executor fires at instants read from its own clock, and the leader's clock
becomes replicated time, so a clock that is far off must stop mattering:

- Every node measures every other member's clock each `clock.probe_interval_s`: GET
  /health answers the member's wall clock; its offset is that minus the middle of the
  request, with an error of at most half the round trip. Of the last few samples, the
  one with the shortest round trip counts (as NTP's clock filter does).
- A follower executes only while its offset from the leader is known and within
  `clock.max_offset_ms`. Otherwise its fires wait (the leader moves them elsewhere, as it
  gives none to a follower it measures out of bound), and /ready says why.
- A leader assigns, and so moves replicated time, only while a majority of the cluster,
  itself included, agrees with its clock; otherwise it hands its leadership on.
- A node whose clock is off most of the others does not stand for election.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import aiohttp
import structlog

from schedb.config import Config
from schedb.peers import peer_tls, peer_url
from schedb.raft import Replica

log = structlog.get_logger("schedb.clockwatch")
SAMPLES = 5
SAMPLE_TTL_S = 10.0
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Sample:
    offset_ms: float  # the member's clock minus this node's
    rtt_ms: float
    at: float  # monotonic


class ClockWatch:
    def __init__(self, config: Config, replica: Replica) -> None:
        self._config = config
        self._replica = replica
        self.max_offset_ms = config.clock.max_offset_ms
        self._samples: dict[str, deque[Sample]] = {}
        # Judged after each round of probes (_judge), so the executor's check per fire is cheap.
        self._follower_reason = "clock_unknown"
        self._majority = False

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as session:
            while True:
                members = self._members()
                for gone in set(self._samples) - set(members):
                    del self._samples[gone]
                await asyncio.gather(*(self._probe(session, node_id, addr) for node_id, addr in members.items()))
                self._judge()
                await asyncio.sleep(self._config.clock.probe_interval_s)

    def _members(self) -> dict[str, str]:
        """node id -> API address of the other members (registered, and in the Raft membership)."""
        raft_members = set(self._replica.members())
        nodes = self._replica.read(lambda s: {k: (v["raft_addr"], v["http_addr"]) for k, v in s.nodes.items()})
        return {node_id: http for node_id, (raft, http) in nodes.items()
                if raft in raft_members and node_id != self._config.node.id}

    async def _probe(self, session: aiohttp.ClientSession, node_id: str, http_addr: str) -> None:
        started = time.monotonic()
        sent_ms = time.time() * 1000
        try:
            async with session.get(peer_url(self._config, http_addr, "/health"), ssl=peer_tls(self._config)) as resp:
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return
        rtt_ms = (time.monotonic() - started) * 1000
        their_ms = body.get("now_ms") if isinstance(body, dict) else None
        if not isinstance(their_ms, int | float):
            return
        sample = Sample(their_ms - (sent_ms + rtt_ms / 2), rtt_ms, time.monotonic())
        self._samples.setdefault(node_id, deque(maxlen=SAMPLES)).append(sample)

    # -- what the offsets say --------------------------------------------------------

    def offset_ms(self, node_id: str) -> int | None:
        """node_id's clock minus this node's, from the recent sample with the shortest round trip."""
        now = time.monotonic()
        fresh = [s for s in self._samples.get(node_id, ()) if now - s.at < SAMPLE_TTL_S]
        return round(min(fresh, key=lambda s: s.rtt_ms).offset_ms) if fresh else None

    def in_bound(self, node_id: str) -> bool:
        """Is node_id's clock known to agree with this node's?"""
        offset = self.offset_ms(node_id)
        return offset is not None and abs(offset) <= self.max_offset_ms

    def offsets(self) -> dict[str, int | None]:
        return {node_id: self.offset_ms(node_id) for node_id in sorted(self._members())}

    def leader_offset_ms(self) -> int | None:
        leader = self._leader_id()
        return 0 if leader == self._config.node.id else (self.offset_ms(leader) if leader else None)

    def hold_reason(self) -> str:
        """Why this node's clock may not be used now, or "": a follower's offset from the leader
        is unknown or out of bound; a leader's clock is not agreed on by a majority."""
        if not self._replica.has_peers():
            return ""
        if self._replica.is_leader():
            return "" if self._majority else "clock_offset"
        return self._follower_reason

    def _judge(self) -> None:
        offset = self.leader_offset_ms()
        follower_reason = "clock_unknown" if offset is None else (
            "" if abs(offset) <= self.max_offset_ms else "clock_offset")
        majority = self.majority_agrees()
        changed = (follower_reason, majority) != (self._follower_reason, self._majority)
        self._follower_reason, self._majority = follower_reason, majority
        self._replica.set_may_lead(self.may_lead())
        if changed:
            (log.warning if follower_reason or not majority else log.info)(
                "clock_check", leader_offset_ms=offset, offsets=self.offsets(), max_offset_ms=self.max_offset_ms,
                follower_reason=follower_reason or "in_bound", majority_agrees=majority)

    def majority_agrees(self) -> bool:
        """A majority of the cluster, this node included, has clocks within the bound of this one."""
        agreeing = sum(1 for node_id in self._members() if self.in_bound(node_id))
        cluster_size = len(self._replica.members()) + 1  # members not registered yet do not agree
        return agreeing + 1 > cluster_size // 2

    def may_lead(self) -> bool:
        """Stand for election unless most other members are measured out of bound (unknown
        offsets do not count against it: a new cluster must elect before anyone registers)."""
        peers = self._members()
        off = sum(1 for node_id in peers if self.offset_ms(node_id) is not None and not self.in_bound(node_id))
        return off <= len(peers) // 2

    def _leader_id(self) -> str | None:
        if self._replica.is_leader():
            return self._config.node.id
        leader = self._replica.view().leader_addr
        return self._replica.read(lambda s: next((k for k, v in s.nodes.items() if v["raft_addr"] == leader), None))
