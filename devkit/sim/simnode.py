"""A node of the simulated cluster: the real schedb.node.Node, connected to the simulator.

Everything a node runs is the real code (the dispatcher, the executor and its local fires,
the clock watch, registration, shutdown); only its ways out are the simulator's: the Raft
port (devkit.sim.replica), the webhook client (devkit.sim.receiver) and the clock probe,
which asks the other node's process over the simulated network as GET /health would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from devkit.sim.network import Network
from devkit.sim.raft_log import Disk
from devkit.sim.raft_types import RaftTiming
from devkit.sim.receiver import Receiver
from devkit.sim.replica import BeforeApply, OnApply, SimReplica
from devkit.sim.world import Process
from schedb.clock import wall_ms
from schedb.clockwatch import PROBE_TIMEOUT_S, REFUSED, Health
from schedb.commands import Outcome
from schedb.config import Config
from schedb.node import Node
from schedb.raft import Replica
from schedb.webhook import Send


class SimNode(Node):
    def __init__(self, config: Config, process: Process, network: Network, receiver: Receiver,
                 addr_of: dict[str, str], disk: Disk, on_apply: OnApply,
                 before_apply: BeforeApply | None = None) -> None:
        super().__init__(config)
        self.process = process
        self._network = network
        self._receiver = receiver
        self._addr_of = addr_of
        self._node_of_http = {self._http_of(addr): node_id for node_id, addr in addr_of.items()}
        self._disk = disk
        self._on_apply = on_apply
        self._before_apply = before_apply
        self.stopped = False

    @staticmethod
    def _http_of(raft_addr: str) -> str:
        host, _, port = raft_addr.rpartition(":")
        return f"{host}:{int(port) - 1000}"

    def _connect(self, loop: asyncio.AbstractEventLoop) -> tuple[Replica, Send]:
        r = self.config.raft
        timing = RaftTiming(heartbeat_s=r.heartbeat_s, election_min_s=r.election_min_s,
                            election_max_s=r.election_max_s, leader_fallback_s=r.leader_fallback_s,
                            compaction_min_entries=r.compaction_min_entries, connection_retry_s=r.connection_retry_s,
                            commands_queue_size=self.config.http.pending_commands_max * 4)
        replica = SimReplica(self.config, self.process, self._network, self._addr_of, timing, self._disk,
                             self._on_state_change, self._on_apply, self._before_apply)
        return replica, self._send  # type: ignore[return-value]  # SimReplica is Replica's interface

    async def _send(self, fire: dict[str, Any], spec: dict[str, Any], correlation_id: str,
                    secret_values: list[str]) -> Outcome:
        return await self._receiver.call(self.node_id, self.process.incarnation, fire, spec)

    async def _measure_clocks(self) -> None:
        await self.clock.measure(self._probe)

    async def _disconnect(self) -> None:
        self.replica.close()
        self.stopped = True

    # -- GET /health over the simulated network ------------------------------------------------

    async def _probe(self, http_addr: str) -> Health | str | None:
        target = self._node_of_http.get(http_addr)
        if target is None:
            return None
        if not self.process.world.alive(target):
            await asyncio.sleep(0.001)  # a round trip to a port that refuses
            return REFUSED
        answer: asyncio.Future[Health] = self.process.loop.create_future()
        self._network.send(self.node_id, target, _answer_health, self.node_id, _settle_on(answer))
        try:
            return await asyncio.wait_for(answer, PROBE_TIMEOUT_S)
        except TimeoutError:
            return None


def _settle_on(answer: asyncio.Future[Health]) -> Callable[[Process, Health], None]:
    def settle(process: Process, health: Health) -> None:
        if not answer.done():
            answer.set_result(health)

    return settle


def _answer_health(process: Process, asker: str, settle: Callable[[Process, Health], None]) -> None:
    """On the asked node's process (its clocks): /health's answer, sent back to the asker."""
    node: SimNode | None = getattr(process, "node", None)
    if node is None or not hasattr(node, "clock"):
        return  # still starting: no answer (the probe times out)
    health = Health(node.node_id, wall_ms(), node.clock_hold())
    node._network.send(node.node_id, asker, _deliver_answer, settle, health)


def _deliver_answer(process: Process, settle: Callable[[Process, Health], None], health: Health) -> None:
    settle(process, health)
