"""The node's side of a delivery worker (schedb.worker_process) against a scripted stand-in for
the worker process (a real child process speaking the frames of schedb.worker): what the node
makes of frames it cannot read, and of an ack that follows one."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import msgpack

from schedb.worker_process import WorkerProcess

FIRE = {"fire_id": "job:1800000000000", "job_id": "job", "scheduled_ms": 1_800_000_000_000, "attempt": 1}
SPEC = {"webhook": {"url": "http://127.0.0.1:9/", "timeout_s": 5}}

# Says ready, reads the first call, answers with the frames given (msgpack, hex on argv), and
# then waits for the end of stdin.
STAND_IN = """
import sys, msgpack
out = sys.stdout.buffer
out.write(msgpack.packb(["ready", 1])); out.flush()
unpacker = msgpack.Unpacker(raw=False)
while True:
    data = sys.stdin.buffer.read1(65536)
    if not data:
        sys.exit(0)
    unpacker.feed(data)
    frames = [f for f in unpacker]
    if any(f[0] == "call" for f in frames):
        out.write(bytes.fromhex(sys.argv[1])); out.flush()
        sys.exit(0)
"""


async def _call_with(answer: bytes) -> Any:
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", STAND_IN, answer.hex(),
                                                   stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    ended: list[tuple[int, int]] = []
    worker = WorkerProcess(process, lambda _, code, lost: ended.append((code, lost)))
    while not worker.ready:
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    outcome = await asyncio.wait_for(worker.call(0, loop.time() + 1.0, FIRE, SPEC, "c", [], []), 10)
    await asyncio.wait_for(process.wait(), 10)
    while not ended:
        await asyncio.sleep(0.01)
    return outcome, ended[0]


async def test_an_outcome_of_the_wrong_shape_settles_the_call_instead_of_leaving_it_open() -> None:
    """Review: the call left the table before its row was read; a bad row then left the fire's
    future unresolved for ever (the executor's task, its gate place, a later attempt waiting)."""
    started = msgpack.packb(["started", 0])
    bad = msgpack.packb(["outcome", 0, ["job:1800000000000", 1, "succeeded", 200, "soon", 1, ""]])
    outcome, (_, lost) = await _call_with(started + bad)
    assert outcome.status == "failed" and outcome.error.startswith("worker_lost") and lost == 1


async def test_an_ack_after_an_unreadable_frame_still_counts() -> None:
    """Review: the node stopped reading at the bad frame and never saw the ack after it; the call
    looked never made and went to another worker: called twice. Now every open call of a worker
    that sent garbage may have gone out."""
    garbage, started = msgpack.packb(["load"]), msgpack.packb(["started", 0])
    outcome, (_, lost) = await _call_with(garbage + started)
    assert outcome is not None and outcome.error.startswith("worker_lost") and lost == 1


async def test_a_call_the_worker_never_acked_is_not_made() -> None:
    outcome, (_, lost) = await _call_with(msgpack.packb(["load", 0.1]))
    assert outcome is None and lost == 0  # the pool hands it on, or makes it itself while in time
