"""Reference points measured in the same run, so ratios mean something on a noisy machine:
the raw webhook limit (aiohttp POSTing to the same receiver as fast as it can) and
APScheduler 3.x firing the same workload from one process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchkit.measure import CpuSampler, Ledger, deliveries_between, delivery_figures, now_ms, summary_ms
from devkit.devcluster import stop_pid
from devkit.harness import Receiver

HERE = Path(__file__).resolve().parent


async def raw_limit(work: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    """Closed-loop POSTs with `concurrency` connections: the ceiling for webhook delivery here."""
    path = work / "raw-limit"
    path.mkdir(parents=True)
    receiver = Receiver(path)
    try:
        latencies: list[float] = []
        cpu = CpuSampler({"receiver": receiver.proc.pid})
        deadline = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=concurrency)

        async def worker(session: aiohttp.ClientSession) -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with session.post(receiver.url, json={"raw": True}) as resp:
                    await resp.read()
                latencies.append((time.perf_counter() - t0) * 1000)

        cpu.start()
        started = time.perf_counter()
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        return {"concurrency": concurrency, "requests_per_s": round(len(latencies) / elapsed),
                **summary_ms(latencies), "cpu_cores": cpu.stop()}
    finally:
        receiver.stop()


async def apscheduler(work: Path, jobs: int, seconds: int, mode: str = "every") -> dict[str, Any]:
    """APScheduler's AsyncIOScheduler (memory store) in a process of its own, POSTing with aiohttp
    to a receiver of its own; the same figures as schedb's scenarios, from the receiver's ledger."""
    path = work / f"apscheduler-{mode}-{jobs}"
    path.mkdir(parents=True)
    receiver = Receiver(path)
    start = (now_ms() // 1000 + 6 + jobs // 5000) * 1000  # time to add the jobs first
    linger_s = 2.0 if mode == "every" else 5.0 + jobs / 1000  # for the last deliveries
    end = start + seconds * 1000 if mode == "every" else start + 1
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "apscheduler_ref.py"), "--url", receiver.url, "--jobs", str(jobs),
         "--start-ms", str(start), "--end-ms", str(end), "--mode", mode, "--out", str(path / "ref.json"),
         "--linger-s", str(linger_s)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(path / "ref.log", "wb"))  # noqa: SIM115
    try:
        cpu = CpuSampler({"apscheduler": proc.pid, "receiver": receiver.proc.pid})
        await asyncio.sleep(max(0.0, (start - now_ms()) / 1000))
        cpu.start()
        await asyncio.sleep(max(0.0, (end - now_ms()) / 1000))
        used = cpu.stop()
        await asyncio.sleep(linger_s + 1.0)
        proc.wait(timeout=60)
        rows = deliveries_between(Ledger(receiver.ledger).read_new(), "aps-", start, end)
        figures = delivery_figures(rows, jobs * seconds if mode == "every" else jobs)
        extra = json.loads((path / "ref.json").read_text())
        last = max((r["arrival_ms"] for r in rows), default=start) - start
        return {"jobs": jobs, "mode": mode, "fires_per_s": round(figures["delivered"] / max(1, seconds), 1),
                **figures, "cpu_cores": used, "all_delivered_s": round(last / 1000, 3), **extra}
    finally:
        if proc.poll() is None:
            stop_pid(proc.pid)
        receiver.stop()
