"""Faults drawn from the seed: each kind is a function that starts a fault now and schedules
its end. `FaultPlan` draws one every few seconds until the quiet period before the end,
when everything heals (devkit.sim.run). To add a fault: write `_your_fault(sim, rng)`,
give it a weight in KINDS, and make sure `heal_everything` undoes what it leaves behind.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from devkit.sim.cluster import Cluster

Fault = Callable[[Cluster, random.Random], None]
LONGEST_CUT_S = 15.0  # partitions and pauses: within the promise (docs/architecture.md, "What a partition costs")


def _target(sim: Cluster, rng: random.Random, *, running: bool = True) -> str | None:
    """A node to hit: the leader half the time (its failures are the interesting ones)."""
    candidates = [n for n in sim.node_ids if (sim.alive(n) and not sim.world.processes[n].paused) or not running]
    leader = sim.leader()
    if leader in candidates and rng.random() < 0.5:
        return leader
    return rng.choice(candidates) if candidates else None


def _crash(sim: Cluster, rng: random.Random) -> None:
    node = _target(sim, rng)
    if node is None:
        return
    sim.crash(node)
    sim.world.after(rng.uniform(0.5, 30), _restart, sim, node)


def _restart(sim: Cluster, node: str) -> None:
    if not sim.alive(node):
        sim.start(node)


def _terminate(sim: Cluster, rng: random.Random) -> None:
    """SIGTERM (a drain: the node hands its fires back), then a restart."""
    node = _target(sim, rng)
    if node is None:
        return
    sim.terminate(node)
    sim.world.after(rng.uniform(9, 30), _restart, sim, node)  # the shutdown takes up to 8 s


def _pause(sim: Cluster, rng: random.Random) -> None:
    node = _target(sim, rng)
    if node is None:
        return
    sim.pause(node)
    sim.world.after(rng.choice((rng.uniform(0.2, 3), rng.uniform(3, LONGEST_CUT_S))), _resume, sim, node)


def _resume(sim: Cluster, node: str) -> None:
    if sim.world.processes[node].paused:
        sim.resume(node)


def _partition(sim: Cluster, rng: random.Random) -> None:
    """One node cut off from the others: both ways, or one way only (asymmetric)."""
    node = _target(sim, rng, running=False)
    if node is None:
        return
    hold = rng.random() < 0.5
    one_way = rng.random() < 0.25
    links = [(node, other) for other in sim.node_ids if other != node]
    if not one_way:
        links += [(other, node) for other in sim.node_ids if other != node]
    elif rng.random() < 0.5:
        links = [(b, a) for a, b in links]
    for src, dst in links:
        sim.network.cut(src, dst, hold)
    sim.links_changed()
    sim.trace.event(node, "partitioned", links=" ".join(f"{a}>{b}" for a, b in links), hold=hold)
    # Shorter than the shortest lease (timeout 1 s + 15 s): beyond it the fires of the cut-off
    # node move as new attempts and are delivered again, as documented (at-least-once).
    sim.world.after(rng.uniform(0.5, LONGEST_CUT_S), _heal, sim, links)


def _heal(sim: Cluster, links: list[tuple[str, str]]) -> None:
    for src, dst in links:
        sim.network.heal(src, dst)
    sim.links_changed()
    sim.trace.event("sim", "healed", links=" ".join(f"{a}>{b}" for a, b in links))


def _clock(sim: Cluster, rng: random.Random) -> None:
    """A node's wall clock steps, within the offset bound or beyond it, and later comes back."""
    node = rng.choice(sim.node_ids)
    bound_s = sim.configs[node].clock.max_offset_ms / 1000
    step_s = rng.choice((rng.uniform(-0.8, 0.8) * bound_s, rng.uniform(1.2, 8) * bound_s * rng.choice((-1, 1))))
    sim.world.wall_offset[node] += step_s
    sim.world.last_clock_step = sim.world.now
    sim.trace.event(node, "clock_stepped", by_ms=round(step_s * 1000))
    sim.world.after(rng.uniform(3, 40), _clock_back, sim, node, step_s)


def _clock_back(sim: Cluster, node: str, step_s: float) -> None:
    if sim.quiet:
        return  # heal_everything set every clock already
    sim.world.wall_offset[node] -= step_s
    sim.world.last_clock_step = sim.world.now
    sim.trace.event(node, "clock_stepped", by_ms=round(-step_s * 1000))


def _network(sim: Cluster, rng: random.Random) -> None:
    """A bad spell of the network: loss, slow messages, reordering."""
    net = sim.network
    net.drop_p, net.spike_p = rng.choice((0.0, 0.01, 0.05, 0.2)), rng.choice((0.05, 0.2, 0.5))
    net.spike_ms, net.reorder = rng.choice((50.0, 300.0, 1500.0)), rng.random() < 0.5
    sim.trace.event("sim", "network_bad", drop=net.drop_p, spikes=net.spike_p, spike_ms=net.spike_ms,
                    reorder=net.reorder)
    sim.world.after(rng.uniform(2, 30), _network_good, sim)


def _network_good(sim: Cluster) -> None:
    net = sim.network
    net.drop_p, net.spike_p, net.reorder = 0.0, 0.0, False
    sim.trace.event("sim", "network_good")


def _receiver(sim: Cluster, rng: random.Random) -> None:
    sim.receiver.mode = rng.choice(("slow", "failing", "hanging", "down"))
    sim.trace.event("sim", "receiver", mode=sim.receiver.mode)
    sim.world.after(rng.uniform(2, 30), _receiver_back, sim)


def _receiver_back(sim: Cluster) -> None:
    sim.receiver.mode = "normal"
    sim.trace.event("sim", "receiver", mode="normal")


def _transfer(sim: Cluster, rng: random.Random) -> None:
    leader = sim.leader()
    replica = sim.replica(leader) if leader else None
    if replica is not None:
        sim.trace.event(leader, "leadership_transfer")
        replica.transfer_leadership()


KINDS: dict[str, tuple[Fault, int]] = {
    "crash": (_crash, 3), "terminate": (_terminate, 1), "pause": (_pause, 3), "partition": (_partition, 3),
    "clock": (_clock, 2), "network": (_network, 2), "receiver": (_receiver, 2), "transfer": (_transfer, 1),
}


class FaultPlan:
    def __init__(self, sim: Cluster, rng: random.Random, kinds: dict[str, tuple[Fault, int]] = KINDS,
                 gap_s: tuple[float, float] = (3.0, 20.0)) -> None:
        self._sim = sim
        self._rng = rng
        self._kinds = kinds
        self._gap_s = gap_s
        self.drawn: dict[str, int] = {}

    def start(self, first_s: float, until_s: float) -> None:
        self._until_s = until_s
        self._sim.world.at(first_s, self._next)

    def _next(self) -> None:
        sim, rng = self._sim, self._rng
        if sim.world.now >= self._until_s:
            return
        names = sorted(self._kinds)
        name = rng.choices(names, [self._kinds[n][1] for n in names])[0]
        self.drawn[name] = self.drawn.get(name, 0) + 1
        self._kinds[name][0](sim, rng)
        sim.world.after(rng.uniform(*self._gap_s), self._next)


def heal_everything(sim: Cluster) -> None:
    """The quiet period: every link heals, every process runs, every clock is back."""
    sim.quiet = True
    sim.network.heal_all()
    sim.links_changed()
    _network_good(sim)
    _receiver_back(sim)
    for node in sim.node_ids:
        sim.world.wall_offset[node] = max(-0.05, min(0.05, sim.world.wall_offset[node]))
        if sim.world.processes[node].paused:
            sim.resume(node)
        if not sim.alive(node):
            sim.start(node)
    sim.trace.event("sim", "healed_everything")
