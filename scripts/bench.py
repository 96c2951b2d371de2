"""`make bench` (about 20 minutes) and `make bench-quick` (about 2 minutes):
schedb measured against its limits and a peer, in one run on this machine.

Every scenario starts its own three-node cluster and receiver on free ports of
127.0.0.1 and stops them by PID. The same run measures two references, so the
figures can be read as ratios on a noisy machine: the raw limit (aiohttp POSTing
to the same receiver as fast as it can) and APScheduler 3.x firing the same
workload from one process. Results: bench-results/<time>.md, .json and PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The repository root (devkit: the cluster, receiver and process helpers, not shipped in the
# wheel) and this directory (benchkit), whatever the current directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import breaker, overload, references, report, scenarios, spread, workers

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plan:
    sustained_jobs: tuple[int, ...]
    sustained_s: int
    apscheduler_jobs: tuple[int, ...]
    burst_jobs: int
    api_creates: int
    scale_jobs: int
    scale_big_jobs: int  # the million-job row (0: none)
    failover_jobs: int
    failover_s: int
    overload_jobs: int
    overload_s: int
    spread_rates: tuple[int, ...]
    spread_s: int
    raw_s: float
    breaker_jobs: int = 200
    breaker_down_s: float = 30.0
    workers_jobs: int = 3000
    workers_s: int = 20


FULL = Plan(sustained_jobs=(200, 1000, 2000, 3000, 5000), sustained_s=30, apscheduler_jobs=(200, 1000, 3000),
            burst_jobs=10_000, api_creates=5_000, scale_jobs=100_000, scale_big_jobs=1_000_000, failover_jobs=1000,
            failover_s=20, overload_jobs=10_000, overload_s=60, spread_rates=(1000, 3000, 5000), spread_s=15,
            raw_s=10.0)
QUICK = Plan(sustained_jobs=(200, 1000), sustained_s=6, apscheduler_jobs=(1000,), burst_jobs=2_000,
             api_creates=1_000, scale_jobs=10_000, scale_big_jobs=0, failover_jobs=300, failover_s=12,
             overload_jobs=4_000, overload_s=15, spread_rates=(1000,), spread_s=5, raw_s=5.0, breaker_jobs=50,
             breaker_down_s=10.0, workers_jobs=1000, workers_s=6)
CONCURRENCY = 64


async def run(plan: Plan, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"plan": plan.__dict__, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    steps: list[tuple[str, Any]] = [
        ("raw_limit", lambda: references.raw_limit(work, plan.raw_s, CONCURRENCY)),
        ("sustained", lambda: _each(plan.sustained_jobs, lambda n: scenarios.sustained(work, n, plan.sustained_s))),
        ("apscheduler_every", lambda: _each(plan.apscheduler_jobs,
                                            lambda n: references.apscheduler(work, n, plan.sustained_s))),
        ("spread", lambda: _each(plan.spread_rates, lambda n: spread.spread(work, n, plan.spread_s))),
        ("burst", lambda: scenarios.burst(work, plan.burst_jobs)),
        ("apscheduler_burst", lambda: references.apscheduler(work, plan.burst_jobs, 0, mode="burst")),
        ("api", lambda: scenarios.api(work, plan.api_creates)),
        ("scale", lambda: scenarios.scale(work, plan.scale_jobs)),
        *([("scale_big", lambda: scenarios.scale(work, plan.scale_big_jobs))] if plan.scale_big_jobs else []),
        ("failover", lambda: scenarios.failover(work, plan.failover_jobs, plan.failover_s)),
        ("overload", lambda: overload.overload(work, plan.overload_jobs, plan.overload_s, _best_sustained(results))),
        ("breaker", lambda: breaker.outage(work, plan.breaker_jobs, plan.breaker_down_s)),
        ("workers", lambda: workers.workers(work, plan.workers_jobs, plan.workers_s)),
    ]
    for name, step in steps:
        t0 = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            results[name] = await step()
        except Exception as exc:  # one broken scenario must not cost the others' figures
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
        brief = {k: v for k, v in results[name].items() if k != "series"} if isinstance(results[name], dict) \
            else results[name]
        print(f"   {json.dumps(brief)[:600]}  ({time.monotonic() - t0:.0f} s)", flush=True)
    return results


def _best_sustained(results: dict[str, Any]) -> float | None:
    """The highest delivered rate of the sustained runs with none missing (overload's reference)."""
    runs = results.get("sustained")
    rates = [s["fires_per_s"] for s in runs if s.get("lost") == 0] if isinstance(runs, list) else []
    return max(rates, default=None)


async def _each(values: tuple[int, ...], step: Any) -> list[dict[str, Any]]:
    return [await step(v) for v in values]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the one-minute version")
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="schedb-bench-"))
    try:
        results = asyncio.run(run(QUICK if args.quick else FULL, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    table = report.markdown(results)
    (out / f"{stamp}.json").write_text(json.dumps(results, indent=1))
    (out / f"{stamp}.md").write_text(f"# schedb bench {stamp}\n\n{table}")
    pictures = report.plots(results, out, stamp)
    print("\n" + table)
    print(f"results: {out / stamp}.md, .json; plots: {', '.join(p.name for p in pictures) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
