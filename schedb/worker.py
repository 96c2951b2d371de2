"""A delivery worker: a child process of its node that makes the webhook calls the node hands it.

It decides nothing. The node's executor judges every attempt (fence, lease, misfire policy,
circuit) and hands over only a call to make now; the worker makes it with the same code and
the same guard as the node would (schedb.webhook.deliver, behind the egress policy, resolving
names through its GuardedResolver) and sends the outcome back. The node's pool
(schedb.worker_pool) starts, watches and stops it.

Frames are msgpack, node → worker on stdin, worker → node on stdout:
    ["call", id, start_by, fire, spec, correlation_id, secret_values]  → ["outcome", id, row]
    ["cancel", id]  the executor cancelled the attempt (replaced): the call stops, no outcome
    ["members", [address, ...]]  the cluster's own addresses, which webhooks may not call
and every LOAD_EVERY_S ["load", cpu_seconds], the worker's CPU time so far.

A call the worker reaches after `start_by` (the node's monotonic clock; CLOCK_MONOTONIC is the
machine's, the same in both processes) is not made: the executor checked the attempt's lease
for a call starting at once, and a late start could end after it (the fire moved meanwhile).

The end of stdin: finish the calls in flight, send their outcomes, exit. The node's death: the
kernel kills the worker too (PR_SET_PDEATHSIG), as a node's own call in flight dies with it.
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
from schedb.webhook import WORKER_LATE, deliver, new_session

LOAD_EVERY_S = 1.0
FRAME_MAX = 16 * 1024 * 1024  # one call: a job's spec is bounded far below this (schedb.jobspec)


class FrameWriter:
    """msgpack frames to a stream, written together once per turn of the loop: a burst of calls
    (every `@every 1s` job due at one instant) or of outcomes is one write, not a system call each."""

    def __init__(self, stream: asyncio.StreamWriter) -> None:
        self._stream = stream
        self._pending: list[bytes] = []

    def write(self, frame: list[Any]) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(msgpack.packb(frame, use_bin_type=True))

    def flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if data and not self._stream.is_closing():
            self._stream.write(data)

    def close(self) -> None:
        self.flush()
        self._stream.close()


class Worker:
    def __init__(self, node_id: str, egress: EgressSection, max_inflight: int) -> None:
        self._node_id = node_id
        self._members: list[str] = []
        self._egress = EgressPolicy.from_config(egress, lambda: self._members)
        self._session = new_session(max_inflight, self._egress)
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._out: FrameWriter | None = None

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._out = FrameWriter(writer)
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=FRAME_MAX, strict_map_key=False)
        load = asyncio.create_task(self._report_load())
        while data := await reader.read(65_536):
            unpacker.feed(data)
            for frame in unpacker:
                self._take(frame)
        if self._calls:
            await asyncio.wait(list(self._calls.values()))
        load.cancel()
        self._out.flush()
        await writer.drain()
        await self._session.close()

    def _take(self, frame: list[Any]) -> None:
        if frame[0] == "members":
            self._members = list(frame[1])
        elif frame[0] == "call":
            call_id = frame[1]
            self._calls[call_id] = asyncio.create_task(self._call(*frame[1:]))
            self._calls[call_id].add_done_callback(lambda _: self._calls.pop(call_id, None))
        elif frame[0] == "cancel" and frame[1] in self._calls:  # the executor cancelled the attempt
            self._calls[frame[1]].cancel()

    async def _call(self, call_id: int, start_by: float, fire: dict[str, Any], spec: dict[str, Any],
                    correlation_id: str, secret_values: list[str]) -> None:
        if monotonic() > start_by:
            now_ms = wall_ms()
            outcome = Outcome(fire["fire_id"], fire["attempt"], "failed", 0, now_ms, now_ms,
                              f"{WORKER_LATE}: the worker reached the call too late to start it within the lease")
        else:
            outcome = await deliver(self._session, fire, spec, self._node_id, correlation_id, self._egress,
                                    secret_values)
        self._send(["outcome", call_id, outcome.to_list()])

    async def _report_load(self) -> None:
        while True:
            self._send(["load", time.process_time()])
            await asyncio.sleep(LOAD_EVERY_S)

    def _send(self, frame: list[Any]) -> None:
        assert self._out is not None
        self._out.write(frame)


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
    reader = asyncio.StreamReader(limit=FRAME_MAX)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, frames_out)
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the node, which stops us
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
