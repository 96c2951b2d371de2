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
until they commit, across leader changes (schedb.outcome_flusher); a duplicate
commit is harmless because the state ignores a second outcome for the same
(fire, attempt).

Each attempt this node holds is one record of a `LocalFires` table, in one phase
(waiting, held, orphaned, running, reported: see local_fires.py); following the
state is the pure `reconcile` plus applying its plan.
"""

from __future__ import annotations

import asyncio
import functools
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog

from schedb import fire_queries, secretbox
from schedb.breaker import Breakers
from schedb.clock import monotonic, wall_ms
from schedb.clockwatch import ClockWatch
from schedb.commands import DrainNode, Outcome
from schedb.config import Config
from schedb.delivery_view import DeliveryView, resolve_secrets
from schedb.fsm import queries
from schedb.fsm.model import ExecutionStatus
from schedb.gate import PriorityGate
from schedb.local_fires import LocalFire, LocalFires, Phase, PhaseError, reconcile
from schedb.metrics import NodeMetrics
from schedb.outcome_flusher import COMPLETE_TIMEOUT_S, OutcomeFlusher
from schedb.raft import Replica, SubmitError
from schedb.teamgates import TeamGates
from schedb.timers import FireKey
from schedb.webhook import Send, new_correlation_id

log = structlog.get_logger("schedb.executor")
FENCE_RECHECK_S = 0.1
# A fire that waited this long for a place asks its misfire policy again before it is called.
REDECIDE_AFTER_S = 1.0
# Hold reasons under which this node's state may be behind the cluster's (a fire may have moved).
STALE_VIEW = frozenset({"catching_up", "no_quorum", "fenced"})
HAND_BACK_ROUNDS = 3
HAND_BACK_PAUSE_S = 0.15


class Executor:
    def __init__(self, config: Config, replica: Replica, send: Send, metrics: NodeMetrics,
                 secret_box: secretbox.SecretBox | None = None, clock: ClockWatch | None = None,
                 breakers: Breakers | None = None, call_slack_ms: int = 0) -> None:
        """send: calls one webhook (schedb.webhook.sender: aiohttp, behind the egress policy, or
        schedb.worker_pool); breakers: a circuit per team and target around it (schedb.breaker);
        call_slack_ms: how much later than its timeout a call may end (a worker's hand-over)."""
        self._config = config
        self._breakers = breakers
        self._clock = clock
        self._secret_box = secret_box
        self._team_gates = TeamGates()  # a gate per team with calls in flight, no more
        self._metrics = metrics
        self._node_id = config.node.id
        self._replica = replica
        self._send = send
        self._call_slack_ms = call_slack_ms
        self._gate = PriorityGate(config.executor.max_inflight)
        self._fires = LocalFires(self._due)
        metrics.inflight.set_function(lambda: self.in_flight)
        self._outcomes = OutcomeFlusher(config, replica, self._fires)
        self._fence_timer: asyncio.TimerHandle | None = None
        self._view_stale_at = -1.0  # monotonic: when a stale-view hold (STALE_VIEW) was last seen
        self._draining = False
        self._drain_announced = False
        self._handed_back = 0
        self._seen_version = -1
        self._seen_generation = 0
        self._started_ms = wall_ms()

    @property
    def in_flight(self) -> int:
        return self._fires.count(Phase.RUNNING)

    @property
    def draining(self) -> bool:
        return self._draining

    def start_state(self, fire: dict[str, Any]) -> str:
        """Has this node started that attempt? "started" (running, or its outcome waiting to
        commit), "unstarted", or "unknown": given to this node and due before it (re)started,
        so its previous run may have started it."""
        if self._fires.phase_of((fire["fire_id"], fire["attempt"])) in (Phase.RUNNING, Phase.REPORTED):
            return "started"
        if fire["due_ms"] < self._started_ms and fire["assigned_ms"] < self._started_ms:
            return "unknown"
        return "unstarted"

    @property
    def scheduled(self) -> int:
        return self._fires.count(Phase.WAITING, Phase.HELD)

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
        changes = self._replica.read(queries.fire_changes, node_id, seen)
        if changes is None:
            return
        version, full, changed = changes
        # full: first look, or too far behind: a pending attempt of a fire not listed is no longer ours
        plan = reconcile(self._fires.phases(None if full else changed), full, changed)
        for key in plan.drop:
            self._fires.drop(key)
        for key, fire in plan.arm:
            self._fires.arm(key, fire)
        self._seen_version = version  # only once applied: a failure above means a full look next time

    def _cancel_replaced(self) -> None:
        """concurrency: replace, when the newer fire runs on another node than the older one."""
        if not self._fires.count(Phase.RUNNING):
            return
        now_ms = wall_ms()
        running = [(local.key, local.fire) for local in self._fires.in_phase(Phase.RUNNING)]
        replaced = self._replica.read(fire_queries.replaced_fires, running, now_ms)
        for key, newer in replaced:
            self._cancel(key, f"replaced: by {newer}")

    def _cancel(self, key: FireKey, why: str) -> None:
        local = self._fires.get(key)
        task = local.task if local is not None else None
        if task is not None and not task.done():
            task.cancel(why)

    def _due(self, local: LocalFire) -> None:
        """A waiting attempt's instant came: orphan, hold or start it."""
        key, fire = local.key, local.fire
        if self._maybe_started_before_restart(fire):
            log.warning("fire_left_to_its_lease", job_id=fire["job_id"], fire_id=fire["fire_id"],
                        attempt=fire["attempt"], reason="at_most_once, due before this node (re)started")
            self._fires.orphan(key)
            return
        reason = self._hold_reason()
        if reason:
            (log.warning if reason == "fenced" else log.info)(
                "fire_held", job_id=fire["job_id"], fire_id=fire["fire_id"], attempt=fire["attempt"], reason=reason)
            self._fires.hold(key)
            self._arm_fence_recheck()
            return
        self._start(local)

    def _maybe_started_before_restart(self, fire: dict[str, Any]) -> bool:
        """An at-most-once fire given to this node before it (re)started, and due by then, may
        have been started by the node's previous run, whose outcome never committed. It must
        not be called again: it is left alone until its lease ends, and the leader then records
        it as `unknown` (executor_lost). An at-least-once fire is simply delivered again."""
        if self.start_state(fire) != "unknown":
            return False
        return self._replica.read(queries.job_delivery, fire["job_id"]) == "at_most_once"

    def _start(self, local: LocalFire) -> None:
        task = asyncio.create_task(self._run(local.key, local.fire))
        try:
            self._fires.start(local.key, task)
        except PhaseError:
            task.cancel()  # not started yet (the loop has not run it): an untracked call must not go out
            raise
        task.add_done_callback(functools.partial(self._never_ran, local.key))

    def _never_ran(self, key: FireKey, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step never enters `_run` (asyncio throws into the
        unstarted coroutine), e.g. replaced in the same step that released it: its skip is
        reported here. Any task that did run has reported or finished in `_run` already."""
        local = self._fires.get(key)
        if local is None or local.task is not task:
            return
        if task.cancelled() and self._replica.read(fire_queries.still_ours, local.fire, self._node_id):
            # (Not ours any more, it is the new holder's to report, as _run would have found.)
            try:
                task.result()
            except asyncio.CancelledError as exc:
                self._report_skip(key, local.fire, "skipped", _cancel_reason(exc))
        self._fires.finish(key)

    def _hold_reason(self) -> str:
        """Why fires must wait now, or "" (_why_held); a stale view is noted (_still_due)."""
        reason = self._why_held()
        if reason in STALE_VIEW:
            self._view_stale_at = monotonic()
        return reason

    def _why_held(self) -> str:
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
        """Start the held fires once nothing holds them; else look again in FENCE_RECHECK_S
        (one timer at a time: every state change comes here too)."""
        if self._fence_timer is not None:
            self._fence_timer.cancel()
            self._fence_timer = None
        if not self._fires.count(Phase.HELD) or self._hold_reason():
            self._arm_fence_recheck()
            return
        self._reconcile()  # the recheck timer may run before the loop hears of the latest commands
        now_ms = wall_ms()
        for local in self._fires.in_phase(Phase.HELD):
            if local.fire["due_ms"] > now_ms:  # this clock stepped back while it was held: never early
                self._fires.wait_again(local.key)
            else:
                self._start(local)

    def _arm_fence_recheck(self) -> None:
        if self._fires.count(Phase.HELD) and self._fence_timer is None:
            self._fence_timer = asyncio.get_running_loop().call_later(FENCE_RECHECK_S, self._release_held)

    # -- one delivery -----------------------------------------------------------

    async def _run(self, key: FireKey, fire: dict[str, Any]) -> None:
        try:
            if await self._succeeded_here_before(key):
                log.info("fire_already_delivered", job_id=fire["job_id"], fire_id=fire["fire_id"],
                         attempt=fire["attempt"], reason="an earlier attempt succeeded here, its outcome to commit")
                return
            decided = self._judge(key, fire)
            if decided is not None:
                await self._deliver(key, fire, decided.view, decided_at=monotonic())
        except asyncio.CancelledError as exc:
            self._report_skip(key, fire, "skipped", _cancel_reason(exc))
        finally:
            self._fires.finish(key)

    def _judge(self, key: FireKey, fire: dict[str, Any]) -> fire_queries.FireDecision | None:
        """The verdict on the attempt now (misfire, concurrency), with what its delivery needs;
        None when it is not to be called: the job was deleted, the fire is no longer this
        node's, or it is skipped (reported here). Older fires a replace job's fire replaces go."""
        decided = self._replica.read(fire_queries.decide_fire, fire, self._node_id)
        if not decided.ours:
            self._not_ours(fire)
        if decided.verdict is None:
            return None
        if not decided.verdict.fire:
            self._report_skip(key, fire, decided.verdict.status, f"{decided.verdict.reason}: {decided.verdict.detail}")
            return None
        for older in decided.verdict.replaces:
            for other_key in self._fires.running_of(older):
                self._cancel(other_key, f"replaced: by {fire['fire_id']}")
        return decided

    async def _succeeded_here_before(self, key: FireKey) -> bool:
        """Did an earlier attempt of this fire succeed on this node (one still running is waited
        for)? A fire may come back to the node that called it as a new attempt: its lease ended
        while its outcome waited to commit and this is the only executor left (before the wait
        for replicated time, a pause judged by a lagging time could take it back too). The
        receiver has it: the earlier success, still waiting here to commit, is the fire's
        outcome and ends it (schedb.fsm.complete)."""
        earlier = self._fires.started_before(key)
        running = [local.task for local in earlier if local.task is not None]
        if running:
            await asyncio.wait(running)
        return any(local.outcome is not None and local.outcome.status == ExecutionStatus.SUCCEEDED
                   for local in earlier)

    @staticmethod
    def _not_ours(fire: dict[str, Any]) -> None:
        """The state no longer gives this attempt to this node (a last check against a stale
        view, e.g. one built before a snapshot replaced the state): nothing to call."""
        log.info("fire_not_ours", job_id=fire["job_id"], fire_id=fire["fire_id"], attempt=fire["attempt"])

    async def _deliver(self, key: FireKey, fire: dict[str, Any], view: DeliveryView | None,
                       decided_at: float) -> None:
        if view is None:
            return
        correlation_id = fire.get("correlation_id") or new_correlation_id()
        try:
            spec, secret_values = resolve_secrets(self._secret_box, view)
        except (secretbox.MissingSecret, secretbox.SecretUndecryptable, ValueError) as exc:
            now_ms = wall_ms()
            outcome = Outcome(fire["fire_id"], fire["attempt"], "failed", 0, now_ms, now_ms, f"secret: {exc}")
        else:
            async with self._team_gate(view.team, view.team_limit), self._gate.place(spec["priority"]):
                waited_for_place_s = monotonic() - decided_at
                # The wait for a slot may outlast the fire's lease: if it moved to another node
                # (or ended) meanwhile, calling now would deliver it twice. This node's view of
                # that is only as good as its fence: cut off meanwhile, it waits to hear again.
                held = await self._when_view_is_fresh(fire)
                if held is None:
                    self._not_ours(fire)
                    return
                if not self._still_due(key, fire, decided_at, waited_for_place_s):
                    return
                if not self._lease_covers(spec, held.lease_end_ms):
                    log.warning("fire_left_to_its_lease", job_id=fire["job_id"], fire_id=fire["fire_id"],
                                attempt=fire["attempt"], reason="the call could outlast the attempt's lease")
                    return
                outcome = await self._call(view.team, fire, spec, correlation_id, secret_values)
        # Per fire at debug when all went to plan (thousands a second; each batch's line and the
        # execution history tell that story), at info when it did not or an operator asked for it.
        noteworthy = outcome.status != ExecutionStatus.SUCCEEDED or bool(fire.get("correlation_id"))
        (log.info if noteworthy else log.debug)(
            "fire_delivered", job_id=fire["job_id"], fire_id=fire["fire_id"], attempt=fire["attempt"],
            correlation_id=correlation_id, status=outcome.status, http_status=outcome.http_status,
            delay_ms=outcome.started_ms - fire["scheduled_ms"], duration_ms=outcome.finished_ms - outcome.started_ms,
            error=outcome.error or None)
        self._metrics.fires.labels(outcome.status).inc()
        self._metrics.fire_delay.observe(max(0, outcome.started_ms - fire["due_ms"]) / 1000)
        self._metrics.webhook_duration.observe(max(0, outcome.finished_ms - outcome.started_ms) / 1000)
        self._fires.report(key, outcome)
        self._outcomes.ready.set()

    async def _call(self, team: str, fire: dict[str, Any], spec: dict[str, Any], correlation_id: str,
                    secret_values: list[str]) -> Outcome:
        send = functools.partial(self._send, fire, spec, correlation_id, secret_values)
        return await (send() if self._breakers is None else self._breakers.call(team, fire, spec, send))

    def _still_due(self, key: FireKey, fire: dict[str, Any], decided_at: float, waited_for_place_s: float) -> bool:
        """After a long wait for a place (an overload), is the fire still to be called? Past its
        misfire grace by now, it is recorded missed at once rather than called late or left to
        its lease (which the wait may have outlasted): its place goes to a fire that is in time.
        A wait that a stale view had a part in (cut off from the leader, no quorum, catching up:
        the places may be held by fires waiting for the fence) does not count: a fault of the
        cluster must not cost the user the fire, which goes out late instead (make chaos)."""
        if waited_for_place_s < REDECIDE_AFTER_S or self._view_stale_at >= decided_at:
            return True
        if self._clock is not None and self._clock.hold_reason():
            return True  # lateness read from a clock the watch distrusts now (it stepped): not judged
        return self._judge(key, fire) is not None

    async def _when_view_is_fresh(self, fire: dict[str, Any]) -> fire_queries.Holding | None:
        """The attempt as the state gives this node now (None: not ours any more), once this
        node's view is fresh: no stale-view hold (fenced, catching up, no quorum), and replicated
        time close enough to the fire that a pause or edit applied from now on keeps it (the
        leader's ticks may be slow to commit: a pause judged by a time seconds behind would take
        back a fire called here, and a resume give it to another node)."""
        while True:
            while self._hold_reason() in STALE_VIEW:
                await asyncio.sleep(FENCE_RECHECK_S)
            held = self._replica.read(fire_queries.holding, fire, self._node_id)
            if held is None or held.time_reached:
                return held
            await asyncio.sleep(FENCE_RECHECK_S)

    def _lease_covers(self, spec: dict[str, Any], lease_end_ms: int) -> bool:
        """Can a call started now end before the attempt's lease does, by the leader's clock (up
        to clock.max_offset_ms ahead of this one)? After the lease the leader may give the fire
        a new attempt elsewhere: a call still running then would deliver it twice. A call too
        late for its lease is not made; the lease ends and the new attempt has a lease of its own."""
        timeout_ms = int(spec["webhook"]["timeout_s"] * 1000)
        return wall_ms() + timeout_ms + self._call_slack_ms + self._config.clock.max_offset_ms < lease_end_ms

    def _team_gate(self, team: str, limit: int) -> AbstractAsyncContextManager[None]:
        """The team's concurrent-webhooks quota on this node; a new limit applies to new calls."""
        return self._team_gates.hold(team, limit)

    def _report_skip(self, key: FireKey, fire: dict[str, Any], status: str, why: str) -> None:
        now_ms = wall_ms()
        log.info("fire_skipped", job_id=fire["job_id"], fire_id=fire["fire_id"], attempt=fire["attempt"],
                 status=status, why=why)
        self._metrics.fires.labels(status).inc()
        self._fires.report(key, Outcome(fire["fire_id"], fire["attempt"], status, 0, now_ms, now_ms, why))
        self._outcomes.ready.set()

    # -- outcomes → log (schedb.outcome_flusher) -----------------------------------

    async def run_outcome_flusher(self) -> None:
        await self._outcomes.run()

    async def drain(self, timeout_s: float) -> dict[str, int]:
        """On shutdown (SIGTERM): start nothing new, hand the fires not started yet back
        to the cluster, let running deliveries finish and their outcomes commit, all
        within a bound, and without waiting on a cluster that cannot commit."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for _ in range(HAND_BACK_ROUNDS):  # fires assigned while the first round commits come back too
            waiting = self._fires.to_offer(self._maybe_started_before_restart)
            if (self._drain_announced and not waiting) or loop.time() > deadline - COMPLETE_TIMEOUT_S:
                break
            if not self._replica.has_peers() or not self._replica.has_quorum() or not await self._hand_back(waiting):
                break
            await asyncio.sleep(HAND_BACK_PAUSE_S)
        while self._fires.count(Phase.RUNNING, Phase.REPORTED) and loop.time() < deadline:
            if not self._fires.count(Phase.RUNNING) and not self._replica.has_quorum():
                break  # only outcomes are left, and nothing can commit them
            await asyncio.sleep(0.05)
        self._fires.drop_waiting()
        summary = {"handed_back": self._handed_back, "unfinished": self._fires.count(Phase.RUNNING),
                   "uncommitted": self._fires.count(Phase.REPORTED)}
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
        self._fires.offer(waiting)
        self._handed_back += int(result.get("released", 0))
        return True


def _cancel_reason(exc: asyncio.CancelledError) -> str:
    return str(exc.args[0] if exc.args else "replaced: cancelled")

