"""A delivery worker: a child process of its node that makes the webhook calls the node hands it.

It decides nothing. The node's executor judges every attempt (fence, lease, misfire policy,
circuit) and hands over only a call to make now; the worker makes it with the same code and
the same guard as the node would (schedb.webhook.deliver, behind the egress policy, resolving
names through its GuardedResolver) and sends the outcome back. The node's pool
(schedb.worker_pool) starts, watches and stops it.

Frames are msgpack, node → worker on stdin:
    ["call", id, start_by, fire, spec, correlation_id, secret_values]
    ["cancel", id]      the executor cancelled the attempt (replaced): the call stops, no outcome
    ["members", [address, ...]]   the cluster's own addresses, which webhooks may not call
    ["retire"]          take no more calls; finish those in hand (cancels still come), send their
                        outcomes, exit
and worker → node on stdout:
    ["ready", PROTOCOL]  once it can take calls; none is handed to it before
    ["started", id]      in the pipe before the call's first byte leaves: a call the node never
                         saw started was never made, whatever became of the worker
    ["outcome", id, row]
    ["cancelled", id]    a cancelled call stopped (no outcome)
    ["load", cpu_seconds] every LOAD_EVERY_S: its CPU time so far, and a sign of life

A call the worker reaches after `start_by` (the node's monotonic clock: CLOCK_MONOTONIC is the
machine's, the same in both processes), or whose ack is not in the pipe by then, is not made:
the executor checked the attempt's lease for a call starting by then, and a later start could
end after it (the fire moved meanwhile).

The worker's life is bounded by its node's: the end of stdin ends it, and so does the node's
death (PR_SET_PDEATHSIG), as a node's own call in flight dies with it. SIGTERM and SIGINT are
the node's to handle (a service manager signals the whole group): the node retires it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from typing import Any

import msgpack

from schedb.clock import monotonic, wall_ms
from schedb.commands import Outcome
from schedb.config import EgressSection
from schedb.egress import EgressPolicy
from schedb.eventloop import loop_factory
from schedb.webhook import WORKER_ERROR, WORKER_LATE, deliver, new_session

PROTOCOL = 1  # of the frames above; a node and a worker of different versions do not talk
LOAD_EVERY_S = 1.0
FRAME_MAX = 16 * 1024 * 1024  # one call: a job's spec is bounded far below this (schedb.jobspec)


class FrameWriter:
    """msgpack frames to a stream, written together once per turn of the loop: a burst of calls
    (every `@every 1s` job due at one instant), of their acks or of outcomes is one write, not a
    system call each."""

    def __init__(self, stream: asyncio.StreamWriter) -> None:
        self._stream = stream
        self._pending: list[bytes] = []
        self._flushed: asyncio.Future[None] | None = None

    def write(self, frame: list[Any]) -> None:
        if not self._pending:
            loop = asyncio.get_running_loop()
            self._flushed = loop.create_future()
            loop.call_soon(self.flush)
        self._pending.append(msgpack.packb(frame, use_bin_type=True))

    def flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if data and not self._stream.is_closing():
            self._stream.write(data)
        if self._flushed is not None and not self._flushed.done():
            self._flushed.set_result(None)

    async def written(self) -> None:
        """Until every frame so far is in the pipe (the kernel's): there the node reads it even if
        this process dies next. The frames of one turn still go out in one write."""
        if self._pending and self._flushed is not None:
            await asyncio.shield(self._flushed)
        await self._stream.drain()  # the transport's high-water mark is 0: drain waits for all of it

    @property
    def closing(self) -> bool:
        """The other end is gone: what is written from now on goes nowhere."""
        return self._stream.is_closing()

    async def close(self) -> None:
        """Every frame into the pipe, then the pipe closed (a pipe's writer has no wait_closed)."""
        self.flush()
        with contextlib.suppress(ConnectionError):  # the node's end is gone: nobody to tell
            await self._stream.drain()  # high-water mark 0: until all of it is written
        self._stream.close()


class Worker:
    def __init__(self, node_id: str, egress: EgressSection, max_inflight: int) -> None:
        self._node_id = node_id
        self._members: list[str] = []
        self._egress = EgressPolicy.from_config(egress, lambda: self._members)
        self._session = new_session(max_inflight, self._egress)
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._out: FrameWriter | None = None
        self._retired = asyncio.Event()

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._out = FrameWriter(writer)
        load = asyncio.create_task(self._report_load())
        self._out.write(["ready", PROTOCOL])
        reading = asyncio.create_task(self._read(reader))
        await self._retired.wait()  # stdin keeps being read: a cancel may still come
        while self._calls:
            await asyncio.wait(list(self._calls.values()))
        reading.cancel()
        load.cancel()
        await self._out.close()  # every outcome written before the process ends
        await self._session.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=FRAME_MAX, strict_map_key=False)
        while data := await reader.read(65_536):
            unpacker.feed(data)
            for frame in unpacker:
                self._take(frame)
        self._retired.set()  # the node's end of the pipe closed

    def _take(self, frame: list[Any]) -> None:
        kind = frame[0]
        if kind == "members":
            self._members = list(frame[1])
        elif kind == "call" and not self._retired.is_set():
            call_id = frame[1]
            self._calls[call_id] = asyncio.create_task(self._call(*frame[1:]))
            self._calls[call_id].add_done_callback(lambda task: self._call_ended(call_id, task))
        elif kind == "cancel" and frame[1] in self._calls:
            self._calls[frame[1]].cancel()
        elif kind == "retire":
            self._retired.set()

    def _call_ended(self, call_id: int, task: asyncio.Task[None]) -> None:
        """A cancelled call says so: the node keeps its watchdog until then."""
        self._calls.pop(call_id, None)
        if task.cancelled() and self._out is not None:
            self._out.write(["cancelled", call_id])

    async def _call(self, call_id: int, start_by: float, fire: dict[str, Any], spec: dict[str, Any],
                    correlation_id: str, secret_values: list[str]) -> None:
        assert self._out is not None
        late = f"{WORKER_LATE}: the worker could not start the call within its lease's allowance"
        if monotonic() > start_by:
            outcome = _failed(fire, late)
        else:
            self._out.write(["started", call_id])
            await self._out.written()
            if monotonic() > start_by or self._out.closing:  # the ack waited on a full pipe: too late now
                outcome = _failed(fire, late)
            else:
                outcome = await self._deliver(fire, spec, correlation_id, secret_values)
        self._out.write(["outcome", call_id, outcome.to_list()])

    async def _deliver(self, fire: dict[str, Any], spec: dict[str, Any], correlation_id: str,
                       secret_values: list[str]) -> Outcome:
        try:
            return await deliver(self._session, fire, spec, self._node_id, correlation_id, self._egress,
                                 secret_values)
        except Exception as exc:  # deliver classifies what a receiver does: this is a bug, reported
            return _failed(fire, f"{WORKER_ERROR}: {type(exc).__name__}: {exc}"[:300])

    async def _report_load(self) -> None:
        assert self._out is not None
        while True:
            self._out.write(["load", time.process_time()])
            await asyncio.sleep(LOAD_EVERY_S)


def _failed(fire: dict[str, Any], error: str) -> Outcome:
    now_ms = wall_ms()
    return Outcome(fire["fire_id"], fire["attempt"], "failed", 0, now_ms, now_ms, error)


def _die_with(parent_pid: int) -> None:
    """The node's death kills this process (Linux's PR_SET_PDEATHSIG); if the node died before
    that was set, go now."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the end of stdin still ends the worker
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(0)


async def _pipes() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """stdin and stdout as streams. Frames go out on a copy of stdout, and stdout itself becomes
    stderr: a stray print (a library's warning) must not break a frame."""
    frames_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, frames_out)
    transport.set_write_buffer_limits(high=0)  # FrameWriter.written: drain() waits until all is written
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def _main(args: argparse.Namespace) -> None:
    worker = Worker(args.node_id, EgressSection(**json.loads(args.egress)), args.max_inflight)
    await worker.run(*await _pipes())


def main() -> None:
    parser = argparse.ArgumentParser(description="schedb delivery worker (started by its node)")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--egress", required=True, help="the node's [egress] section, as JSON")
    parser.add_argument("--max-inflight", type=int, required=True)
    args = parser.parse_args()
    _die_with(args.parent)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_main(args))


if __name__ == "__main__":
    main()
