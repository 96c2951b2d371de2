"""CPU per webhook call of schedb's own delivery path (schedb.webhook.deliver over the node's
session), on the default asyncio loop and on uvloop, each in a process of its own.

    python scripts/benchkit/client_cpu.py [--calls N] [--rate R]

The calls are paced (R a second, as fires are), not closed-loop, so that the figure is the cost
of one call at a realistic rate. The receiver is devkit's, in its own process; only the client
process's CPU is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

LOOPS = ("asyncio", "uvloop")


async def _calls(url: str, calls: int, rate: int) -> dict[str, float]:
    from schedb.webhook import deliver, new_session

    spec: dict[str, Any] = {"webhook": {"url": url, "method": "POST", "headers": {}, "body": None,
                                        "timeout_s": 10.0, "signing_secret": "s3cret"}}
    session = new_session(256)
    pending: set[asyncio.Task[Any]] = set()
    try:
        await deliver(session, {"fire_id": "warm:0", "job_id": "warm", "scheduled_ms": 0, "attempt": 1}, spec,
                      "n1", "c")
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for i in range(calls):
            fire = {"fire_id": f"job-{i}:{i}", "job_id": f"job-{i}", "scheduled_ms": i, "attempt": 1}
            task = asyncio.create_task(deliver(session, fire, spec, "n1", "corr"))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
        await asyncio.gather(*pending)
        after = resource.getrusage(resource.RUSAGE_SELF)
        return {"user_us_per_call": round((after.ru_utime - before.ru_utime) / calls * 1e6, 1),
                "system_us_per_call": round((after.ru_stime - before.ru_stime) / calls * 1e6, 1)}
    finally:
        await session.close()


def _child(loop: str, url: str, calls: int, rate: int) -> None:
    if loop == "uvloop":
        import uvloop
        uvloop.install()
    print(json.dumps({"loop": loop, **asyncio.run(_calls(url, calls, rate))}))


def measure(calls: int, rate: int) -> list[dict[str, Any]]:
    from devkit.devcluster import stop_pid
    from devkit.harness import Receiver

    with tempfile.TemporaryDirectory(prefix="schedb-client-cpu-") as tmp:
        receiver = Receiver(Path(tmp))
        try:
            out = []
            for loop in LOOPS:
                done = subprocess.run([sys.executable, __file__, "--child", loop, "--url", receiver.url,
                                       "--calls", str(calls), "--rate", str(rate)],
                                      capture_output=True, text=True, check=True, timeout=600)
                out.append(json.loads(done.stdout.strip().splitlines()[-1]))
            return out
        finally:
            stop_pid(receiver.proc.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--child", choices=LOOPS)
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.url, args.calls, args.rate)
        return
    for row in measure(args.calls, args.rate):
        print(f"{row['loop']:8} {row['user_us_per_call']:8.1f} µs user + {row['system_us_per_call']:6.1f} µs system"
              " CPU per call")


if __name__ == "__main__":
    main()
