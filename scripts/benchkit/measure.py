"""What every benchmark scenario needs: loading jobs in bulk, reading the receiver's
ledger into delays, sampling CPU and memory of the node processes, percentiles."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from devkit.harness import Cluster, Receiver

BULK_BATCH = 1_000
BULK_CONCURRENCY = 8  # requests in flight: validation on the receiving node overlaps the others' applies


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: list[float]) -> dict[str, float | None]:
    return {"p50_ms": percentile(values, 0.50), "p99_ms": percentile(values, 0.99),
            "max_ms": max(values) if values else None}


def now_ms() -> int:
    return int(time.time() * 1000)


def scheduled_ms(fire_id: str) -> int:
    return int(fire_id.rsplit(":", 1)[1])


async def bulk_load(url: str, jobs: list[dict[str, Any]]) -> float:
    """Create the jobs through POST /api/v1/jobs/bulk, a few batches in flight; returns jobs/s."""
    batches = [jobs[i:i + BULK_BATCH] for i in range(0, len(jobs), BULK_BATCH)]
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    started = time.perf_counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            for attempt in range(20):
                async with session.post(url + "/api/v1/jobs/bulk", json={"jobs": batch}) as resp:
                    if resp.status == 200:
                        # After a 503 "outcome unknown" the first try may have committed: 409 is fine then.
                        done = (201, 409) if attempt else (201,)
                        result = await resp.json()
                        assert all(item["status"] in done for item in result["items"]), result["items"][:3]
                        break
                    await asyncio.sleep(0.5)  # 429/503: the cluster is busy, try again
            else:
                raise RuntimeError(f"bulk create kept failing with {resp.status}")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(BULK_CONCURRENCY)))
    return len(jobs) / (time.perf_counter() - started)


def every_second_jobs(prefix: str, count: int, url: str) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i:06d}", "schedule": "@every 1s", "webhook": {"url": url}} for i in range(count)]


@dataclass
class Ledger:
    """The receiver's deliveries, read incrementally (the file only grows)."""

    path: Path
    offset: int = 0

    def read_new(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


def deliveries_between(rows: Iterable[dict[str, Any]], prefix: str, start_ms: int,
                       end_ms: int) -> list[dict[str, Any]]:
    return [r for r in rows if r["fire_id"] and r["job_id"].startswith(prefix)
            and start_ms <= scheduled_ms(r["fire_id"]) < end_ms]


def delivery_figures(rows: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    delays = [r["arrival_ms"] - scheduled_ms(r["fire_id"]) for r in rows]
    distinct = {r["fire_id"] for r in rows}
    return {"expected": expected, "delivered": len(distinct), "lost": max(0, expected - len(distinct)),
            "duplicates": len(rows) - len(distinct), **summary_ms(delays)}


class CpuSampler:
    """CPU seconds used by processes between start() and stop(), as a share of one core.
    children: with each process's children (a node's delivery workers, and its snapshot forks)."""

    def __init__(self, pids: dict[str, int], children: bool = False) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._children = children
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: self._cpu(p) for name, p in self._procs.items()}

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t0
        return {name: round((self._cpu(p) - self._start[name]) / elapsed, 2) for name, p in self._procs.items()}

    def _cpu(self, proc: psutil.Process) -> float:
        times = proc.cpu_times()
        if not self._children:
            return times.user + times.system
        ended = times.children_user + times.children_system  # children it has waited for
        return times.user + times.system + ended + sum(_cpu(c) for c in proc.children(recursive=True))


def _cpu(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.NoSuchProcess:  # a child that ended meanwhile
        return 0.0
    return times.user + times.system


def rss_mb(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def node_pids(cluster: Cluster, receiver: Receiver | None = None) -> dict[str, int]:
    pids = {n.node_id: n.pid for n in cluster.nodes if n.proc is not None and n.proc.poll() is None}
    if receiver is not None:
        pids["receiver"] = receiver.proc.pid
    return pids


def dir_size_kib(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) // 1024
