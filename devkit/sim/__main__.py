"""Run the simulator: `python -m devkit.sim` (make sim).

    make sim                      seeds for about a minute, on every core; prints each failure
    make sim SEED=1234            one seed again, with its whole trace, node by node
    python -m devkit.sim --first 0 --count 1000 --workers 2      a fixed set of seeds

A failure prints its seed and the invariant that broke; `make sim SEED=<seed>` replays it
exactly (the same seed gives the same trace, byte for byte: docs/simulation.md).
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator

from devkit.sim.run import Options, Result, run_seed

PROGRESS_EVERY = 100  # seeds between two progress lines of a campaign


def main() -> int:
    args = _parse()
    _same_hashes_every_run(args)
    options = Options(minutes=args.minutes, members=args.members)
    if args.seed is not None:
        return _replay(args.seed, options, args.trace)
    first = args.first if args.first is not None else int(time.time()) * 1000 % 1_000_000_000
    return _campaign(first, args.count, args.seconds, args.workers, options)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devkit.sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, help="replay this seed and print its trace")
    parser.add_argument("--trace", help="with --seed: write the trace to this file instead of stdout")
    parser.add_argument("--first", type=int, help="the first seed of a campaign (default: from the clock)")
    parser.add_argument("--count", type=int, help="run exactly this many seeds (default: as many as --seconds allow)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long a campaign runs (default 60)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: every core)")
    parser.add_argument("--minutes", type=float, default=10.0, help="simulated minutes per seed (default 10)")
    parser.add_argument("--members", type=int, default=3, choices=(3, 5))
    return parser.parse_args()


def _same_hashes_every_run(args: argparse.Namespace) -> None:
    """Set iteration order follows str hashes: a run is deterministic only with a fixed hash seed."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "devkit.sim", *sys.argv[1:]])


def _replay(seed: int, options: Options, trace_path: str | None) -> int:
    options.full_trace = True
    result = run_seed(seed, options)
    if trace_path:
        with open(trace_path, "w", encoding="utf-8") as out:
            out.write(result.trace + "\n")
    else:
        print(result.trace)
    print(_summary(result))
    return 0 if result.ok else 1


def _summary(result: Result) -> str:
    verdict = "ok" if result.ok else f"FAIL {result.violation}"
    faults = ", ".join(f"{name} {count}" for name, count in sorted(result.faults.items()))
    return (f"seed {result.seed}: {verdict} ({result.simulated_s:.0f} simulated s in {result.wall_s:.2f} s, "
            f"{result.commands} commands, {result.calls} webhook calls; faults: {faults or 'none'})")


def _campaign(first: int, count: int | None, seconds: float, workers: int, options: Options) -> int:
    print(f"seeds from {first}, {workers} workers, {options.minutes:g} simulated minutes each", flush=True)
    started = time.perf_counter()
    done, failed = 0, Counter[str]()
    seeds = _seeds(first, count, started, seconds)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        running = [pool.apply_async(_run_quietly, (seed, options)) for seed in itertools.islice(seeds, workers * 2)]
        while running:
            finished = [job for job in running if job.ready()]
            if not finished:
                time.sleep(0.05)  # whichever seed ends first is reported first: a slow one blocks nothing
                continue
            running.remove(finished[0])
            result = finished[0].get()
            running += [pool.apply_async(_run_quietly, (seed, options)) for seed in itertools.islice(seeds, 1)]
            done += 1
            if not result.ok:
                failed[result.invariant or "?"] += 1
                extra = f' ARGS="--members {options.members}"' if options.members != 3 else ""
                print(f"seed {result.seed}: FAIL {result.violation}  (replay: make sim SEED={result.seed}{extra})",
                      flush=True)
            if done % PROGRESS_EVERY == 0:
                print(_tally(done, failed, started), flush=True)
    print(_tally(done, failed, started) + (f" ({', '.join(f'{k} {v}' for k, v in sorted(failed.items()))})"
                                           if failed else ""))
    return 1 if failed else 0


def _tally(done: int, failed: Counter[str], started: float) -> str:
    elapsed = time.perf_counter() - started
    return (f"{done} seeds in {elapsed:.1f} s: {done / elapsed:.2f} seeds/s ({done * 60 / elapsed:.0f} a minute); "
            f"{sum(failed.values())} failed")


def _seeds(first: int, count: int | None, started: float, seconds: float) -> Iterator[int]:
    """Seeds until the count, or until the time is up (seeds in flight then finish)."""
    seed = first
    while (count is None and time.perf_counter() - started < seconds) or (count is not None and seed < first + count):
        yield seed
        seed += 1


def _run_quietly(seed: int, options: Options) -> Result:
    result = run_seed(seed, options)
    result.trace = ""  # the trace is for a replay; a campaign reports the seed
    return result


if __name__ == "__main__":
    sys.exit(main())
