"""The clock watch (schedb.clockwatch): what the offsets it measures allow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schedb import clock
from schedb.clock import FakeClock
from schedb.clockwatch import ClockWatch, Health
from schedb.commands import AssignFires, RegisterNode
from schedb.config import Config, ExecutorSection, HttpSection, LogSection, NodeSection, RaftSection, SchedulerSection
from schedb.fsm.machine import StateMachine

T0 = 1_800_000_000_000


class LeaderReplica:
    """What the clock watch reads of the Raft side: this node leads node2 and node3."""

    def __init__(self) -> None:
        self.state = StateMachine()
        self.state.apply(AssignFires(T0, [], leader_id="node1"))
        for n in (1, 2, 3):
            self.state.apply(RegisterNode(T0, f"node{n}", f"127.0.0.1:900{n}", f"127.0.0.1:800{n}"))

    def read(self, query: Any, *args: Any) -> Any:
        return query(self.state, *args)

    def members(self) -> list[str]:
        return ["127.0.0.1:9002", "127.0.0.1:9003"]

    def has_peers(self) -> bool:
        return True

    def is_leader(self) -> bool:
        return True

    def set_may_lead(self, may_lead: bool) -> None:
        pass


async def test_a_probe_across_a_step_of_this_nodes_clock_gives_no_sample() -> None:
    """Found by the simulator (seed 50111): the leader's wall clock stepped 2.2 s ahead while a
    probe was out; the executor's next look noticed the step and forgot every sample, then the
    probe came back and added one reckoned from the time before the step (+15 ms, in bound):
    the leader judged its clock agreed and moved replicated time 1.8 s ahead of every other
    clock. A probe across a step gives no sample."""
    fake = FakeClock(wall_ms=T0, monotonic=100.0)
    config = Config(NodeSection("node1", Path("/nonexistent")), HttpSection(), RaftSection(), SchedulerSection(),
                    ExecutorSection(), LogSection())
    with clock.use(fake):
        watch = ClockWatch(config, LeaderReplica())  # type: ignore[arg-type]

        async def probe(http_addr: str) -> Health:
            fake.step_wall(2_200)  # NTP steps this node's clock while the probe is out ...
            watch.hold_reason()  # ... and the executor's next look at it notices
            fake.advance(0.002)
            node_id = {"127.0.0.1:8002": "node2", "127.0.0.1:8003": "node3"}[http_addr]
            return Health(node_id, T0 + 1, False)  # the others' clocks read the true time

        await watch._round(probe)
        assert watch.offset_ms("node2") is None and watch.offset_ms("node3") is None
        assert not watch.majority_agrees() and watch.hold_reason() == "clock_unknown"


async def test_a_step_of_another_members_clock_counts_from_its_first_sample_after() -> None:
    """Found by the simulator (seed 60352): node2's clock stepped back 1.7 s to agree with the
    true time again; this node, 2 s ahead, went on taking node2's samples from before the step
    (their round trips were the shortest) as the best for 10 s, judged its clock agreed, won an
    election and moved replicated time 2 s ahead of every other clock. Samples whose error
    bounds do not overlap the newest one's are from before a step, and no longer count."""
    fake = FakeClock(wall_ms=T0, monotonic=100.0)
    config = Config(NodeSection("node1", Path("/nonexistent")), HttpSection(), RaftSection(), SchedulerSection(),
                    ExecutorSection(), LogSection())
    node2_ahead_ms = [300]

    async def probe(http_addr: str) -> Health:
        fake.advance(0.002 if node2_ahead_ms[0] == 300 else 0.008)  # the older round trips are shorter
        node_id = {"127.0.0.1:8002": "node2", "127.0.0.1:8003": "node3"}[http_addr]
        ahead = node2_ahead_ms[0] if node_id == "node2" else -2_000
        return Health(node_id, clock.wall_ms() + ahead, False)

    with clock.use(fake):
        watch = ClockWatch(config, LeaderReplica())  # type: ignore[arg-type]
        for _ in range(3):
            await watch._round(probe)
            fake.advance(2.0)
        assert abs(watch.offset_ms("node2") - 300) <= 2 and watch.majority_agrees()  # type: ignore[operator]
        node2_ahead_ms[0] = -1_800  # node2's clock steps back: it is now off this one's by 1.8 s
        await watch._round(probe)
        assert abs(watch.offset_ms("node2") + 1_800) <= 5  # type: ignore[operator]
        assert not watch.majority_agrees() and watch.hold_reason() == "clock_offset"


async def test_a_slow_probe_does_not_hide_a_step_it_cannot_judge() -> None:
    """Review: a newest sample whose round trip took seconds (this node's loop stalled while the
    probe was out) has bounds wide enough to agree with samples from before a step; it is not
    the one the others are judged by: the newest sharp sample is."""
    fake = FakeClock(wall_ms=T0, monotonic=100.0)
    config = Config(NodeSection("node1", Path("/nonexistent")), HttpSection(), RaftSection(), SchedulerSection(),
                    ExecutorSection(), LogSection())
    node2 = {"ahead_ms": 300, "rtt_s": 0.002}

    async def probe(http_addr: str) -> Health:
        fake.advance(node2["rtt_s"])
        node_id = {"127.0.0.1:8002": "node2", "127.0.0.1:8003": "node3"}[http_addr]
        return Health(node_id, clock.wall_ms() + (node2["ahead_ms"] if node_id == "node2" else 0), False)

    with clock.use(fake):
        watch = ClockWatch(config, LeaderReplica())  # type: ignore[arg-type]
        await watch._round(probe)
        fake.advance(2.0)
        node2.update(ahead_ms=-1_800, rtt_s=0.003)  # node2's clock steps back, measured sharply
        await watch._round(probe)
        fake.advance(2.0)
        node2.update(rtt_s=2.5)  # then a probe that waited 2.5 s (bounds ±1.25 s each way ... and more)
        await watch._round(probe)
        assert watch.offset_ms("node2") is not None and watch.offset_ms("node2") < -1_000  # type: ignore[operator]


async def test_a_sample_whose_error_bounds_straddle_the_limit_neither_agrees_nor_disagrees() -> None:
    """Found by the simulator (seed 446689000): the leader's clock stepped 885 ms ahead, which
    forgot every sample. Its next probe of node3 was sharp (-897 ms: off), but node2's request
    took 914 ms to arrive and its answer 79 ms to come back, so node2 measured -476 ms: the
    middle of a round trip of 993 ms, within the 500 ms limit though node2 was 894 ms behind.
    The leader counted node2 as agreeing, and moved replicated time 890 ms ahead of every
    other clock. A sample says the offset to within half its round trip: it agrees only when
    its whole error interval is in bound, disagrees only when the whole of it is out."""
    fake = FakeClock(wall_ms=T0, monotonic=100.0)
    config = Config(NodeSection("node1", Path("/nonexistent")), HttpSection(), RaftSection(), SchedulerSection(),
                    ExecutorSection(), LogSection())

    async def probe(http_addr: str) -> Health:
        node_id = {"127.0.0.1:8002": "node2", "127.0.0.1:8003": "node3"}[http_addr]
        if node_id == "node3":
            fake.advance(0.0015)
            answer = Health(node_id, clock.wall_ms() - 897, False)
            fake.advance(0.0015)
            return answer
        fake.advance(0.914)  # the request is slow to arrive ...
        answer = Health(node_id, clock.wall_ms() - 894, False)
        fake.advance(0.079)  # ... its answer is quick to come back
        return answer

    with clock.use(fake):
        watch = ClockWatch(config, LeaderReplica())  # type: ignore[arg-type]
        await watch._round(probe)
        assert -500 <= watch.offset_ms("node2") <= -450  # type: ignore[operator]  # its middle looks in bound
        assert not watch.in_bound("node2") and not watch.in_bound("node3")
        assert not watch.majority_agrees() and watch.hold_reason() == "clock_offset"
        assert watch.may_lead()  # node2's wide sample does not count against it either: one off of two
