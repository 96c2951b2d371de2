"""The executor: fires this node's assigned fires at their scheduled instant.

Its work is derived from the replicated state, never from the stream of
applied commands: after every change it compares the fires the state gives
this node (only those changed since its last look, by the FireBook's per-node
version; all of them after a snapshot replaced the state) with its own timers.
So a journal replay after a restart fires nothing twice, and a fire taken away
(job deleted, paused, re-assigned) loses its timer. Just before a webhook is
called, the state must still give that attempt to this node.

A restarted node replays its journal first: the fires it sees assigned to it
during the replay may have moved long ago, so nothing starts until the node
has caught up with a leader's commit index.

Fencing: a fire is started only while this node has heard from a leader within
`fence_s`. A follower cut off from the cluster therefore stops firing on its
own, before anyone could hand its fires to another node. A fire held back by
the fence starts as soon as a leader is heard again. A node that becomes the
leader holds the fires it had as a follower; its dispatcher moves them to a
follower (the leader executes nothing while it has followers).

Outcomes are batched (~20 ms) into one CompleteFires command and re-submitted
until they commit, across leader changes; a duplicate commit is harmless
because the state ignores a second outcome for the same (fire, attempt).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import structlog

from schedb import secretbox
from schedb.clockwatch import ClockWatch
from schedb.commands import CompleteFires, DrainNode, Outcome
from schedb.config import Config
from schedb.egress import EgressPolicy
from schedb.fsm import tenancy
from schedb.fsm.core import State
from schedb.gate import PriorityGate
from schedb.metrics import NodeMetrics
from schedb.policies import Verdict, newer_fire_due, verdict
from schedb.raft import Replica, SubmitError
from schedb.teamgates import TeamGates
from schedb.timers import DueTimers, FireKey
from schedb.webhook import deliver, new_correlation_id, wall_ms

log = structlog.get_logger("schedb.executor")
FENCE_RECHECK_S = 0.1
COMPLETE_TIMEOUT_S = 2.0
RETRY_DELAY_S_MAX = 1.0
HAND_BACK_ROUNDS = 3
HAND_BACK_PAUSE_S = 0.15



class Executor:
    def __init__(self, config: Config, replica: Replica, session: aiohttp.ClientSession,
                 metrics: NodeMetrics, egress: EgressPolicy | None = None,
                 secret_box: secretbox.SecretBox | None = None, clock: ClockWatch | None = None) -> None:
        self._config = config
        self._clock = clock
        self._egress = egress
        self._secret_box = secret_box
        self._team_gates = TeamGates()  # a gate per team with calls in flight, no more
        self._metrics = metrics
        self._node_id = config.node.id
        self._replica = replica
        self._session = session
        self._gate = PriorityGate(config.executor.max_inflight)
        self._timers = DueTimers(self._due)
        self._held: dict[FireKey, dict[str, Any]] = {}
        self._running: dict[FireKey, asyncio.Task[None]] = {}
        self._running_fires: dict[FireKey, dict[str, Any]] = {}
        metrics.inflight.set_function(lambda: len(self._running))
        self._outcomes: dict[FireKey, Outcome] = {}
        self._outcome_ready = asyncio.Event()
        self._fence_timer: asyncio.TimerHandle | None = None
        self._draining = False
        self._drain_announced = False
        self._handed_back = 0
        self._offered: set[FireKey] = set()
        self._seen_version = -1
        self._seen_generation = 0
        self._started_ms = wall_ms()
        self._orphaned: dict[str, FireKey] = {}  # at-most-once fires a previous run may have started

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def draining(self) -> bool:
        return self._draining

    def start_state(self, fire: dict[str, Any]) -> str:
        """Has this node started that attempt? "started" (running, or its outcome waiting to
        commit), "unstarted", or "unknown": given to this node and due before it (re)started,
        so its previous run may have started it."""
        key = (fire["fire_id"], fire["attempt"])
        if key in self._running or key in self._outcomes:
            return "started"
        if fire["due_ms"] < self._started_ms and fire["assigned_ms"] < self._started_ms:
            return "unknown"
        return "unstarted"

    @property
    def scheduled(self) -> int:
        return len(self._timers) + len(self._held)

    # -- reconcile timers with the state ----------------------------------------

    def on_state_change(self) -> None:
        self._reconcile()
        self._release_held()
        self._cancel_replaced()

    def _reconcile(self) -> None:
        """Timers for the fires the state gives this node; none for those it took away.
        Looks only at the fires changed since the last look (most commands are about others')."""
        if self._replica.generation != self._seen_generation:  # a snapshot replaced the state
            self._seen_generation, self._seen_version = self._replica.generation, -1
        node_id, seen = self._node_id, self._seen_version
        if self._replica.read(lambda s: s.book.version_of(node_id)) == seen:
            return
        self._seen_version, full, changed = self._replica.read(lambda s: s.fire_changes(node_id, seen))
        if full:  # first look, or too far behind: anything not listed is no longer ours
            changed.update({key[0]: None for key in (*self._timers, *self._held, *self._orphaned.values())
                            if key[0] not in changed})
        held = {key[0]: key for key in self._held}
        for fire_id, fire in changed.items():
            current = (fire_id, fire["attempt"]) if fire is not None else None
            for key in (self._timers.key_of(fire_id), held.get(fire_id), self._orphaned.get(fire_id)):
                if key is not None and key != current:
                    self._timers.cancel(key)
                    self._held.pop(key, None)
                    self._orphaned.pop(fire_id, None)
            if current is not None and fire is not None and current not in self._timers and \
                    current not in self._held and current not in self._running and current not in self._outcomes \
                    and self._orphaned.get(fire_id) != current:
                self._timers.add(current, fire)

    def _cancel_replaced(self) -> None:
        """concurrency: replace, when the newer fire runs on another node than the older one."""
        if not self._running_fires:
            return
        now_ms = wall_ms()
        running = list(self._running_fires.items())
        replaced = self._replica.read(
            lambda s: [(key, newer) for key, fire in running if (newer := newer_fire_due(s, fire, now_ms))])
        for key, newer in replaced:
            self._cancel(key, f"replaced: by {newer}")

    def _cancel(self, key: FireKey, why: str) -> None:
        task = self._running.get(key)
        if task is not None and not task.done():
            task.cancel(why)

    def _due(self, key: FireKey, fire: dict[str, Any]) -> None:
        if self._maybe_started_before_restart(fire):
            log.warning("fire_left_to_its_lease", job_id=fire["job_id"], fire_id=fire["fire_id"],
                        attempt=fire["attempt"], reason="at_most_once, due before this node (re)started")
            self._orphaned[key[0]] = key
            return
        reason = self._hold_reason()
        if reason:
            (log.warning if reason == "fenced" else log.info)(
                "fire_held", job_id=fire["job_id"], fire_id=fire["fire_id"], attempt=fire["attempt"], reason=reason)
            self._held[key] = fire
            self._arm_fence_recheck()
            return
        self._start(key, fire)

    def _maybe_started_before_restart(self, fire: dict[str, Any]) -> bool:
        """An at-most-once fire given to this node before it (re)started, and due by then, may
        have been started by the node's previous run, whose outcome never committed. It must
        not be called again: it is left alone until its lease ends, and the leader then records
        it as `unknown` (executor_lost). An at-least-once fire is simply delivered again."""
        if self.start_state(fire) != "unknown":
            return False
        job = self._replica.read(lambda s: s.jobs.get(fire["job_id"]))
        return job is not None and job["spec"]["delivery"] == "at_most_once"

    def _start(self, key: FireKey, fire: dict[str, Any]) -> None:
        self._running_fires[key] = fire
        self._running[key] = asyncio.create_task(self._run(key, fire))

    def _hold_reason(self) -> str:
        """Why fires must wait now, or "": the state is still a replay (after a restart),
        this node leads a cluster with followers (the dispatcher hands its fires to
        them), it is connected to no majority, it is fenced off from any leader, or its
        clock is not known to agree with the leader's."""
        if self._draining:
            return "draining"
        if not self._replica.caught_up():
            return "catching_up"
        if self._replica.is_leader() and self._replica.has_peers():
            return "leader"
        if not self._replica.has_quorum():
            # Cut off from a majority (the others died or stopped): an outcome could not
            # commit, so a delivery now would be repeated once the cluster is back.
            return "no_quorum"
        if not self._replica.leader_heard_within(self._config.scheduler.fence_s):
            return "fenced"
        # Timers run on this node's clock: far off the leader's, a fire would go out early or late.
        return self._clock.hold_reason() if self._clock is not None else ""

    def _release_held(self) -> None:
        self._fence_timer = None
        if not self._held or self._hold_reason():
            self._arm_fence_recheck()
            return
        self._reconcile()  # the recheck timer may run before the loop hears of the latest commands
        held, self._held = self._held, {}
        for key, fire in held.items():
            self._start(key, fire)

    def _arm_fence_recheck(self) -> None:
        if self._held and self._fence_timer is None:
            self._fence_timer = asyncio.get_running_loop().call_later(FENCE_RECHECK_S, self._release_held)

    # -- one delivery -----------------------------------------------------------

    async def _run(self, key: FireKey, fire: dict[str, Any]) -> None:
        try:
            decision = self._replica.read(lambda s: self._verdict(s, fire))
            if decision is None:
                return  # the job was deleted, or the fire is no longer this node's: nothing to call
            if not decision.fire:
                self._report_skip(key, fire, decision.status, f"{decision.reason}: {decision.detail}")
                return
            for older in decision.replaces:
                for other_key in [k for k in self._running if k[0] == older]:
                    self._cancel(other_key, f"replaced: by {fire['fire_id']}")
            await self._deliver(key, fire)
        except asyncio.CancelledError as exc:
            self._report_skip(key, fire, "skipped", str(exc.args[0] if exc.args else "replaced: cancelled"))
        finally:
            self._running.pop(key, None)
            self._running_fires.pop(key, None)

    def _verdict(self, state: State, fire: dict[str, Any]) -> Verdict | None:
        """Fire or skip; None when the state no longer gives this attempt to this node (a
        last check against a stale view, e.g. one built before a snapshot replaced the state)."""
        if not self._still_ours(state, fire):
            return None
        return verdict(state, fire, wall_ms(), state.limits.misfire_grace_ms)  # the replicated bound

    def _still_ours(self, state: State, fire: dict[str, Any]) -> bool:
        current = state.book.get(fire["fire_id"])
        if current is None or current["node"] != self._node_id or current["attempt"] != fire["attempt"]:
            log.info("fire_not_ours", job_id=fire["job_id"], fire_id=fire["fire_id"], attempt=fire["attempt"])
            return False
        return True

    async def _deliver(self, key: FireKey, fire: dict[str, Any]) -> None:
        view = self._replica.read(lambda s: _delivery_view(s, fire["job_id"]))
        if view is None:
            return
        spec, team, team_limit, referenced, sealed = view
        correlation_id = fire.get("correlation_id") or new_correlation_id()
        try:
            spec, secret_values = self._resolve_secrets(spec, team, referenced, sealed)
        except (secretbox.MissingSecret, secretbox.SecretUndecryptable, ValueError) as exc:
            now_ms = wall_ms()
            outcome = Outcome(fire["fire_id"], fire["attempt"], "failed", 0, now_ms, now_ms, f"secret: {exc}")
        else:
            async with self._team_gate(team, team_limit), self._gate.place(spec["priority"]):
                # The wait for a slot may outlast the fire's lease: if it moved to another node
                # (or ended) meanwhile, calling now would deliver it twice.
                if not self._replica.read(lambda s: self._still_ours(s, fire)):
                    return
                outcome = await deliver(self._session, fire, spec, self._node_id, correlation_id, self._egress,
                                        secret_values)
        log.info("fire_delivered", job_id=fire["job_id"], fire_id=fire["fire_id"], attempt=fire["attempt"],
                 correlation_id=correlation_id, status=outcome.status, http_status=outcome.http_status,
                 delay_ms=outcome.started_ms - fire["scheduled_ms"],
                 duration_ms=outcome.finished_ms - outcome.started_ms, error=outcome.error or None)
        self._metrics.fires.labels(outcome.status).inc()
        self._metrics.fire_delay.observe(max(0, outcome.started_ms - fire["due_ms"]) / 1000)
        self._metrics.webhook_duration.observe(max(0, outcome.finished_ms - outcome.started_ms) / 1000)
        self._outcomes[key] = outcome
        self._outcome_ready.set()

    def _resolve_secrets(self, spec: dict[str, Any], team: str, referenced: bool,
                         sealed: dict[str, bytes]) -> tuple[dict[str, Any], list[str]]:
        """The spec with {{secrets/NAME}} replaced, and the plain values (to mask them)."""
        if not referenced:
            return spec, []
        box = self._secret_box
        if box is None:
            raise ValueError("this node has no secrets key (secrets.key_file or SCHEDB_SECRETS_KEY)")

        def lookup(name: str) -> str:
            return box.open(team, name, sealed[name])  # KeyError: resolve() reports MissingSecret

        webhook, values = secretbox.resolve(spec["webhook"], lookup)
        return {**spec, "webhook": webhook}, values

    def _team_gate(self, team: str, limit: int) -> AbstractAsyncContextManager[None]:
        """The team's concurrent-webhooks quota on this node; a new limit applies to new calls."""
        return self._team_gates.hold(team, limit)

    def _report_skip(self, key: FireKey, fire: dict[str, Any], status: str, why: str) -> None:
        now_ms = wall_ms()
        log.info("fire_skipped", job_id=fire["job_id"], fire_id=fire["fire_id"], attempt=fire["attempt"],
                 status=status, why=why)
        self._metrics.fires.labels(status).inc()
        self._outcomes[key] = Outcome(fire["fire_id"], fire["attempt"], status, 0, now_ms, now_ms, why)
        self._outcome_ready.set()

    # -- outcomes → log ---------------------------------------------------------

    async def run_outcome_flusher(self) -> None:
        batch_s = self._config.executor.outcome_batch_s
        retry_s = batch_s
        while True:
            await self._outcome_ready.wait()
            await asyncio.sleep(batch_s)
            self._outcome_ready.clear()
            if await self._flush_once():
                retry_s = batch_s
                continue
            self._outcome_ready.set()  # keep trying: outcomes wait here until they commit
            await asyncio.sleep(retry_s)
            retry_s = min(RETRY_DELAY_S_MAX, retry_s * 2)

    async def _flush_once(self) -> bool:
        keys = list(self._outcomes)[: self._config.executor.outcome_batch_max]
        if not keys:
            return True
        rows = [self._outcomes[k].to_list() for k in keys]
        try:
            await self._replica.submit(CompleteFires(wall_ms(), self._node_id, rows), COMPLETE_TIMEOUT_S)
        except SubmitError as exc:
            log.warning("outcomes_not_committed", count=len(rows), reason=exc.reason)
            return False
        for key in keys:
            self._outcomes.pop(key, None)
        if self._outcomes:
            self._outcome_ready.set()
        return True

    async def drain(self, timeout_s: float) -> dict[str, int]:
        """On shutdown (SIGTERM): start nothing new, hand the fires not started yet back
        to the cluster, let running deliveries finish and their outcomes commit, all
        within a bound, and without waiting on a cluster that cannot commit."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for _ in range(HAND_BACK_ROUNDS):  # fires assigned while the first round commits come back too
            waiting = [key for key in (*self._timers, *self._held) if key not in self._offered]
            if (self._drain_announced and not waiting) or loop.time() > deadline - COMPLETE_TIMEOUT_S:
                break
            if not self._replica.has_peers() or not self._replica.has_quorum() or not await self._hand_back(waiting):
                break
            await asyncio.sleep(HAND_BACK_PAUSE_S)
        while (self._running or self._outcomes) and loop.time() < deadline:
            if not self._running and not self._replica.has_quorum():
                break  # only outcomes are left, and nothing can commit them
            await asyncio.sleep(0.05)
        self._timers.cancel_all()
        summary = {"handed_back": self._handed_back, "unfinished": len(self._running),
                   "uncommitted": len(self._outcomes)}
        log.info("executor_drained", **summary)
        return summary

    async def _hand_back(self, waiting: list[FireKey]) -> bool:
        rows = [[fire_id, attempt] for fire_id, attempt in waiting]
        try:
            result = await self._replica.submit(DrainNode(wall_ms(), self._node_id, rows), COMPLETE_TIMEOUT_S)
        except SubmitError as exc:
            log.warning("hand_back_not_committed", count=len(rows), reason=exc.reason)
            return False
        self._drain_announced = True
        self._offered.update(waiting)
        self._handed_back += int(result.get("released", 0))
        return True


def _delivery_view(state: State, job_id: str) -> tuple[dict[str, Any], str, int, bool, dict[str, bytes]] | None:
    """What a delivery needs from the state: the spec, the team, its concurrency quota, whether
    the webhook references secrets, and the sealed ones it references (opened outside the lock).
    The webhook is scanned for references here only."""
    job = state.jobs.get(job_id)
    if job is None:
        return None
    team = job["team"]
    names = secretbox.references(job["spec"]["webhook"])
    team_secrets = state.secrets.get(team, {})
    sealed = {name: team_secrets[name]["sealed"] for name in names if name in team_secrets}
    return job["spec"], team, tenancy.quota(state, team)["concurrent_webhooks"], bool(names), sealed
