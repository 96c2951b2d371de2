"""One delivery worker process (schedb.worker) as its node sees it: the calls handed to it, each
with its watchdog, the frames it sends back, and its end. schedb.worker_pool keeps several."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import structlog

from schedb.clock import monotonic, wall_ms
from schedb.commands import Outcome, outcome_from_list
from schedb.webhook import WORKER_LATE, WORKER_LOST
from schedb.worker import FRAME_MAX, PROTOCOL, FrameWriter

log = structlog.get_logger("schedb.worker_pool")
HAND_OVER_S = 0.25  # a worker starts a call this soon after its hand-over, or not at all
KILL_SLACK_S = 1.0  # past HAND_OVER_S + the call's timeout, a worker that has not answered is killed
STALL_S = 0.5  # a watchdog this late: the node itself stalled; the pipe is read before judging
STOP_WAIT_S = 2.0  # a retired worker with no calls left that has not exited by then is killed
HEARD_S = 2.5  # it reports every second: not heard from for this long, it gets no new calls


@dataclass
class _Call:
    future: asyncio.Future[Outcome | None]
    fire: dict[str, Any]
    handed_at: float  # monotonic
    handed_ms: int
    deadline: float  # loop time: answered by then, or the worker is killed
    watchdog: asyncio.TimerHandle | None = None
    started: bool = False  # acked: its first byte may have left
    grace: bool = False  # its watchdog came late once (the node stalled) and waits for the pipe
    cancelled: bool = False  # by the executor: kept, with its watchdog, until the worker says it stopped


def not_made(fire: dict[str, Any], why: str) -> Outcome:
    now_ms = wall_ms()
    return Outcome(fire["fire_id"], fire["attempt"], "failed", 0, now_ms, now_ms, f"{WORKER_LATE}: {why}; not made")


class WorkerProcess:
    def __init__(self, process: asyncio.subprocess.Process,
                 on_end: Callable[[WorkerProcess, int, int], None]) -> None:
        """on_end(worker, exit code, calls lost): once, after the process ended and its calls
        were settled."""
        assert process.stdin is not None
        self.process = process
        self.calls: dict[int, _Call] = {}
        self.ready = False  # said so: it takes calls
        self.retiring = False
        self.ended = False
        self.killed_why = ""
        self.garbled = False  # it sent a frame the node could not read: every open call may have gone out
        self.heard_at = self._born = monotonic()
        self.cpu_share = 0.0  # of one core, between its two latest load reports
        self.lag = (0.0, 0)  # (sum of ms from hand-over to start, calls), taken by the pool's samples
        self.handed = 0
        self._cpu = (0.0, 0.0)  # (when, CPU seconds) of its latest load report
        self._members_sent: list[str] | None = None
        self._frames = FrameWriter(process.stdin)
        self._on_end = on_end
        self._reader = asyncio.create_task(self._read(), name=f"worker-{process.pid}")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive_for(self) -> float:
        return monotonic() - self._born

    def takes_calls(self) -> bool:
        """Ready, heard from lately, not on its way out, and not sitting on a call it should have
        started by now (slow or frozen: the next calls go elsewhere)."""
        if not self.ready or self.retiring or self.ended or self.killed_why or monotonic() - self.heard_at > HEARD_S:
            return False
        oldest = next((c for c in self.calls.values() if not c.started), None)
        return oldest is None or monotonic() - oldest.handed_at <= HAND_OVER_S

    async def call(self, call_id: int, start_by: float, fire: dict[str, Any], spec: dict[str, Any],
                   correlation_id: str, secret_values: list[str], members: list[str]) -> Outcome | None:
        """The call's outcome; None when the worker ended without having made it."""
        if members != self._members_sent:
            self._frames.write(["members", members])
            self._members_sent = members
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (start_by - monotonic()) + spec["webhook"]["timeout_s"] + KILL_SLACK_S
        call = _Call(loop.create_future(), fire, monotonic(), wall_ms(), deadline)
        call.watchdog = loop.call_at(deadline, self._overdue, call_id)
        self.calls[call_id] = call
        self.handed += 1
        # The webhook is all of the spec a call needs (schedb.webhook.deliver).
        self._frames.write(["call", call_id, start_by, fire, {"webhook": spec["webhook"]}, correlation_id,
                            secret_values])
        try:
            return await call.future
        except asyncio.CancelledError:  # the executor cancelled the attempt (replaced): so does the worker
            if call_id in self.calls:
                call.cancelled = True  # its watchdog stays: a frozen worker must not make it later
                self._frames.write(["cancel", call_id])
            raise

    def retire(self) -> None:
        """No new calls; it finishes those it has and exits (killed if it lingers after)."""
        if not self.retiring:
            self.retiring = True
            self._frames.write(["retire"])
            self._reaper = asyncio.create_task(self._reap_retired())

    def kill(self, why: str) -> None:
        if not self.killed_why and self.process.returncode is None:
            self.killed_why = why
            log.warning("worker_killed", pid=self.pid, why=why, calls_in_flight=len(self.calls))
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def status(self) -> dict[str, Any]:
        return {"pid": self.pid, "in_flight": len(self.calls), "cpu_share": round(self.cpu_share, 3),
                "ready": self.ready, "retiring": self.retiring, "calls": self.handed}

    async def _reap_retired(self) -> None:
        while self.calls:  # each has its watchdog
            await asyncio.sleep(0.1)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_WAIT_S)
        except TimeoutError:
            self.kill("retired, and did not exit")

    def _overdue(self, call_id: int) -> None:
        """A call's answer is late past any timeout: the worker is frozen or hung, and killed now
        cannot call after the lease the executor checked. Unless the node stalled itself (this
        timer is late): then the frames waiting in the pipe are read first."""
        call = self.calls.get(call_id)
        if call is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - call.deadline > STALL_S and not call.grace:
            call.grace = True
            call.watchdog = loop.call_later(2 * STALL_S, self._overdue, call_id)
            return
        self.kill("a call outlived its timeout (frozen or hung)")

    async def _read(self) -> None:
        """The worker's frames, until its stdout ends; then its end is settled."""
        stdout = self.process.stdout
        assert stdout is not None
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=FRAME_MAX, strict_map_key=False)
        try:
            while data := await stdout.read(65_536):
                unpacker.feed(data)
                for frame in unpacker:
                    self._take(frame)
        except Exception:  # a frame that is not ours: nothing it says can be trusted, acks included
            log.exception("worker_frames_unreadable", pid=self.pid)
            self.garbled = True
            self.kill("sent frames the node cannot read")
            while await stdout.read(65_536):
                pass
        finally:
            self.ended = True  # before the wait: no call is handed to it from here on
            code = await self.process.wait()
            self._on_end(self, code, self._settle(code))

    def _take(self, frame: list[Any]) -> None:
        self.heard_at = monotonic()
        kind = frame[0]
        if kind == "ready":
            self.ready = frame[1] == PROTOCOL
            if not self.ready:
                self.kill(f"speaks protocol {frame[1]!r}, the node {PROTOCOL}")
        elif kind == "started" and frame[1] in self.calls:
            self.calls[frame[1]].started = True
        elif kind == "outcome" and frame[1] in self.calls:
            outcome = _checked(outcome_from_list(frame[2]))  # before the call leaves the table
            call = self.calls.pop(frame[1])
            _cancel(call)
            total, count = self.lag
            self.lag = (total + max(0, outcome.started_ms - call.handed_ms), count + 1)
            if not call.future.done():
                call.future.set_result(outcome)
        elif kind == "cancelled" and frame[1] in self.calls:
            _cancel(self.calls.pop(frame[1]))
        elif kind == "load":
            at, cpu = monotonic(), float(frame[1])
            if self._cpu[0]:
                self.cpu_share = max(0.0, cpu - self._cpu[1]) / max(at - self._cpu[0], 1e-3)
            self._cpu = (at, cpu)

    def _settle(self, code: int) -> int:
        """The calls it had when it ended: those it acked may have been made (lost, as a node's
        own call when the node dies); the others were not, and go elsewhere (None)."""
        lost = 0
        now_ms = wall_ms()
        for call in self.calls.values():
            _cancel(call)
            if call.future.done():
                continue
            if not call.started and not self.garbled:
                call.future.set_result(None)
                continue
            lost += 1
            fire = call.fire
            log.warning("worker_lost_call", job_id=fire["job_id"], fire_id=fire["fire_id"], attempt=fire["attempt"],
                        pid=self.pid)
            call.future.set_result(Outcome(
                fire["fire_id"], fire["attempt"], "failed", 0, call.handed_ms, now_ms,
                f"{WORKER_LOST}: delivery worker {self.pid} ended (exit {code}) during the call; "
                "the receiver may have had it"))
        self.calls.clear()
        return lost


def _checked(outcome: Outcome) -> Outcome:
    """An outcome row as the node commits it: the types CompleteFires takes."""
    ints = (outcome.attempt, outcome.http_status, outcome.started_ms, outcome.finished_ms, outcome.retry_after_ms,
            outcome.bytes_sent)
    if not all(type(v) is int for v in ints) or not isinstance(outcome.status, str) or \
            not isinstance(outcome.error, str) or not isinstance(outcome.report, dict):
        raise ValueError(f"an outcome of the wrong shape: {outcome!r}"[:300])
    return outcome


def _cancel(call: _Call) -> None:
    if call.watchdog is not None:
        call.watchdog.cancel()
