"""The node's delivery workers (schedb.worker): started, watched, restarted when one ends unasked,
their number following the load (schedb.scaling), stopped by PID.

The pool is the executor's `Send` (schedb.webhook): the executor decides every attempt as it does
without workers, and only the call itself crosses to a worker process, to the one with the fewest
calls in flight. So fences, leases and the at-most-once rule stay where they are decided:

- A worker that ends during a call (a crash, a SIGKILL) is a node that died mid-call: the
  attempt fails with `worker_lost`, which an at-least-once job retries and an at-most-once job
  does not (its fire goes to the dead letters: the receiver may have had it).
- A call is started by its worker within HAND_OVER_S, or not at all (`worker_late`); a worker
  that has not answered by the call's timeout after that is killed (frozen, or hung), and the
  call lost with it. A worker silent for SILENT_S (it reports every second) is killed too,
  before it is handed calls it cannot make. The executor's lease check counts this slack (Executor's call_slack_ms), so
  no worker can call after the attempt's lease, when the fire may have moved.
- With no worker running (all restarting), the node's own loop makes the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

import msgpack
import structlog

from schedb.clock import monotonic, wall_ms
from schedb.commands import Outcome, outcome_from_list
from schedb.config import Config
from schedb.metrics import NodeMetrics
from schedb.scaling import Load, Scaler
from schedb.webhook import WORKER_LOST, Send
from schedb.worker import FRAME_MAX, FrameWriter

log = structlog.get_logger("schedb.worker_pool")
HAND_OVER_S = 0.25  # a worker starts a call this soon after its hand-over, or not at all
KILL_SLACK_S = 0.2  # past HAND_OVER_S + the call's timeout, a worker that has not answered is killed
SAMPLE_S = 1.0
SILENT_S = 10.0  # a worker reports its load every second (schedb.worker): silent this long, it is killed
STOP_WAIT_S = 5.0  # a worker asked to stop (stdin closed) that has not exited by then is killed


@dataclass
class _Call:
    future: asyncio.Future[Outcome]
    fire: dict[str, Any]
    handed_ms: int
    watchdog: asyncio.TimerHandle


@dataclass
class _Worker:
    process: asyncio.subprocess.Process
    calls: dict[int, _Call] = field(default_factory=dict)
    retiring: bool = False
    killed_why: str = ""
    members_sent: list[str] | None = None
    cpu: tuple[float, float] = (0.0, 0.0)  # (when, CPU seconds) of its latest load report
    cpu_share: float = 0.0  # of one core, between its two latest load reports
    reader: asyncio.Task[None] | None = None  # its frames, until it ends (WorkerPool._read)
    heard_at: float = field(default_factory=monotonic)  # its latest frame
    frames: FrameWriter | None = None  # to its stdin

    @property
    def pid(self) -> int:
        return self.process.pid

    def write(self, frame: list[Any]) -> None:
        assert self.frames is not None
        self.frames.write(frame)


class WorkerPool:
    def __init__(self, config: Config, members: Any, fallback: Send, metrics: NodeMetrics) -> None:
        """members: () → the cluster's addresses (the egress policy refuses them); fallback: the
        node's own Send, for when no worker is running."""
        self._config = config
        self._settings = config.executor
        self._members = members
        self._fallback = fallback
        self._metrics = metrics
        self._scaler = Scaler(config.executor)
        self._target = config.executor.workers_min
        self._workers: list[_Worker] = []
        self._ids = itertools.count()
        self._lags: list[float] = []  # ms from hand-over to start, since the last sample
        self._exits = {"workers": 0, "calls": 0}
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def call_slack_ms(self) -> int:
        """What the executor's lease check adds for a call made by a worker."""
        return int((HAND_OVER_S + KILL_SLACK_S) * 1000)

    async def start(self) -> None:
        await self._fill()
        self._supervisor = asyncio.create_task(self._supervise(), name="worker-pool")

    async def send(self, fire: dict[str, Any], spec: dict[str, Any], correlation_id: str,
                   secret_values: list[str]) -> Outcome:
        worker = min(self._active(), key=lambda w: len(w.calls), default=None)
        if worker is None:
            return await self._fallback(fire, spec, correlation_id, secret_values)
        members = list(self._members())
        if members != worker.members_sent:
            worker.write(["members", members])
            worker.members_sent = members
        call_id = next(self._ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HAND_OVER_S + spec["webhook"]["timeout_s"] + KILL_SLACK_S
        call = _Call(loop.create_future(), fire, wall_ms(),
                     loop.call_at(deadline, self._overdue, worker, call_id))
        worker.calls[call_id] = call
        worker.write(["call", call_id, monotonic() + HAND_OVER_S, fire, spec, correlation_id, secret_values])
        try:
            return await call.future
        except asyncio.CancelledError:  # the executor cancelled the attempt (replaced): so does the worker
            if worker.calls.pop(call_id, None) is not None:
                call.watchdog.cancel()
                with contextlib.suppress(ConnectionError, RuntimeError):
                    worker.write(["cancel", call_id])
            raise

    def status(self) -> dict[str, Any]:
        """For /api/v1/cluster: the bounds, the target, each worker, and who ended unasked."""
        s = self._settings
        return {"min": s.workers_min, "max": s.workers_max, "target": self._target,
                "running": [{"pid": w.pid, "in_flight": len(w.calls), "cpu_share": round(w.cpu_share, 3),
                             "retiring": w.retiring} for w in self._workers],
                "exits": dict(self._exits)}

    async def close(self) -> None:
        """Stop every worker: stdin closed (it finishes its calls), killed by PID if it lingers."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for worker in list(self._workers):
            self._retire(worker)
        await asyncio.gather(*(self._stopped(w) for w in list(self._workers)))

    # -- the workers' lives ---------------------------------------------------------------------

    def _active(self) -> list[_Worker]:
        return [w for w in self._workers if not w.retiring and not w.killed_why]

    async def _fill(self) -> None:
        while len(self._active()) < self._target:
            try:
                await self._spawn()
            except OSError as exc:  # out of processes or memory: the node's own loop calls meanwhile
                log.error("worker_not_started", error=str(exc))
                return

    async def _spawn(self) -> None:
        c = self._config
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "schedb.worker", "--node-id", c.node.id, "--parent", str(os.getpid()),
            "--egress", json.dumps(dataclasses.asdict(c.egress)), "--max-inflight", str(c.executor.max_inflight),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert process.stdin is not None
        worker = _Worker(process, frames=FrameWriter(process.stdin))
        self._workers.append(worker)
        self._metrics.workers.set(len(self._workers))
        worker.reader = asyncio.create_task(self._read(worker), name=f"worker-{process.pid}")
        log.info("worker_started", pid=process.pid, workers=len(self._workers))

    def _retire(self, worker: _Worker) -> None:
        """No new calls; the end of its stdin lets it finish the ones it has, then exit."""
        worker.retiring = True
        assert worker.frames is not None
        worker.frames.close()

    async def _stopped(self, worker: _Worker) -> None:
        try:
            await asyncio.wait_for(worker.process.wait(), STOP_WAIT_S + self._settings.timeout_s_max)
        except TimeoutError:
            self._kill(worker, "did not stop when asked")
            await worker.process.wait()

    def _kill(self, worker: _Worker, why: str) -> None:
        if not worker.killed_why and worker.process.returncode is None:
            worker.killed_why = why
            log.warning("worker_killed", pid=worker.pid, why=why, calls_in_flight=len(worker.calls))
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)

    def _overdue(self, worker: _Worker, call_id: int) -> None:
        """A call's answer is late past any timeout: the worker is frozen or hung. Killed now, it
        cannot make the call after the lease the executor checked."""
        if call_id in worker.calls:
            self._kill(worker, "a call outlived its timeout (frozen or hung)")

    async def _read(self, worker: _Worker) -> None:
        """The worker's frames, until its stdout ends; then its end is judged."""
        assert worker.process.stdout is not None
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=FRAME_MAX, strict_map_key=False)
        with contextlib.suppress(ConnectionError):
            while data := await worker.process.stdout.read(65_536):
                unpacker.feed(data)
                for frame in unpacker:
                    self._take(worker, frame)
        code = await worker.process.wait()
        self._workers.remove(worker)
        self._metrics.workers.set(len(self._workers))
        self._lose_calls(worker, code)
        if not worker.retiring:
            self._exits["workers"] += 1
            self._metrics.worker_exits.labels("workers").inc()
            log.warning("worker_ended", pid=worker.pid, exit=code, why=worker.killed_why or "unasked")
        else:
            log.info("worker_stopped", pid=worker.pid, exit=code)

    def _take(self, worker: _Worker, frame: list[Any]) -> None:
        worker.heard_at = monotonic()
        if frame[0] == "outcome":
            call = worker.calls.pop(frame[1], None)
            if call is None:
                return  # cancelled meanwhile
            call.watchdog.cancel()
            outcome = outcome_from_list(frame[2])
            self._lags.append(max(0, outcome.started_ms - call.handed_ms))
            if not call.future.done():
                call.future.set_result(outcome)
        elif frame[0] == "load":
            at, cpu = monotonic(), float(frame[1])
            if worker.cpu[0]:
                worker.cpu_share = max(0.0, cpu - worker.cpu[1]) / max(at - worker.cpu[0], 1e-3)
            worker.cpu = (at, cpu)

    def _lose_calls(self, worker: _Worker, code: int) -> None:
        """The calls a worker had when it ended: it may have made them, or not."""
        now_ms = wall_ms()
        for call in worker.calls.values():
            call.watchdog.cancel()
            self._exits["calls"] += 1
            self._metrics.worker_exits.labels("calls").inc()
            fire = call.fire
            log.warning("worker_lost_call", job_id=fire["job_id"], fire_id=fire["fire_id"], attempt=fire["attempt"],
                        pid=worker.pid)
            if not call.future.done():
                call.future.set_result(Outcome(
                    fire["fire_id"], fire["attempt"], "failed", 0, call.handed_ms, now_ms,
                    f"{WORKER_LOST}: delivery worker {worker.pid} ended (exit {code}) during the call; "
                    "the receiver may have had it"))
        worker.calls.clear()

    # -- scaling --------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Every SAMPLE_S: the load sampled, the target decided, workers started or retired."""
        while True:
            await asyncio.sleep(SAMPLE_S)
            for worker in self._active():
                if monotonic() - worker.heard_at > SILENT_S:  # before it is handed a call it cannot make
                    self._kill(worker, f"silent for {SILENT_S:g} s (frozen or hung)")
            active = self._active()
            in_flight = sum(len(w.calls) for w in active)
            lags, self._lags = self._lags, []
            load = Load(monotonic(), in_flight / max(1, len(active)), max((w.cpu_share for w in active), default=0.0),
                        sum(lags) / len(lags) if lags else 0.0)
            target = self._scaler.decide(self._target, load)
            if target != self._target:
                log.info("workers_scaled", workers_from=self._target, workers_to=target, in_flight=in_flight,
                         cpu_share=round(load.cpu_share, 3), lag_ms=round(load.lag_ms, 1))
                self._target = target
            while len(self._active()) > self._target:
                self._retire(min(self._active(), key=lambda w: len(w.calls)))
            await self._fill()
