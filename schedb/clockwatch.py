"""Clock offsets between members, measured over HTTP, and what they allow.

Replicated time belongs to the leader (schedb.fsm.replicated_time): a node's clock is only an
input. Yet an executor fires at instants read from its own clock, and the leader's clock
becomes replicated time, so a clock that is far off must stop mattering:

- Every node measures every other member's clock each `clock.probe_interval_s`: GET
  /health answers the member's id, wall clock and whether it holds its fires for a clock
  reason; the offset is its clock minus the middle of the request, with an error of at most
  half the round trip. Of the last few samples, the one with the shortest round trip counts
  (as NTP's clock filter does), among those that agree with the newest: a member's clock that
  stepped counts from its first sample after the step. A member agrees with this clock when
  that sample's whole error interval is within `clock.max_offset_ms`, disagrees when the whole
  of it is beyond, and counts neither way (as if unmeasured) in between.
- A step of this node's own wall clock (against its monotonic clock) forgets every sample:
  nothing is judged on this clock again until it has been measured anew.
- A follower executes only while its offset from the leader is known and within
  `clock.max_offset_ms`. Otherwise its fires wait, /ready says why, and the leader, which
  reads that hold in the follower's /health, gives it no fires and moves those not yet due.
- A leader assigns, and so moves replicated time, only while a majority of the members (itself
  among them) are known to agree with its clock; it hands its leadership on when most
  members are measured off.
- A node whose clock is off most of the others does not stand for election.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

import aiohttp
import structlog

from schedb.clock import monotonic, wall_ms
from schedb.config import Config
from schedb.fsm import queries
from schedb.peers import peer_tls, peer_url
from schedb.raft import Replica

log = structlog.get_logger("schedb.clockwatch")
SAMPLES = 5
SAMPLE_TTL_S = 10.0
PROBE_TIMEOUT_S = 1.0
# A change of wall minus monotonic time larger than this between two looks is a step of the
# wall clock (NTP slews at most 0.5 ms/s; an operator's `date -s` or a VM resume steps).
STEP_MS = 100.0
READ_SLACK_MS = 1.0  # clocks are read in whole milliseconds: a sample's bounds are this much wider


@dataclass(frozen=True)
class Sample:
    offset_ms: float  # the member's clock minus this node's
    rtt_ms: float
    at: float  # monotonic
    holding: bool  # the member holds its fires for a clock reason (its own /health says so)


MEMBERS_UNKNOWN_RETRY_S = 0.1


class ClockWatch:
    def __init__(self, config: Config, replica: Replica) -> None:
        self._config = config
        self._replica = replica
        self.max_offset_ms = config.clock.max_offset_ms
        self._samples: dict[str, deque[Sample]] = {}
        self._refused: dict[str, float] = {}  # node id -> monotonic time of its latest refusal in a row
        self._tls: ssl.SSLContext | bool = peer_tls(config)
        self._wall_minus_mono = _wall_minus_mono_ms()
        # Judged after each round of probes (_judge), so the executor's check per fire is cheap.
        self._follower_reason = "clock_unknown"
        self._agreed = False
        self._round_had_members = False

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as session:
            await self.measure(http_probe(session, self._config, self._tls))

    async def measure(self, probe: Probe) -> None:
        """Measure every member each probe interval, for ever (probe: over HTTP, or the simulator's)."""
        while True:
            try:
                await self._round(probe)
            except Exception:  # a bug here must not freeze the verdicts: log it, measure again
                log.exception("clock_round_failed")
            # A round that knew no members (a restart applying its journal) measured nothing, and
            # nothing agrees until they are measured (majority_agrees): the next one comes soon
            # rather than a whole interval later.
            measured = self._round_had_members or not self._replica.has_peers()
            await asyncio.sleep(self._config.clock.probe_interval_s if measured else MEMBERS_UNKNOWN_RETRY_S)

    async def _round(self, probe: Probe) -> None:
        members = self._members()
        self._round_had_members = bool(members)
        for gone in set(self._samples) - set(members):
            del self._samples[gone]
        for gone in set(self._refused) - set(members):
            del self._refused[gone]
        await asyncio.gather(*(self._probe(probe, node_id, addr) for node_id, addr in members.items()))
        self._judge()

    def _members(self) -> dict[str, str]:
        """node id -> API address of the other members (registered, and in the Raft membership)."""
        raft_members = set(self._replica.members())
        nodes = self._replica.read(queries.node_addresses)
        return {node_id: _reachable(http, raft) for node_id, (raft, http) in nodes.items()
                if raft in raft_members and node_id != self._config.node.id}

    async def _probe(self, probe: Probe, node_id: str, http_addr: str) -> None:
        started = monotonic()
        sent_ms = wall_ms()
        clock_before = _wall_minus_mono_ms()
        answer = await probe(http_addr)
        if answer is REFUSED:
            self._refused[node_id] = started
            return
        if not isinstance(answer, Health):
            return
        self._refused.pop(node_id, None)  # a process answers there
        if abs(_wall_minus_mono_ms() - clock_before) > STEP_MS:
            return  # this node's clock stepped while the probe was out: sent_ms is of the old clock
        rtt_ms = (monotonic() - started) * 1000
        if answer.node_id != node_id:
            return  # another process answers at that address (or this one, behind 0.0.0.0): no sample
        their_ms = answer.now_ms
        if not isinstance(their_ms, int | float) or isinstance(their_ms, bool):
            return
        sample = Sample(their_ms - (sent_ms + rtt_ms / 2), rtt_ms, monotonic(), answer.clock_hold)
        self._samples.setdefault(node_id, deque(maxlen=SAMPLES)).append(sample)

    # -- what the offsets say --------------------------------------------------------

    def _best(self, node_id: str) -> Sample | None:
        """Of the recent samples consistent with every newer one, the one with the shortest round
        trip. A sample is the offset to within half its round trip: one whose bounds do not overlap
        what the newer ones allow was taken before the member's clock stepped, and says nothing of
        it now."""
        now = monotonic()
        fresh = [s for s in self._samples.get(node_id, ()) if now - s.at < SAMPLE_TTL_S]
        if not fresh:
            return None
        # From the newest back, the samples whose bounds overlap what all newer ones allow; one
        # that does not is from before a step (a sharp old sample must not outlive a step that
        # newer, slower ones show), and so is every older one.
        low, high = -math.inf, math.inf
        consistent: list[Sample] = []
        for sample in reversed(fresh):
            error = sample.rtt_ms / 2 + READ_SLACK_MS
            if sample.offset_ms + error < low or sample.offset_ms - error > high:
                break
            low, high = max(low, sample.offset_ms - error), min(high, sample.offset_ms + error)
            consistent.append(sample)
        return min(consistent, key=lambda s: s.rtt_ms)

    def offset_ms(self, node_id: str) -> int | None:
        """node_id's clock minus this node's, from the recent sample with the shortest round trip."""
        best = self._best(node_id)
        return round(best.offset_ms) if best else None

    def refused_at(self, node_id: str) -> float | None:
        """Monotonic time of the latest refusal of node_id's API port, while it keeps refusing
        (None: it answers, or stays silent). A refusal after a node's last Raft answer proves
        its process is gone; silence proves nothing (a partition, a frozen process). A firewall
        rule that REJECTs would fake it: cut with DROP."""
        return self._refused.get(node_id)

    def ahead_at_most_ms(self, node_id: str) -> float | None:
        """How far node_id's clock can be ahead of this node's by its recent samples, however old
        (a silent member's samples stop coming): the largest upper bound of any of them, so that
        a sample from before a step of its clock does not hide the step. None when it was never
        measured (or this node's own clock stepped since)."""
        samples = self._samples.get(node_id)
        if not samples:
            return None
        return max(s.offset_ms + s.rtt_ms / 2 for s in samples)

    def in_bound(self, node_id: str) -> bool:
        """Is node_id's clock known to agree with this node's?"""
        return self._agreement(node_id) is True

    def _agreement(self, node_id: str) -> bool | None:
        """Whether node_id's clock is within the limit of this node's: True or False when the best
        sample's whole error interval (half its round trip each way) lies on one side of the limit;
        None when it was not measured, or when the interval straddles the limit. The middle of a
        slow round trip can be anywhere in it (simulator seed 446689000: -476 ms measured over a
        993 ms round trip, for a clock 894 ms behind)."""
        best = self._best(node_id)
        if best is None:
            return None
        distance_ms, error_ms = abs(best.offset_ms), best.rtt_ms / 2
        if distance_ms + error_ms <= self.max_offset_ms:
            return True
        return False if distance_ms - error_ms > self.max_offset_ms else None

    def may_execute(self, node_id: str) -> bool:
        """May the leader give node_id fires: its clock agrees, and it does not itself hold them."""
        return self.in_bound(node_id) and not self.reports_holding(node_id)

    def reports_holding(self, node_id: str) -> bool:
        """node_id's own /health said, at its latest probe, that it holds its fires for its clock:
        it knows, and starts none (a step of its own clock it sees at once; schedb.executor)."""
        samples = self._samples.get(node_id)
        return bool(samples) and samples[-1].holding

    def holds_fires(self, node_id: str) -> bool:
        """Whether node_id's fires not yet due should move: its clock is measured off this one's,
        or it holds them itself. Unmeasured, or measured too roughly to tell, it keeps them (and
        gets no new ones: may_execute)."""
        if self._agreement(node_id) is False:
            return True
        return self.offset_ms(node_id) is not None and self.reports_holding(node_id)

    def offsets(self) -> dict[str, int | None]:
        return {node_id: self.offset_ms(node_id) for node_id in sorted(self._members())}

    def leader_offset_ms(self) -> int | None:
        leader = self._leader_id()
        return 0 if leader == self._config.node.id else (self.offset_ms(leader) if leader else None)

    def leader_time_ms(self, own_ms: int) -> int:
        """own_ms as the leader's clock reads it, when this node's clock is known to be out of
        bound (an API command proposed here is stamped with it); otherwise own_ms."""
        if self._follower_reason != "clock_offset" or self._replica.is_leader():
            return own_ms
        offset = self.leader_offset_ms()
        return own_ms + offset if offset is not None else own_ms

    def hold_reason(self) -> str:
        """Why this node's clock may not be used now, or "": its wall clock stepped; a follower's
        offset from the leader is unknown or out of bound; a leader's clock is not agreed on."""
        self._check_step()
        if not self._replica.has_peers():
            return ""
        if self._replica.is_leader():
            return "" if self._agreed else "clock_unknown" if self._measured() == 0 else "clock_offset"
        return self._follower_reason

    def _check_step(self) -> None:
        now = _wall_minus_mono_ms()
        if abs(now - self._wall_minus_mono) > STEP_MS:
            log.warning("clock_stepped", by_ms=round(now - self._wall_minus_mono))
            self._samples.clear()
            self._follower_reason, self._agreed = "clock_unknown", False
        self._wall_minus_mono = now

    def _measured(self) -> int:
        return sum(1 for node_id in self._members() if self.offset_ms(node_id) is not None)

    def _judge(self) -> None:
        self._check_step()
        leader = self._leader_id()
        offset = self.leader_offset_ms()
        agreement = True if leader == self._config.node.id else self._agreement(leader) if leader else None
        follower_reason = {True: "", False: "clock_offset", None: "clock_unknown"}[agreement]
        if leader is None and self._follower_reason != "clock_unknown":
            follower_reason = self._follower_reason  # an election: the last leader's verdict stands
        agreed = self.majority_agrees()
        changed = (follower_reason, agreed) != (self._follower_reason, self._agreed)
        self._follower_reason, self._agreed = follower_reason, agreed
        self._replica.set_may_lead(self.may_lead())
        if changed:
            (log.warning if follower_reason or not agreed else log.info)(
                "clock_check", leader_offset_ms=offset, offsets=self.offsets(), max_offset_ms=self.max_offset_ms,
                follower_reason=follower_reason or "in_bound", leader_clock_agreed=agreed)

    def majority_agrees(self) -> bool:
        """A majority of the members (this node among them) are known to agree with this clock.
        Members unmeasured (new, down) or measured too roughly to tell do not count as agreeing
        (with three members: one other that agrees is enough). A node with peers whose state does
        not know the registered members yet (a start, a restart) is agreed by nobody (simulator
        seed 453000212)."""
        peers = self._members()
        if not peers:  # alone; or not knowing yet who the others are (a restart): none agrees
            return not self._replica.has_peers()
        agreeing = sum(1 for node_id in peers if self._agreement(node_id) is True)
        return 2 * (agreeing + 1) > len(peers) + 1

    def may_lead(self) -> bool:
        """Stand for election unless most other members are measured out of bound. With one other
        member, who is wrong cannot be told: both stand."""
        peers = self._members()
        off = sum(1 for node_id in peers if self._agreement(node_id) is False)
        return len(peers) < 2 or off <= len(peers) // 2

    def _leader_id(self) -> str | None:
        if self._replica.is_leader():
            return self._config.node.id
        leader = self._replica.view().leader_addr
        found = self._replica.read(queries.node_at, leader)
        return found[0] if found else None


class Health(NamedTuple):
    """A member's /health answer, as far as the clock watch reads it."""

    node_id: object  # as the member says (checked against the one expected)
    now_ms: object  # its wall clock (checked to be a number)
    clock_hold: bool  # it holds its fires for a clock reason


REFUSED = "refused"  # the member's port refused the connection: its process is gone
# (API address) → the member's answer, REFUSED, or None: no answer (timeout, error, not JSON).
Probe = Callable[[str], Awaitable[Health | str | None]]


def http_probe(session: aiohttp.ClientSession, config: Config, tls: ssl.SSLContext | bool) -> Probe:
    """GET /health over the session (its timeout bounds the wait)."""
    async def probe(http_addr: str) -> Health | str | None:
        try:
            async with session.get(peer_url(config, http_addr, "/health"), ssl=tls) as resp:
                body = await resp.json()
        except aiohttp.ClientConnectorError as exc:
            return REFUSED if isinstance(exc.os_error, ConnectionRefusedError) else None
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
            return None
        if not isinstance(body, dict):
            return Health(None, None, False)  # a process answers, but not a member
        return Health(body.get("node_id"), body.get("now_ms"), bool(body.get("clock_hold")))

    return probe


def _wall_minus_mono_ms() -> float:
    return wall_ms() - monotonic() * 1000


def _reachable(http_addr: str, raft_addr: str) -> str:
    """A member that listens on a wildcard address (0.0.0.0:8001) is reached at its Raft host."""
    host, _, port = http_addr.rpartition(":")
    if host.strip("[]") in ("0.0.0.0", "::", ""):
        return f"{raft_addr.rpartition(':')[0]}:{port}"
    return http_addr
