"""The single-process reference: APScheduler 3.x (AsyncIOScheduler, memory job store,
default job settings) firing N jobs with aiohttp, as a Python user would write it.

    apscheduler_ref.py --url URL --jobs N --start-ms T0 --end-ms T1 --mode every|burst --out FILE [--linger-s S]

`every`: each job every second from T0 until T1; `burst`: each job once at T0. A job
sends the same headers as schedb's executor, so the receiver's ledger is read the same
way. APScheduler 3 does not pass the scheduled time to a job: an `every` job takes the
whole second it runs in (right while it is less than a second late; APScheduler drops
fires later than its default misfire grace of 1 s anyway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psutil
from apscheduler.schedulers.asyncio import AsyncIOScheduler

MAX_INFLIGHT = 512  # schedb's executor.max_inflight, per node


def rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


async def run(args: argparse.Namespace) -> dict[str, float]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_INFLIGHT))
    scheduler = AsyncIOScheduler(timezone=UTC)

    async def fire(job_id: str) -> None:
        scheduled = args.start_ms if args.mode == "burst" else int(time.time()) * 1000
        headers = {"X-Schedb-Fire-Id": f"{job_id}:{scheduled}", "X-Schedb-Job-Id": job_id,
                   "X-Schedb-Attempt": "1", "X-Schedb-Node": "apscheduler"}
        async with session.post(args.url, json={"job_id": job_id}, headers=headers) as resp:
            await resp.read()

    start = datetime.fromtimestamp(args.start_ms / 1000, UTC)
    end = datetime.fromtimestamp((args.end_ms - 1) / 1000, UTC)
    before = rss_mb()
    for i in range(args.jobs):
        job_id = f"aps-{i:06d}"
        if args.mode == "burst":
            scheduler.add_job(fire, "date", run_date=start, args=[job_id], id=job_id)
        else:
            scheduler.add_job(fire, "interval", seconds=1, start_date=start, end_date=end, args=[job_id], id=job_id)
    scheduler.start()
    with_jobs = rss_mb()
    await asyncio.sleep(max(0.0, args.end_ms / 1000 - time.time()) + args.linger_s)
    scheduler.shutdown(wait=False)
    await session.close()
    return {"aps_rss_mb_before": before, "aps_rss_mb_with_jobs": with_jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--start-ms", type=int, required=True)
    parser.add_argument("--end-ms", type=int, required=True)
    parser.add_argument("--mode", choices=["every", "burst"], default="every")
    parser.add_argument("--out", required=True)
    parser.add_argument("--linger-s", type=float, default=2.0, help="how long to stay up after the last fire")
    args = parser.parse_args()
    Path(args.out).write_text(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
