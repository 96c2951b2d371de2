"""The simulated cluster: three or five nodes in one world, and what faults can do to them.

A node's durable files (its Raft `Disk`) outlive its processes; a process is started, crashed
(SIGKILL: its loop and everything on it are dropped), paused and resumed (SIGSTOP/SIGCONT),
or stopped gracefully (SIGTERM: schedb.node.Node.stop, the real shutdown with its hand-back).
Operators' commands go through a node as the API sends them, stamped with that node's
clock as the leader reads it (schedb.clockwatch.ClockWatch.leader_time_ms).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from devkit.sim.checks import Referee
from devkit.sim.network import Network
from devkit.sim.raft_log import Disk
from devkit.sim.receiver import Call, Receiver
from devkit.sim.replica import SimReplica
from devkit.sim.simnode import SimNode
from devkit.sim.trace import Trace
from devkit.sim.world import Process, World
from schedb.clock import wall_ms
from schedb.commands import Command
from schedb.config import Config, config_from
from schedb.executor import Executor
from schedb.fsm.model import Result
from schedb.raft import SubmitError

RAFT_PORT = 9001
HTTP_PORT = 8001  # raft port - 1000 (SimNode._http_of)


def draw_knobs(rng: random.Random) -> dict[str, dict[str, Any]]:
    """Timing settings drawn per seed around the defaults (FoundationDB's knob randomization):
    bugs that only one setting shows get their chance, and slower heartbeats and dispatch
    rounds make a seed cheaper. Every draw passes schedb.config's own checks."""
    heartbeat_s = rng.choice((0.1, 0.15, 0.2, 0.3))
    return {"raft": {"heartbeat_s": heartbeat_s, "election_min_s": round(heartbeat_s * 4, 2),
                     "election_max_s": round(heartbeat_s * 4 + rng.choice((0.8, 1.2, 1.6)), 2)},
            "scheduler": {"dispatch_interval_s": rng.choice((0.1, 0.2, 0.3))},
            "clock": {"probe_interval_s": rng.choice((1.0, 2.0, 3.0))}}


# One seed in DRIFT_EVERY gives one node a config whose bound of the state differs from the
# others' (an operator's edit not yet rolled out everywhere). Apply must not read a node's own
# config: the leader's values go through the log (SetLimits), or that node creates a job
# another refuses (issue 16, defect 5). Drawn from an rng of its own: the other seeds run as before.
DRIFT_EVERY = 4
DRIFTED_SLOT_JOBS_MAX = (3, 6, 10)


def draw_drift(seed: int, node_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """node id → config sections that differ on that node only (none in most seeds)."""
    rng = random.Random(f"drift:{seed}")
    if rng.randrange(DRIFT_EVERY):
        return {}
    return {rng.choice(node_ids): {"scheduler": {"slot_jobs_max": rng.choice(DRIFTED_SLOT_JOBS_MAX)}}}


def sim_config(node_id: str, index: int, members: int, overrides: dict[str, dict[str, Any]]) -> Config:
    """A node's config: the defaults, on loopback addresses that only name the node here."""
    raft = {"listen": f"127.0.0.{index}:{RAFT_PORT}", "peers": [f"127.0.0.{i}:{RAFT_PORT}"
                                                                  for i in range(1, members + 1) if i != index],
            "compaction_min_entries": 400}
    raw = {"node": {"id": node_id, "data_dir": "/tmp/schedb-sim-unused"}, "raft": raft,
           "http": {"listen": f"127.0.0.{index}:{HTTP_PORT}"}, "egress": {"allow_private": True}}
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    return config_from(raw, {})


def _merged(knobs: dict[str, dict[str, Any]], extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {section: {**knobs.get(section, {}), **extra.get(section, {})}
            for section in [*knobs, *(name for name in extra if name not in knobs)]}


class Cluster:
    def __init__(self, seed: int, members: int, trace: Trace, overrides: dict[str, dict[str, Any]] | None = None,
                 world: World | None = None) -> None:
        self.rng = random.Random(seed)
        self.world = world or World()
        self.trace = trace
        self.network = Network(self.world, random.Random(self.rng.random()))
        self.receiver = Receiver(self.world, random.Random(self.rng.random()), self._called)
        self.node_ids = [f"n{i}" for i in range(1, members + 1)]
        knobs = draw_knobs(self.rng)
        for section, values in (overrides or {}).items():
            knobs[section] = {**knobs.get(section, {}), **values}
        trace.event("sim", "knobs", **{f"{section}.{key}": value for section, values in knobs.items()
                                       for key, value in values.items()})
        drift = draw_drift(seed, self.node_ids)
        for node_id, sections in drift.items():
            trace.event(node_id, "config_drift", **{f"{section}.{key}": value for section, values in sections.items()
                                                    for key, value in values.items()})
        self.configs = {node_id: sim_config(node_id, i, members, _merged(knobs, drift.get(node_id, {})))
                        for i, node_id in enumerate(self.node_ids, start=1)}
        self.addr_of = {node_id: config.raft.listen for node_id, config in self.configs.items()}
        self.disks = {node_id: Disk() for node_id in self.node_ids}
        self.nodes: dict[str, SimNode] = {}
        self._incarnations = dict.fromkeys(self.node_ids, 0)
        self.referee = Referee(self.world, self.configs[self.node_ids[0]].clock.max_offset_ms, self.live_replicas,
                               self._executor_of)
        # Two probe rounds and their answers: a step shows in the samples by then.
        self.referee.clock_grace_s = 2 * self.configs[self.node_ids[0]].clock.probe_interval_s + 1.0
        if trace.full:
            self.referee.on_commit = trace.committed
        self.quiet = False  # the quiet period before the end: faults are over
        self.graveyard: list[Process] = []  # dead processes, kept so their coroutines are never collected mid-run
        for node_id in self.node_ids:
            self.world.add_host(node_id, mono_offset=self.rng.uniform(100, 10_000),
                                wall_offset=self.rng.uniform(-0.05, 0.05))

    # -- processes -------------------------------------------------------------------------------

    def start(self, node_id: str) -> None:
        self._incarnations[node_id] += 1
        process = Process(self.world, node_id, self._incarnations[node_id])
        self.world.processes[node_id] = process
        self.world.processes_changed()
        node = SimNode(self.configs[node_id], process, self.network, self.receiver, self.addr_of,
                       self.disks[node_id], self.referee.on_apply, self.referee.before_apply)
        process.node = node  # type: ignore[attr-defined]  # where /health probes find it
        self.nodes[node_id] = node
        process.loop.call_soon(lambda: process.loop.create_task(node.start()))
        self.trace.event(node_id, "process_started", incarnation=process.incarnation)

    def _called(self, call: Call) -> None:
        """A webhook call goes out (the receiver's ledger has it): checked and traced."""
        self.trace.event(call.node, "webhook_called", fire=call.fire_id, attempt=call.attempt)
        self.referee.on_call(call)

    def crash(self, node_id: str) -> None:
        process = self.world.processes[node_id]
        if not process.alive:
            return
        process.alive = False
        self.referee.ended[(node_id, process.incarnation)] = self.world.now
        self.referee.cut_offs.pause(node_id, False)  # a pause ends with its process
        self.nodes[node_id].replica.close()
        process.loop.discard()
        self.graveyard.append(process)
        self.trace.event(node_id, "process_killed", incarnation=process.incarnation)

    def pause(self, node_id: str) -> None:
        self.world.processes[node_id].paused = True
        self.referee.cut_offs.pause(node_id, True)
        self.trace.event(node_id, "process_paused")

    def resume(self, node_id: str) -> None:
        self.world.processes[node_id].paused = False
        self.referee.cut_offs.pause(node_id, False)
        self.trace.event(node_id, "process_resumed")

    def links_changed(self) -> None:
        """A link was cut or healed (the referee's record of who was cut off from whom)."""
        links = [(a, b) for a in self.node_ids for b in self.node_ids if a != b]
        self.referee.cut_offs.links({link for link in links if self.network.is_cut(*link)}, links)

    def terminate(self, node_id: str) -> None:
        """SIGTERM: the node's own shutdown; its process ends when that returns."""
        process = self.world.processes[node_id]
        node = self.nodes[node_id]
        self.trace.event(node_id, "process_terminating")

        async def shut_down() -> None:
            await node.stop()
            self.world.after(0, self._ended, process)

        process.loop.call_soon(lambda: process.loop.create_task(shut_down()))

    def _ended(self, process: Process) -> None:
        if process.alive and self.world.processes.get(process.node_id) is process:
            self.crash(process.node_id)

    def alive(self, node_id: str) -> bool:
        return self.world.alive(node_id)

    def leader(self) -> str | None:
        """The node that leads now (a deposed leader that still thinks so is not counted)."""
        leaders = [(node.replica.raft.term, node_id) for node_id, node in sorted(self.nodes.items())
                   if self.alive(node_id) and hasattr(node, "replica") and node.replica.is_leader()]
        return max(leaders)[1] if leaders else None

    def _executor_of(self, node_id: str) -> Executor | None:
        node = self.nodes.get(node_id)
        return getattr(node, "executor", None) if node is not None and self.alive(node_id) else None

    def live_replicas(self) -> list[SimReplica]:
        return [replica for node_id in self.node_ids if self.alive(node_id) and (replica := self.replica(node_id))]

    def replica(self, node_id: str) -> SimReplica | None:
        node = self.nodes.get(node_id)
        return node.replica if node is not None and hasattr(node, "replica") else None  # type: ignore[return-value]

    # -- operators ---------------------------------------------------------------------------

    def submit(self, node_id: str, make: Callable[[int], Command], label: str,
               on_result: Callable[[Result | None], None] | None = None) -> None:
        """An operator's command through node_id's API: stamped there, submitted, its answer traced."""
        process = self.world.processes[node_id]
        node = self.nodes[node_id]
        if not process.alive or not hasattr(node, "clock"):
            return

        async def call() -> None:
            command = make(node.clock.leader_time_ms(wall_ms()))
            try:
                result: Result | None = await node.replica.submit(command)
            except SubmitError as exc:
                result = None
                self.trace.event(node_id, "operator_refused", action=label, reason=exc.reason)
            else:
                self.trace.event(node_id, "operator", action=label, error=result.get("error"))
            if on_result is not None:
                on_result(result)

        process.loop.call_soon(lambda: process.loop.create_task(call()))

    def calls(self) -> list[Call]:
        return self.receiver.calls
