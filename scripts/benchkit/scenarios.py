"""The benchmark scenarios against schedb: each starts a fresh three-node cluster and a
receiver on free ports (127.0.0.1 only) and returns its figures as a dict."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from benchkit.measure import (
    CpuSampler,
    Ledger,
    bulk_load,
    deliveries_between,
    delivery_figures,
    dir_size_kib,
    every_second_jobs,
    node_pids,
    now_ms,
    rss_mb,
    scheduled_ms,
    summary_ms,
)
from devkit.harness import Cluster, Receiver
from schedb.timefmt import ms_to_rfc3339

STRAGGLER_S = 3.0
SCALE_COMPACTION_S = 20.0


@contextmanager
def fresh(work: Path, name: str, extra: str = "") -> Iterator[tuple[Cluster, Receiver, Ledger]]:
    """A cluster and receiver of their own; both stopped by PID afterwards, even on failure."""
    path = work / name
    path.mkdir(parents=True)
    receiver = Receiver(path)
    cluster = Cluster(path, extra_config=extra)
    try:
        cluster.start()
        cluster.wait_ready()
        yield cluster, receiver, Ledger(receiver.ledger)
    finally:
        cluster.stop()
        receiver.stop()


async def sleep_until(ms: int) -> None:
    await asyncio.sleep(max(0.0, (ms - now_ms()) / 1000))


async def sustained(work: Path, jobs: int, seconds: int) -> dict[str, Any]:
    """`jobs` jobs @every 1s; fires scheduled in a window of `seconds` after a warm-up."""
    with fresh(work, f"sustained-{jobs}") as (cluster, receiver, ledger):
        await bulk_load(cluster.followers()[0].url, every_second_jobs("s", jobs, receiver.url))
        await asyncio.sleep(3.0)  # the first fires have gone out: caches, connections, timers warm
        start = (now_ms() // 1000 + 1) * 1000
        figures = await window(cluster, receiver, ledger, "s-", start, seconds, jobs * seconds)
        return {"jobs": jobs, "seconds": seconds, **figures}


async def window(cluster: Cluster, receiver: Receiver, ledger: Ledger, prefix: str, start: int, seconds: int,
                 expected: int, children: bool = False) -> dict[str, Any]:
    """The deliveries of the fires due in [start, start + seconds) of jobs named prefix…, and the
    CPU every process used meanwhile (children: also with each one's child processes)."""
    end = start + seconds * 1000
    samplers = {"cpu_cores": CpuSampler(node_pids(cluster, receiver))}
    if children:
        samplers["cpu_cores_with_children"] = CpuSampler(node_pids(cluster, receiver), children=True)
    await sleep_until(start)
    for sampler in samplers.values():
        sampler.start()
    await sleep_until(end)
    used = {name: sampler.stop() for name, sampler in samplers.items()}
    await asyncio.sleep(STRAGGLER_S)
    figures = delivery_figures(deliveries_between(ledger.read_new(), prefix, start, end), expected)
    return {"fires_per_s": round(figures["delivered"] / seconds, 1), **figures, **used}


async def burst(work: Path, jobs: int) -> dict[str, Any]:
    """`jobs` one-shot jobs due at the same instant."""
    with fresh(work, f"burst-{jobs}") as (cluster, receiver, ledger):
        at_ms = (now_ms() // 1000 + 8 + jobs // 2000) * 1000  # time to load them first
        specs = [{"id": f"b-{i:06d}", "schedule": f"@at {ms_to_rfc3339(at_ms)}", "webhook": {"url": receiver.url}}
                 for i in range(jobs)]
        await bulk_load(cluster.followers()[0].url, specs)
        assert now_ms() < at_ms - 500, "loading the burst took longer than planned"
        rows: list[dict[str, Any]] = []
        deadline = at_ms + 30_000
        while now_ms() < deadline and len({r["fire_id"] for r in rows}) < jobs:
            await asyncio.sleep(0.25)
            rows += deliveries_between(ledger.read_new(), "b-", at_ms, at_ms + 1)
        figures = delivery_figures(rows, jobs)
        last = max((r["arrival_ms"] for r in rows), default=at_ms) - at_ms
        return {"jobs": jobs, "all_delivered_s": round(last / 1000, 3) if figures["lost"] == 0 else None, **figures}


async def api(work: Path, creates: int) -> dict[str, Any]:
    """Create latency and throughput through a follower and the leader; read latency; paced 500/s."""
    with fresh(work, "api") as (cluster, _, _ledger):
        leader, follower = cluster.leader(), cluster.followers()[0]
        out: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:
            for name, node in (("follower", follower), ("leader", leader)):
                out[f"create_via_{name}"] = await _closed_loop_creates(session, node.url, name, creates)
            out["create_paced_500_per_s"] = await _paced_creates(session, follower.url, 500, creates)
            out["read"] = await _reads(session, follower.url, min(creates, 2_000))
        return out


def _spread_job(job_id: str, i: int) -> dict[str, Any]:
    """A yearly job (1 January) at one of the day's 1,440 minutes: many jobs share a schedule,
    as in a real fleet; none fires during the run, and creating many does not fill one slot."""
    return {"id": job_id, "schedule": f"{i % 60} {i // 60 % 24} 1 1 *",
            "webhook": {"url": "http://127.0.0.1:9/never"}}


async def _closed_loop_creates(session: aiohttp.ClientSession, url: str, tag: str, count: int,
                               concurrency: int = 32) -> dict[str, Any]:
    latencies: list[float] = []
    ids = iter(range(count))

    async def worker() -> None:
        for i in ids:
            t0 = time.perf_counter()
            async with session.post(url + "/api/v1/jobs", json=_spread_job(f"api-{tag}-{i}", i)) as resp:
                assert resp.status == 201, await resp.text()
            latencies.append((time.perf_counter() - t0) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"creates": count, "concurrency": concurrency,
            "per_s": round(count / (time.perf_counter() - started)), **summary_ms(latencies)}


async def _paced_creates(session: aiohttp.ClientSession, url: str, rate: int, count: int) -> dict[str, Any]:
    latencies: list[float] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        async with session.post(url + "/api/v1/jobs", json=_spread_job(f"api-paced-{i}", i + 7)) as resp:
            assert resp.status == 201, await resp.text()
        latencies.append((time.perf_counter() - t0) * 1000)

    tasks = []
    started = time.perf_counter()
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return {"creates": count, "rate": rate, **summary_ms(latencies)}


async def _reads(session: aiohttp.ClientSession, url: str, count: int) -> dict[str, Any]:
    latencies: list[float] = []
    for i in range(count):
        t0 = time.perf_counter()
        async with session.get(f"{url}/api/v1/jobs/api-follower-{i}") as resp:
            assert resp.status == 200
            await resp.read()
        latencies.append((time.perf_counter() - t0) * 1000)
    return {"reads": count, **summary_ms(latencies)}


async def scale(work: Path, jobs: int) -> dict[str, Any]:
    """Bulk-load `jobs` jobs: load rate, RSS per node, snapshot size, a SIGKILLed follower's recovery."""
    # Snapshots every 20 s, not every few seconds: a load of 100,000 jobs takes less, and is
    # measured as with the default (60 s); the figures below wait for a snapshot written after the
    # load (a million jobs take longer, and are snapshotted during their load too).
    with fresh(work, f"scale-{jobs}", extra=f"compaction_min_s = {SCALE_COMPACTION_S}\n") as (cluster, _, _ledger):
        before = {n.node_id: rss_mb(n.pid) for n in cluster.nodes}
        rate = await bulk_load(cluster.followers()[0].url, [_spread_job(f"sc-{i:06d}", i) for i in range(jobs)])
        victim = cluster.followers()[0]
        dump = (cluster.tmp_dir / f"data-{victim.node_id}" / "raft.dump")
        loaded, loaded_at = time.monotonic(), time.time()
        while time.monotonic() - loaded < 3 * SCALE_COMPACTION_S and not _written_after(dump, loaded_at):
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)  # the snapshot's child finishes writing; memory settles
        after = {n.node_id: rss_mb(n.pid) for n in cluster.nodes}
        snapshot_kib = dump.stat().st_size // 1024 if dump.exists() else None
        data_kib = dir_size_kib(cluster.tmp_dir / f"data-{victim.node_id}")
        cluster.stop([victim], sig=signal.SIGKILL)
        t0 = time.perf_counter()
        cluster.start([victim])
        cluster.wait_ready([victim])
        ready_s = time.perf_counter() - t0
        # `@every` jobs too, at long intervals spread over many slots (no slot fills, none fires).
        # (A team holds at most a million jobs by default: the 1M row loads no more.)
        every = [{"id": f"se-{i:06d}", "schedule": f"@every {3_600 + i % 2_000}s",
                  "webhook": {"url": "http://127.0.0.1:9/never"}} for i in range(min(20_000, 1_000_000 - jobs))]
        every_rate = await bulk_load(cluster.followers()[1].url, every) if every else None
        return {"jobs": jobs, "bulk_jobs_per_s": round(rate), "bulk_every_jobs": len(every),
                "bulk_every_jobs_per_s": round(every_rate) if every_rate else None,
                "rss_mb_before": before, "rss_mb_after": after,
                "rss_mb_restarted": rss_mb(victim.pid),
                "snapshot_kib": snapshot_kib, "data_dir_kib": data_kib, "restart_ready_s": round(ready_s, 2)}


def _written_after(path: Path, at: float) -> bool:
    return path.exists() and path.stat().st_mtime > at


async def failover(work: Path, jobs: int, window_s: int = 20) -> dict[str, Any]:
    """`jobs` jobs @every 1s; the leader is SIGKILLed 40% into a window of `window_s`."""
    with fresh(work, "failover") as (cluster, receiver, ledger):
        await bulk_load(cluster.followers()[0].url, every_second_jobs("f", jobs, receiver.url))
        await asyncio.sleep(3.0)
        start = (now_ms() // 1000 + 1) * 1000
        await sleep_until(start + window_s * 400)
        leader = cluster.leader()
        killed_ms = now_ms()
        cluster.stop([leader], sig=signal.SIGKILL)
        await sleep_until(start + window_s * 1000)
        new_leader = cluster.leader()
        await asyncio.sleep(STRAGGLER_S)
        rows = deliveries_between(ledger.read_new(), "f-", start, start + window_s * 1000)
        around = [r for r in rows if killed_ms - 1_000 <= scheduled_ms(r["fire_id"]) <= killed_ms + 5_000]
        arrivals = sorted(r["arrival_ms"] for r in rows if start + 2_000 <= r["arrival_ms"] <= start + window_s * 900)
        gap = max((b - a for a, b in itertools.pairwise(arrivals)), default=None)
        return {"jobs": jobs, "killed": leader.node_id, "new_leader": new_leader.node_id,
                "all": delivery_figures(rows, jobs * window_s), "around_kill": delivery_figures(around, len(around)),
                "longest_silence_ms": gap,
                "series": [[scheduled_ms(r["fire_id"]) - killed_ms, r["arrival_ms"] - scheduled_ms(r["fire_id"])]
                           for r in rows]}
