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

    def __init__(self, size: int = 3) -> None:
        self.size = size
        self.state = StateMachine()
        self.state.apply(AssignFires(T0, [], leader_id="node1"))
        for n in range(1, size + 1):
            self.state.apply(RegisterNode(T0, f"node{n}", f"127.0.0.1:900{n}", f"127.0.0.1:800{n}"))

    def read(self, query: Any, *args: Any) -> Any:
        return query(self.state, *args)

    def members(self) -> list[str]:
        return [f"127.0.0.1:900{n}" for n in range(2, self.size + 1)]

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


def config() -> Config:
    return Config(NodeSection("node1", Path("/nonexistent")), HttpSection(), RaftSection(), SchedulerSection(),
                  ExecutorSection(), LogSection())


def lopsided(fake: FakeClock, behind_ms: int, there_s: float, back_s: float) -> Health:
    """An answer whose request took there_s to arrive and back_s to come back."""
    fake.advance(there_s)
    answer_ms = clock.wall_ms() - behind_ms
    fake.advance(back_s)
    return answer_ms  # type: ignore[return-value]


async def test_a_sharp_sample_from_before_a_step_does_not_outlive_slower_ones_after_it() -> None:
    """Review: node2's and node3's clocks step 900 ms back, making this leader the one fast
    clock. node3 is measured sharply; node2's probes now take 600 ms (550 ms there). Its sharp
    sample from before the step (offset 0) must not stay the best for up to 10 s: the newer
    samples' bounds all exclude it."""
    fake = FakeClock(wall_ms=T0, monotonic=100.0)
    behind = {"node2": 0, "node3": 0}

    async def probe(http_addr: str) -> Health:
        node_id = {"127.0.0.1:8002": "node2", "127.0.0.1:8003": "node3"}[http_addr]
        there_s, back_s = (0.55, 0.05) if behind[node_id] and node_id == "node2" else (0.001, 0.001)
        return Health(node_id, lopsided(fake, behind[node_id], there_s, back_s), False)  # type: ignore[arg-type]

    with clock.use(fake):
        watch = ClockWatch(config(), LeaderReplica())  # type: ignore[arg-type]
        await watch._round(probe)
        assert watch.majority_agrees()
        behind.update(node2=900, node3=900)
        for _ in range(3):
            fake.advance(1.0)
            await watch._round(probe)
            assert not watch.in_bound("node2") and not watch.majority_agrees()


async def test_with_five_members_a_majority_of_all_must_agree() -> None:
    """Review: with five members, this leader and node2 900 ms ahead of the other three; node3's
    and node4's probes are too slow to tell, node5's is sharp. One agreeing and one disagreeing
    is not a majority of five agreeing."""
    fake = FakeClock(wall_ms=T0, monotonic=100.0)

    async def probe(http_addr: str) -> Health:
        node_id = "node" + http_addr[-1]
        if node_id == "node2":
            return Health(node_id, lopsided(fake, 0, 0.001, 0.001), False)  # type: ignore[arg-type]
        if node_id in ("node3", "node4"):
            return Health(node_id, lopsided(fake, 900, 0.9, 0.05), False)  # type: ignore[arg-type]
        return Health(node_id, lopsided(fake, 900, 0.001, 0.001), False)  # type: ignore[arg-type]

    with clock.use(fake):
        watch = ClockWatch(config(), LeaderReplica(size=5))  # type: ignore[arg-type]
        await watch._round(probe)
        assert watch.in_bound("node2") and not watch.in_bound("node5")
        assert watch.offset_ms("node3") is not None and not watch.in_bound("node3")
        assert not watch.majority_agrees()


async def test_a_member_measured_off_or_holding_gives_up_its_fires_and_one_measured_roughly_keeps_them() -> None:
    fake = FakeClock(wall_ms=T0, monotonic=100.0)
    holding = {"node2": False, "node3": False}
    timing = {"node2": (0.001, 0.001), "node3": (0.001, 0.001)}
    behind = {"node2": 0, "node3": 0}

    async def probe(http_addr: str) -> Health:
        node_id = {"127.0.0.1:8002": "node2", "127.0.0.1:8003": "node3"}[http_addr]
        there_s, back_s = timing[node_id]
        return Health(node_id, lopsided(fake, behind[node_id], there_s, back_s), holding[node_id])  # type: ignore[arg-type]

    with clock.use(fake):
        watch = ClockWatch(config(), LeaderReplica())  # type: ignore[arg-type]
        assert not watch.holds_fires("node2")  # unmeasured: keeps them
        await watch._round(probe)
        assert not watch.holds_fires("node2") and watch.may_execute("node2")
        holding["node2"] = True
        fake.advance(1.0)
        await watch._round(probe)
        assert watch.holds_fires("node2") and not watch.may_execute("node2")
        behind["node3"], timing["node3"] = 700, (0.5, 0.1)  # a step, measured roughly: 700 ± 300
        fake.advance(1.0)
        await watch._round(probe)
        assert not watch.holds_fires("node3") and not watch.may_execute("node3")
        timing["node3"] = (0.001, 0.001)
        fake.advance(1.0)
        await watch._round(probe)
        assert watch.holds_fires("node3")


class RestartedReplica(LeaderReplica):
    """A node of a three-node cluster just restarted: Raft knows its peers, its state does not yet
    know who is registered (the journal is still to be applied)."""

    def __init__(self) -> None:
        super().__init__()
        self.state = StateMachine()


async def test_a_node_that_does_not_know_its_members_yet_claims_no_agreement() -> None:
    """Simulator seed 453000212: node1 restarted with its clock 2.1 s ahead; judged before its
    state knew the registered members, it had no member to ask, counted itself a majority of
    one, won the next election on that verdict and moved replicated time 2 s ahead."""
    with clock.use(FakeClock(wall_ms=T0, monotonic=100.0)):
        watch = ClockWatch(config(), RestartedReplica())  # type: ignore[arg-type]
        assert not watch.majority_agrees()
        watch._judge()
        assert watch.hold_reason() == "clock_unknown"
