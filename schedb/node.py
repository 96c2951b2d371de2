"""One schedb node from one config: its parts, wired.

    config → Replica (pysyncobj + State) → Dispatcher (leader) + Executor (followers)

The HTTP API (schedb.api) sits above this and talks to a Node; schedb.serve, the
composition root, builds both.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

import structlog

from schedb import secretbox
from schedb.breaker import Breakers
from schedb.clock import monotonic, wall_ms
from schedb.clockwatch import ClockWatch
from schedb.commands import RegisterNode, SetDefaultQuotas, SetLimits
from schedb.config import Config
from schedb.dispatcher import Dispatcher
from schedb.egress import EgressPolicy
from schedb.executor import Executor
from schedb.fsm import queries
from schedb.metrics import NodeMetrics
from schedb.raft import Replica, SubmitError
from schedb.webhook import Send, new_session, sender
from schedb.worker_pool import WorkerPool

log = structlog.get_logger("schedb.node")
REGISTER_RETRY_S = 0.5
# How long SIGTERM may take in all (leadership hand-over, hand-back, running webhooks and
# their outcomes), well inside the 15 s that `make stop` and the test harness allow.
SHUTDOWN_S = 8.0
LEADERSHIP_HANDOVER_S = 2.0


class Node:
    """Everything one node runs, wired together; the API talks to this object."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.replica: Replica
        self.executor: Executor
        self.dispatcher: Dispatcher
        self._tasks: list[asyncio.Task[Any]] = []
        self.metrics = NodeMetrics()
        self.breakers = Breakers(config.breaker, self.metrics)
        self.workers: WorkerPool | None = None  # delivery worker processes, when executor.workers_max > 0
        self._members_read: tuple[int, list[str]] = (-1, [])  # (replica.nodes_version, their addresses)
        self.egress = EgressPolicy.from_config(config.egress, self._cluster_addresses)
        key = secretbox.load_key(config.secrets)  # a bad key stops the node here, with the setting named
        self.secret_box = secretbox.SecretBox(key) if key else None

    def _cluster_addresses(self) -> list[str]:
        """Every member's API and Raft address: webhooks may not call the cluster itself. Asked
        before every webhook call: the registered ones are read again only when they may have
        changed (a read waits for the command being applied, a big batch of outcomes perhaps)."""
        own = [self.config.http.listen, self.config.raft.listen, *self.config.raft.peers]
        if not hasattr(self, "replica"):
            return own
        version = self.replica.nodes_version  # before the read: a change during it reads again next time
        if self._members_read[0] != version:
            pairs = self.replica.read(queries.node_addresses).values()
            self._members_read = (version, [address for pair in pairs for address in pair])
        return own + self._members_read[1]

    @property
    def node_id(self) -> str:
        return self.config.node.id

    async def start(self) -> None:
        self.replica, send = self._connect(asyncio.get_running_loop())
        self.clock = ClockWatch(self.config, self.replica)
        slack_ms = 0
        if self.config.executor.workers_max:
            self.workers = WorkerPool(self.config, self._cluster_addresses, send, self.metrics)
            await self.workers.start()
            send, slack_ms = self.workers.send, self.workers.call_slack_ms
            self.breakers.call_slack_s = slack_ms / 1000
        self.executor = Executor(self.config, self.replica, send, self.metrics, self.secret_box, self.clock,
                                 self.breakers, slack_ms)
        self.dispatcher = Dispatcher(self.config, self.replica, self.executor.start_state, self.metrics, self.clock)
        self.metrics.watch(lambda: self.replica.read(queries.state_numbers), lambda: vars(self.replica.view()))
        tasks = {"dispatcher": self.dispatcher.run(), "outcome-flusher": self.executor.run_outcome_flusher(),
                 "register": self._register(), "clock": self._measure_clocks()}
        self._tasks += [asyncio.create_task(coro, name=name) for name, coro in tasks.items()]
        log.info("node_started", raft=self.config.raft.listen, peers=self.config.raft.peers)

    # -- the node's ways out: the simulator (devkit/sim) puts its own in place ------------

    def _connect(self, loop: asyncio.AbstractEventLoop) -> tuple[Replica, Send]:
        """The Raft port (pysyncobj) and the webhook client (aiohttp, behind the egress policy)."""
        self._session = new_session(self.config.executor.max_inflight, self.egress)
        replica = Replica(self.config, loop, self._on_state_change, self.metrics)
        return replica, sender(self._session, self.node_id, self.egress)

    async def _measure_clocks(self) -> None:
        """The other members' clocks, over their /health."""
        await self.clock.run()

    async def _disconnect(self) -> None:
        if self.workers is not None:
            await self.workers.close()
        await self._session.close()
        self.replica.close()

    def _on_state_change(self) -> None:
        if hasattr(self, "executor"):
            self.executor.on_state_change()

    def clock_hold(self) -> bool:
        """Does this follower hold its fires for its clock (its /health says so to the leader)?"""
        return self.clock.hold_reason() in ("clock_offset", "clock_unknown") and not self.replica.is_leader()

    def executor_running(self) -> bool:
        """The outcome flusher is alive (the executor's timers need no task of their own)."""
        return any(t.get_name() == "outcome-flusher" and not t.done() for t in self._tasks)

    def is_registered(self) -> bool:
        """Registered with this node's addresses, and not marked draining by an earlier shutdown."""
        expected = (self.config.raft.listen, self.config.http.listen)
        node = self.replica.read(queries.node_record, self.node_id)
        return node is not None and (node["raft_addr"], node["http_addr"]) == expected and not node.get("draining")

    async def _register(self) -> None:
        """Keep this node registered with its addresses and not marked draining (and, on the
        leader, the state's default quotas equal to the config's).

        Runs for the node's life: a DrainNode of its last shutdown may commit late (a
        leader's uncommitted entry from before a restart commits with its next term),
        and must not leave the node without fires. Judged only once the log is current,
        since a replay shows the past; not while this node is itself shutting down."""
        while True:
            if self.replica.caught_up() and self.replica.is_leader():
                await self._propose_config_defaults()
            if self.replica.caught_up() and not self.executor.draining and not self.is_registered():
                command = RegisterNode(wall_ms(), self.node_id, self.config.raft.listen, self.config.http.listen)
                try:
                    result = await self.replica.submit(command)
                    if "error" in result:
                        log.error("node_registration_refused", detail=result.get("detail"))
                        return
                    log.info("node_registered")
                except SubmitError as exc:
                    log.info("node_registration_retry", reason=exc.reason)
            await asyncio.sleep(REGISTER_RETRY_S)

    async def _propose_config_defaults(self) -> None:
        """The config's [quotas] (every team's defaults) and the state's bounds from [scheduler]
        go through the log, so every node applies the same ones. With configs that differ, the
        current leader's win."""
        quotas = dataclasses.asdict(self.config.quotas)
        bounds = _limits_of(self.config)
        now_quotas, now_bounds = self.replica.read(queries.config_defaults)
        for differs, command in ((now_quotas != quotas, SetDefaultQuotas(wall_ms(), quotas)),
                                 (now_bounds != bounds, SetLimits(wall_ms(), bounds))):
            if not differs:
                continue
            try:
                result = await self.replica.submit(command)
                log.info("config_defaults_set", command=type(command).__name__, error=result.get("detail"))
            except SubmitError as exc:
                log.info("config_defaults_retry", command=type(command).__name__, reason=exc.reason)

    async def stop(self) -> None:
        started = monotonic()
        await self.hand_over_leadership()
        await self.executor.drain(SHUTDOWN_S - (monotonic() - started))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    async def hand_over_leadership(self) -> bool:
        """A leader about to go asks a caught-up follower to take over (Raft TimeoutNow), so the
        cluster skips the election timeout it would otherwise wait out. Retried while the
        followers catch up; bounded. Returns whether this node is a follower now."""
        deadline = monotonic() + LEADERSHIP_HANDOVER_S
        while self.replica.is_leader() and self.replica.has_peers():
            if monotonic() > deadline:
                log.warning("leadership_not_handed_over")
                return False
            self.replica.transfer_leadership()
            await asyncio.sleep(0.1)
        return True


def _limits_of(config: Config) -> dict[str, int]:
    """The state's configurable bounds (schedb.fsm.limits) as this node's config sets them."""
    s = config.scheduler
    return {"history_per_job": s.history_per_job, "recent_executions": s.recent_executions,
            "misfire_grace_ms": int(s.misfire_grace_s * 1000), "catch_up_window_ms": int(s.catch_up_window_s * 1000),
            "idempotency_ttl_ms": int(s.idempotency_ttl_s * 1000), "slot_jobs_max": s.slot_jobs_max}
