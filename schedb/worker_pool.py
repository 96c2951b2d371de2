"""The node's delivery workers (schedb.worker): started, watched, restarted when one ends unasked,
their number following the load (schedb.scaling), retired and stopped by PID.

The pool is the executor's `Send` (schedb.webhook): the executor decides every attempt as it does
without workers, and only the call itself crosses to a worker process, to the ready one with the
fewest calls in flight. So fences, leases and the at-most-once rule stay where they are decided:

- A call starts within HAND_OVER_S of its hand-over or not at all: the worker refuses a later
  start (`worker_late`), and the executor's lease check counts HAND_OVER_S + KILL_SLACK_S
  (Executor's call_slack_ms) on top of the call's timeout.
- The worker acks a call ("started") before its first byte leaves. A worker that ends (a crash,
  a SIGKILL) takes its acked calls with it: each is a node's call that died mid-way, failed with
  `worker_lost` (an at-least-once job retries it; an at-most-once fire goes to the dead letters:
  the receiver may have had it). Its calls not acked were never made: they go to another worker,
  or to the node's own loop, while their start is still in time.
- A worker that has not answered a call by HAND_OVER_S + the call's timeout + KILL_SLACK_S is
  frozen or hung: it is killed, so that it cannot call after the lease. A worker that leaves a
  call unacked past HAND_OVER_S gets no more calls (it is slow, or frozen) until it acks.
- The node's own stalls (a SIGSTOP, a long GC) are not held against its workers: a watchdog or
  the silence check that comes late first lets the frames waiting in the pipe be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from schedb.clock import monotonic
from schedb.commands import Outcome
from schedb.config import Config
from schedb.metrics import NodeMetrics
from schedb.scaling import Load, Scaler
from schedb.webhook import WORKER_LATE, Send
from schedb.worker_process import HAND_OVER_S, KILL_SLACK_S, STOP_WAIT_S, WorkerProcess, not_made

log = structlog.get_logger("schedb.worker_pool")
SAMPLE_S = 1.0
SILENT_S = 10.0  # a worker reports every second: silent this long, it is killed (frozen or hung)
STARTUP_S = 30.0  # a worker not ready this long after its start is killed (and counts as a crash)
STALL_S = 0.5  # a supervision tick this late: the node stalled, and judges no silence at once
RESPAWN_PAUSE_MAX_S = 30.0  # between starts, after workers that die before they are ready, again and again


@dataclass
class _Spawns:
    """Crash-loop backoff: each worker in a row that dies before it was ready (it cannot start:
    a broken install, no memory) doubles the pause before the next start. One killed at work
    (SIGKILL, the OOM killer) is replaced at once."""

    young_deaths: int = 0
    next_at: float = 0.0

    def died(self, was_ready: bool, now: float) -> None:
        self.young_deaths = 0 if was_ready else self.young_deaths + 1
        pause = min(RESPAWN_PAUSE_MAX_S, 2.0 ** self.young_deaths - 1) if self.young_deaths else 0.0
        self.next_at = now + pause


@dataclass
class _Exits:
    workers: int = 0
    calls: int = 0


class WorkerPool:
    def __init__(self, config: Config, members: Callable[[], Iterable[str]], fallback: Send,
                 metrics: NodeMetrics) -> None:
        """members: the cluster's addresses (the egress policy refuses them); fallback: the node's
        own Send, for a call no worker can start in time."""
        self._config = config
        self._settings = config.executor
        self._members = members
        self._fallback = fallback
        self._metrics = metrics
        self._scaler = Scaler(config.executor)
        self._target = config.executor.workers_min
        self._workers: list[WorkerProcess] = []
        self._ids = itertools.count()
        self._exits = _Exits()
        self._spawns = _Spawns()
        self._supervisor: asyncio.Task[None] | None = None
        self._last_tick = 0.0
        self._closing = False

    @property
    def call_slack_ms(self) -> int:
        """What the executor's lease check adds for a call made by a worker."""
        return int((HAND_OVER_S + KILL_SLACK_S) * 1000)

    async def start(self) -> None:
        await self._fill()
        self._last_tick = monotonic()
        self._supervisor = asyncio.create_task(self._supervise(), name="worker-pool")

    async def send(self, fire: dict[str, Any], spec: dict[str, Any], correlation_id: str,
                   secret_values: list[str]) -> Outcome:
        start_by = monotonic() + HAND_OVER_S  # from the executor's lease check, a moment ago
        tried: list[WorkerProcess] = []
        while not self._closing and monotonic() <= start_by:
            worker = self._pick(tried)
            if worker is None:
                break
            tried.append(worker)
            outcome = await worker.call(next(self._ids), start_by, fire, spec, correlation_id, secret_values,
                                        list(self._members()))
            if outcome is not None and not outcome.error.startswith(WORKER_LATE):
                return outcome
        # Not made by a worker. The node's own loop may still make it: a call started by then ends
        # within the slack the lease check allowed (its timeout, and KILL_SLACK_S after start_by).
        if not self._closing and monotonic() <= start_by + KILL_SLACK_S:
            return await self._fallback(fire, spec, correlation_id, secret_values)
        return not_made(fire, "no delivery worker started it in time")

    def status(self) -> dict[str, Any]:
        """For /api/v1/cluster: the bounds, the target, each worker, and who ended unasked."""
        s = self._settings
        return {"min": s.workers_min, "max": s.workers_max, "target": self._target,
                "running": [w.status() for w in self._workers if not w.ended],
                "exits": dataclasses.asdict(self._exits)}

    async def close(self) -> None:
        """Retire every worker; any still running after STOP_WAIT_S is killed by its PID (a call
        in hand then ends as a node's own does at shutdown: its outcome is not committed)."""
        self._closing = True  # no call starts from here on, not even in the node's own loop
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        workers = list(self._workers)
        for worker in workers:
            worker.retire()
        if workers:
            await asyncio.wait([asyncio.ensure_future(w.process.wait()) for w in workers], timeout=STOP_WAIT_S)
        for worker in workers:
            worker.kill("still running at shutdown")
            await worker.process.wait()

    # -- the workers' lives ---------------------------------------------------------------------

    def _pick(self, tried: list[WorkerProcess]) -> WorkerProcess | None:
        ready = [w for w in self._workers if w.takes_calls() and w not in tried]
        return min(ready, key=lambda w: len(w.calls), default=None)

    def _active(self) -> list[WorkerProcess]:
        return [w for w in self._workers if not w.retiring and not w.ended and not w.killed_why]

    async def _fill(self) -> None:
        while len(self._active()) < self._target and monotonic() >= self._spawns.next_at:
            try:
                await self._spawn()
            except OSError as exc:  # out of processes or memory: the node's own loop calls meanwhile
                log.error("worker_not_started", error=str(exc))
                return

    async def _spawn(self) -> None:
        c = self._config
        # The node's secrets stay with the node: a worker parses what receivers answer.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDB_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "schedb.worker", "--node-id", c.node.id, "--parent", str(os.getpid()),
            "--egress", json.dumps(dataclasses.asdict(c.egress)), "--max-inflight", str(c.executor.max_inflight),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        worker = WorkerProcess(process, self._ended)
        self._workers.append(worker)
        self._metrics.workers.set(len(self._active()))
        log.info("worker_started", pid=process.pid, workers=len(self._active()))

    def _ended(self, worker: WorkerProcess, code: int, lost_calls: int) -> None:
        """A worker's process ended (WorkerProcess reaped it and settled its calls)."""
        self._workers.remove(worker)
        self._metrics.workers.set(len(self._active()))
        if worker.retiring and not worker.killed_why:
            log.info("worker_stopped", pid=worker.pid, exit=code)
            return
        self._exits.workers += 1
        self._exits.calls += lost_calls
        self._metrics.worker_exits.labels("workers").inc()
        self._metrics.worker_exits.labels("calls").inc(lost_calls)
        self._spawns.died(worker.ready, monotonic())
        log.warning("worker_ended", pid=worker.pid, exit=code, why=worker.killed_why or "unasked",
                    calls_lost=lost_calls)

    # -- supervision and scaling ----------------------------------------------------------------

    async def _supervise(self) -> None:
        """Every SAMPLE_S: silent workers killed, the load sampled, the target decided, workers
        started or retired. A tick that comes late (the node stalled) judges no silence."""
        while True:
            await asyncio.sleep(SAMPLE_S)
            now = monotonic()
            on_time, self._last_tick = now - self._last_tick <= SAMPLE_S + STALL_S, now
            try:
                if on_time:
                    for worker in self._active():
                        if worker.ready and now - worker.heard_at > SILENT_S:
                            worker.kill(f"silent for {SILENT_S:g} s (frozen or hung)")
                        elif not worker.ready and worker.alive_for > STARTUP_S:
                            worker.kill(f"not ready after {STARTUP_S:g} s")
                self._scale(now)
                await self._fill()
            except Exception:  # a bug here must not end supervision: restarts, scaling
                log.exception("worker_pool_supervision_failed")

    def _scale(self, now: float) -> None:
        active = self._active()
        in_flight = sum(len(w.calls) for w in active)
        lag_total, lag_count = 0.0, 0
        for worker in self._workers:
            (total, count), worker.lag = worker.lag, (0.0, 0)
            lag_total, lag_count = lag_total + total, lag_count + count
        load = Load(now, in_flight / max(1, len(active)), max((w.cpu_share for w in active), default=0.0),
                    lag_total / lag_count if lag_count else 0.0)
        target = self._scaler.decide(self._target, load)
        if target != self._target:
            log.info("workers_scaled", workers_from=self._target, workers_to=target, in_flight=in_flight,
                     cpu_share=round(load.cpu_share, 3), lag_ms=round(load.lag_ms, 1))
            self._target = target
        while len(self._active()) > self._target:
            min(self._active(), key=lambda w: len(w.calls)).retire()
        self._metrics.workers.set(len(self._active()))

