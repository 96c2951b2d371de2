"""The simulator's Raft model (devkit.sim.raft_model) is safe and behaves as pysyncobj does.

Random runs (tests/sim/raft_harness.py checks after every event): election safety (one
leader per term), state machine safety (every node applies a prefix of one sequence), a
proposer called back with SUCCESS only after it applied that very entry (save pysyncobj's own
mix-up of a restarted node's forwards, Cluster._forwarder_answered), `ready` never going back;
after the faults heal, a leader everyone follows and every node applied everything, including
every entry that was answered SUCCESS. Scenarios: leader fallback, snapshots to a
lagging node, the journal replay of a restart, readiness, proposal outcomes, quorum, transfer,
the contact hooks, determinism.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devkit.sim.raft_log import Disk, Entry, RaftLog, Snapshot
from devkit.sim.raft_model import Fail, RaftNodeModel, RaftTiming
from tests.sim.raft_harness import Cluster, ListMachine, Net, Timer

HEAL_AT_S = 45.0
SETTLED_BY_S = HEAL_AT_S + 15.0  # the liveness bound: all healed, a leader and every entry applied


def chaos(cluster: Cluster, heal_at_s: float) -> None:
    """Random proposals through random nodes and one random fault every 0.3-1.5 s until heal_at_s;
    then the network heals, every process runs again and nothing more is proposed."""
    rng = random.Random(f"chaos:{cluster.seed}")
    counter = itertools.count()

    def propose() -> None:
        node = rng.choice(cluster.ids)
        if cluster.models[node] is not None:
            cluster.propose(node, f"{cluster.seed}:{next(counter)}".encode())
        if cluster.now + 0.1 < heal_at_s:
            cluster.at(cluster.now + rng.uniform(0.02, 0.3), propose)

    def fault() -> None:
        _one_fault(cluster, rng)
        if cluster.now + 1.5 < heal_at_s:
            cluster.at(cluster.now + rng.uniform(0.3, 1.5), fault)

    def heal() -> None:
        cluster.heal()
        cluster.net.drop_p = 0.0
        for node in cluster.ids:
            cluster.restart(node)
            cluster.resume(node)
            cluster.set_may_lead(node, True)

    cluster.at(0.5, propose)
    cluster.at(1.0, fault)
    cluster.at(heal_at_s, heal)


def _one_fault(c: Cluster, rng: random.Random) -> None:
    node = rng.choice(c.ids)
    leader = c.leader()
    later = c.now + rng.uniform(0.2, 5.0)  # sometimes past leader_fallback_s
    kind = rng.choice(["split", "oneway", "isolate_leader", "heal", "crash", "pause", "transfer",
                       "may_not_lead", "loss"])
    if kind == "split":
        ids = rng.sample(c.ids, len(c.ids))
        cut = rng.randint(1, len(ids) - 1)
        c.partition(ids[:cut], ids[cut:])
    elif kind == "oneway":  # a->b dropped, b->a delivered
        c.blocked.add((node, rng.choice([i for i in c.ids if i != node])))
    elif kind == "isolate_leader" and leader is not None:
        c.isolate(leader.node_id)
    elif kind == "heal":
        c.heal()
    elif kind == "crash":
        c.crash(node)
        c.at(later, lambda: c.restart(node))
    elif kind == "pause":
        c.pause(node)
        c.at(later, lambda: c.resume(node))
    elif kind == "transfer" and leader is not None:
        leader.transfer_leadership()
    elif kind == "may_not_lead":
        c.set_may_lead(node, False)
        c.at(later, lambda: c.set_may_lead(node, True))
    elif kind == "loss":
        c.net.drop_p = rng.choice([0.0, 0.02, 0.1])


def run_chaos(seed: int, n: int, heal_at_s: float = HEAL_AT_S, until_s: float = SETTLED_BY_S) -> Cluster:
    # some runs hold the odd message for longer than an election takes: stale terms arrive late
    slow_s = random.Random(f"net:{seed}").choice([0.3, 0.3, 1.5])
    cluster = Cluster(seed, n, timing=RaftTiming(compaction_min_entries=15), net=Net(drop_p=0.02, slow_s=slow_s))
    chaos(cluster, heal_at_s)
    cluster.run_until(until_s)
    return cluster


def assert_settled(c: Cluster) -> None:
    """Liveness after healing: one leader that everyone follows, and every node applied the whole log."""
    leader = c.leader()
    assert leader is not None, "no leader after healing"
    assert len(c.live()) == len(c.ids)
    for model in c.live():
        assert model.leader_id == leader.node_id
        assert model.last_applied == leader.commit_index == leader.last_applied
        assert model.ready
        assert c.machines[model.node_id].items == c.history
    # committed entries are never lost (but pysyncobj may answer another command's SUCCESS: Cluster._outcome)
    answered = {data for data, (_, error) in c.outcomes.items() if error == Fail.SUCCESS}
    assert answered - set(c.misattributed) <= set(c.history)


@pytest.mark.parametrize("seed", range(200))
def test_three_nodes_stay_safe_and_recover_under_faults(seed: int) -> None:
    c = run_chaos(seed, 3)
    assert_settled(c)


@pytest.mark.parametrize("seed", range(100))
def test_five_nodes_stay_safe_and_recover_under_faults(seed: int) -> None:
    c = run_chaos(1000 + seed, 5)
    assert_settled(c)


def test_the_random_runs_reach_what_they_are_meant_to() -> None:
    """The faults do happen: snapshots go to lagging nodes, leaders fall back, proposals succeed and fail."""
    runs = [run_chaos(seed, 3) for seed in range(5)]
    assert sum(c.snapshots_installed for c in runs) > 0
    assert sum(len(c.fallbacks) for c in runs) > 0
    errors = {error for c in runs for _, error in c.outcomes.values()}
    assert {Fail.SUCCESS, Fail.LEADER_CHANGED} <= errors
    assert all(len(c.leaders) > 3 and len(c.history) > 50 for c in runs)


def settled_cluster(seed: int, n: int = 3, timing: RaftTiming | None = None,
                    net: Net | None = None) -> tuple[Cluster, RaftNodeModel]:
    c = Cluster(seed, n, timing, net)
    c.run_until(3.0)
    leader = c.leader()
    assert leader is not None
    return c, leader


def test_a_partitioned_leader_leads_on_until_fallback() -> None:
    c, old = settled_cluster(7, 5, net=Net(slow_p=0.0))
    t = c.timing
    isolated_at, led_term = c.now, old.term
    c.isolate(old.node_id)
    c.run_until(isolated_at + t.leader_fallback_s - 0.1)
    new = c.leader()
    assert new is not None and new is not old and new.term > led_term
    assert old.is_leader and old.term == led_term  # two believe they lead, in different terms
    c.run_until(isolated_at + t.leader_fallback_s + t.heartbeat_s + 0.01)
    stepped = [at for at, node in c.fallbacks if node == old.node_id]
    assert stepped and isolated_at + t.leader_fallback_s - 0.07 < stepped[0]
    assert not old.is_leader and old.leader_id is None


def test_a_lagging_node_gets_the_snapshot() -> None:
    c, leader = settled_cluster(3, timing=RaftTiming(compaction_min_entries=20))
    lagger = leader.peers[0]
    c.crash(lagger)
    for k in range(100):
        c.at(c.now + 0.01 * k, lambda k=k: c.propose(leader.node_id, b"e%d" % k))
    c.run_until(c.now + 3.0)
    assert c.disks[leader.node_id].snapshot is not None
    assert c.disks[leader.node_id].snapshot.index > len(c.disks[lagger].entries)

    def ready_only_when_caught_up(model: RaftNodeModel) -> None:
        # it hears the leader's commit index at once, but is ready only once it applied that far
        if model.node_id == lagger and model.ready:
            assert len(c.machines[lagger].items) == 100

    c.watchers.append(ready_only_when_caught_up)
    c.restart(lagger)
    c.run_until(c.now + 3.0)
    assert c.snapshots_installed == 1 and c.model(lagger).ready
    assert c.machines[lagger].items == c.history == [b"e%d" % k for k in range(100)]


def test_a_restart_replays_its_journal_without_a_leader() -> None:
    c, leader = settled_cluster(5, timing=RaftTiming(compaction_min_entries=20))
    for k in range(50):
        c.at(c.now + 0.01 * k, lambda k=k: c.propose(leader.node_id, b"e%d" % k))
    c.run_until(c.now + 3.0)
    node = leader.peers[1]
    committed = c.disks[node].commit_index
    c.crash(node)
    c.isolate(node)
    c.restart(node)
    c.run_until(c.now + 0.3)
    model = c.models[node]
    assert model is not None and model.leader_id is None
    assert model.last_applied == committed and c.machines[node].items == c.history
    assert not model.ready  # it has not heard a leader's commit index yet
    c.heal()
    c.run_until(c.now + 5.0)
    assert model.ready and c.machines[node].items == c.history


def test_ready_comes_once_a_leaders_commit_index_is_applied() -> None:
    c = Cluster(11, 3)
    c.isolate("n3")
    c.run_until(0.1)
    assert not any(m.ready for m in c.live())
    c.run_until(3.0)
    assert [m.ready for m in c.live()] == [True, True, False]  # n3 never heard a leader
    c.heal()
    c.run_until(8.0)
    assert all(m.ready for m in c.live())


def test_a_follower_is_called_back_after_it_applied_its_forwarded_command() -> None:
    c, leader = settled_cluster(13)
    follower = leader.peers[0]
    c.propose(follower, b"forwarded")
    c.run_until(c.now + 1.0)
    assert c.outcomes[b"forwarded"] == (1, Fail.SUCCESS)  # the harness checks it was applied there first


def test_without_a_leader_a_command_waits_or_fails_at_once() -> None:
    c = Cluster(17, 3)
    c.propose("n1", b"waits")
    c.run_until(3.0)
    assert c.outcomes[b"waits"][1] == Fail.SUCCESS  # commandsWaitLeader: it waited for one
    c = Cluster(17, 3, timing=RaftTiming(commands_wait_leader=False))
    c.propose("n1", b"fails")
    c.run_until(0.01)
    assert c.outcomes[b"fails"] == (None, Fail.MISSING_LEADER)


def test_an_unanswered_forward_fails_when_the_leader_changes() -> None:
    c, leader = settled_cluster(19)
    follower = leader.peers[0]
    c.blocked.add((follower, leader.node_id))  # the forward is lost; the leader's heartbeats still arrive
    c.propose(follower, b"lost")
    c.run_until(c.now + 0.5)
    assert b"lost" not in c.outcomes
    c.crash(leader.node_id)
    c.run_until(c.now + 5.0)
    assert c.outcomes[b"lost"] == (None, Fail.LEADER_CHANGED)


def test_a_deposed_leaders_own_command_is_discarded() -> None:
    c, leader = settled_cluster(23)
    c.isolate(leader.node_id)
    c.propose(leader.node_id, b"never")
    c.run_until(c.now + 2.0)
    new = c.leader()
    assert new is not None and new is not leader
    for k in range(3):
        c.propose(new.node_id, b"instead%d" % k)
    c.run_until(c.now + 1.0)
    c.heal()
    c.run_until(c.now + 3.0)
    assert c.outcomes[b"never"] == (None, Fail.DISCARDED)
    assert b"never" not in c.history


def test_quorum_counts_live_processes_not_partitions() -> None:
    c, _ = settled_cluster(29)
    c.isolate("n1")
    assert c.model("n1").has_quorum()
    c.crash("n2")
    assert c.model("n1").has_quorum()
    c.crash("n3")
    assert not c.model("n1").has_quorum()


def test_leadership_moves_to_the_most_caught_up_follower() -> None:
    c, leader = settled_cluster(31)
    assert c.model(leader.peers[0]).transfer_leadership() == Fail.NOT_LEADER
    for peer in leader.peers:
        c.set_may_lead(peer, False)
    assert leader.transfer_leadership() == Fail.SUCCESS
    c.run_until(c.now + 2.0)
    assert c.leader() is leader  # the target may not lead: nothing happens
    for peer in leader.peers:
        c.set_may_lead(peer, True)
    assert leader.transfer_leadership() == Fail.SUCCESS
    c.run_until(c.now + 1.0)
    new = c.leader()
    assert new is not None and new.node_id == max(leader.peers) and not leader.is_leader  # both caught up
    for peer in new.peers:
        c.crash(peer)
    assert new.transfer_leadership() == Fail.REQUEST_DENIED  # no one connected


def test_the_contact_hooks_see_what_schedbs_raft_node_sees() -> None:
    c, leader = settled_cluster(37)
    follower = c.model(leader.peers[0])
    seen: list[tuple[int, int, int]] = []  # (message term, node term, entries new to the node) at the hook
    disk = c.disks[follower.node_id]

    def hook(message: dict[str, Any]) -> None:
        last = len(disk.entries) + (disk.snapshot.index if disk.snapshot else 0)
        seen.append((message["term"], follower.term, message["prevLogIdx"] + len(message["entries"]) - last))

    follower.on_append_entries = hook
    c.propose(leader.node_id, b"x")
    c.run_until(c.now + 1.0)
    assert seen and all(msg_term >= node_term for msg_term, node_term, _ in seen)
    assert any(new > 0 for _, _, new in seen)  # called before the entries are written
    at, match = leader.follower_acks[follower.node_id]
    assert match == leader.commit_index and leader.host.now() - at < 2 * c.timing.heartbeat_s


def test_the_same_seed_gives_the_same_run() -> None:
    first, second = run_chaos(41, 3, 10.0, 15.0), run_chaos(41, 3, 10.0, 15.0)
    assert first.trace.hexdigest() == second.trace.hexdigest()
    assert first.history == second.history and first.outcomes == second.outcomes


def test_the_run_does_not_depend_on_the_hash_seed() -> None:
    """Set or dict order of strings changes with PYTHONHASHSEED: a run must not depend on it."""
    code = "from tests.sim.test_raft_model import run_chaos; print(run_chaos(43, 5, 10.0, 12.0).trace.hexdigest())"
    root = Path(__file__).resolve().parents[2]
    digests = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}).stdout
               for hash_seed in ("1", "2")}
    assert len(digests) == 1 and len(digests.pop().strip()) == 64


# -- single nodes on a fake host: what the random runs reach only by chance ----------------------


class FakeHost:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.rng = random.Random(node_id)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def now(self) -> float:
        return 100.0

    def call_later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> Timer:
        return Timer()  # the tests deliver messages; no timer fires

    def send(self, to: str, message: dict[str, Any]) -> None:
        self.sent.append((to, message))

    def process_alive(self, node_id: str) -> bool:
        return True


def lone_node(disk: Disk) -> tuple[RaftNodeModel, FakeHost]:
    host = FakeHost("n1")
    return RaftNodeModel(host, ["n1", "n2", "n3"], RaftTiming(), disk, ListMachine(), lambda: None, lambda: None), host


def vote_request(term: int) -> dict[str, Any]:
    return {"type": "request_vote", "term": term, "last_log_index": 0, "last_log_term": 0}


def test_one_vote_per_term_even_across_a_restart() -> None:
    disk = Disk()
    node, host = lone_node(disk)
    node.receive("n2", vote_request(5))
    assert host.sent == [("n2", {"type": "response_vote", "term": 5})]
    node.stop()
    node, host = lone_node(disk)
    node.receive("n3", vote_request(5))
    assert host.sent == []
    node.receive("n3", vote_request(6))
    assert host.sent == [("n3", {"type": "response_vote", "term": 6})]


def test_a_stale_leader_gets_no_answer() -> None:
    node, host = lone_node(Disk(term=5))
    seen: list[dict[str, Any]] = []
    node.on_append_entries = seen.append
    beat = {"type": "append_entries", "commit_index": 0, "prevLogIdx": 0, "prevLogTerm": 0, "entries": []}
    node.receive("n2", {**beat, "term": 4})
    assert host.sent == [] and seen == [] and node.leader_id is None
    node.receive("n3", {**beat, "term": 5})
    assert [m["success"] for _, m in host.sent] == [True] and len(seen) == 1 and node.leader_id == "n3"


def test_the_log_truncates_only_where_a_leader_disagrees() -> None:
    log = RaftLog(Disk(entries=[Entry(1, b"a"), Entry(1, b"b"), Entry(1, b"c")]))
    assert log.accept(0, 0, [Entry(1, b"a")], 0) == (True, 2)  # a late, shorter message keeps b and c
    assert log.last_index == 3
    assert log.accept(1, 1, [Entry(2, b"x")], 1) == (True, 3)
    assert [e.data for e in log.disk.entries] == [b"a", b"x"]
    log.install(Snapshot(1, 1, b""))  # it agrees at index 1: what follows stays
    assert log.base_index == 1 and log.last_index == 2
    log.install(Snapshot(2, 3, b""))  # it does not: the log starts afresh after it
    assert log.base_index == 2 and log.last_index == 2 and log.disk.entries == []
