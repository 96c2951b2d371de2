"""`make chaos`: faults injected into a real cluster under load, then proof from the receiver's
ledger and the committed history that no fire was lost or doubled.

Starts its own three-node cluster and receiver on free ports (127.0.0.1 only) with their own
data directories, loads a workload (150 jobs `@every 1s` and 50 `*/2 * * * * *`), and runs
each scenario in turn: processes killed, stopped, frozen and restarted, delivery workers
killed mid-call (node1 and node2 deliver through worker processes), pause/resume storms,
network partitions (iptables, as root) and a node whose clock runs an hour ahead (faketime).
After each scenario it waits for the cluster to settle and reconciles the fires scheduled
during it (chaoskit.ledger): lost, doubled, doubled-committed, late and early fires.

    scripts/chaos.py                      # every scenario (about 6 minutes)
    scripts/chaos.py --scenario freeze    # one (repeat --scenario for several); --list names them
    make chaos ARGS="--scenario partition --scenario skew"

Exits 1 when anything was lost (or recorded as missed while a connected majority kept
working), a committed outcome was doubled, something committed without a quorum, or a fault
could not be seen to take effect. Doubled deliveries and late fires are reported, not
failed. Writes chaos-results/chaos.json and chaos-results/chaos.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The repository root (devkit: the cluster, receiver and process helpers, not shipped in the
# wheel) and this directory (chaoskit), whatever the current directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaoskit import clock, ledger, network, process, storm
from chaoskit.common import Ctx, FaultNotApplied, Measured, now_ms

from devkit import firewall
from devkit.harness import Cluster, Receiver

SETTLE_S = 8.0
CHAOS_CONFIG = "\n[scheduler]\nhistory_per_job = 500\n"
# node1 and node2 deliver through worker processes (schedb.worker_pool), node3 from its own loop:
# every scenario covers both ways, and worker-kill has workers to kill whoever leads.
WORKERS_CONFIG = "\n[executor]\nworkers_min = 1\nworkers_max = 2\n"

Scenario = Callable[[Ctx], Measured]
# (name for --scenario, title in the report, scenario); the skewed clock goes last: before the
# fix, it moved replicated time an hour ahead for every later scenario.
SCENARIOS: list[tuple[str, str, Scenario]] = [
    ("baseline", "no faults", process.baseline),
    ("leader-kill", "leader SIGKILL, repeated", process.leader_kills),
    ("follower-kill", "follower SIGKILL", process.follower_kill),
    ("no-quorum", "two nodes SIGKILL (no quorum)", process.no_quorum),
    ("leader-stop", "leader SIGSTOP then SIGCONT", process.sigstop_leader),
    ("full-restart", "full-cluster stop and restart", process.full_restart),
    ("rolling-restart", "rolling restart (SIGTERM)", process.rolling_restart),
    ("freeze", "follower frozen 8 s past the fence, twice", process.follower_freezes),
    ("worker-kill", "delivery workers SIGKILL mid-call, six rounds", process.worker_kills),
    ("pause-storm", "pause/resume storm inside the lookahead", storm.pause_resume_storm),
    ("partition", "partition: leader cut off, then a follower", network.partitions),
    ("skew", "one node's clock an hour ahead", clock.skewed_clock),
]


def selected(args: argparse.Namespace) -> list[tuple[str, str, Scenario]]:
    return [s for s in SCENARIOS if (not args.scenario or s[0] in args.scenario)
            and s[0] not in args.skip and args.only in s[1]]


def missing_tools(chosen: list[tuple[str, str, Scenario]]) -> list[str]:
    """What the chosen scenarios need and this machine lacks (said before anything starts)."""
    names = {name for name, _, _ in chosen}
    problems = []
    if "partition" in names and (reason := firewall.unavailable()):
        problems.append(f"partition: {reason}")
    if "skew" in names and not shutil.which("faketime"):
        problems.append("skew: faketime is missing (Debian package faketime)")
    return problems


def run(args: argparse.Namespace, work: Path, chosen: list[tuple[str, str, Scenario]]) -> list[dict[str, Any]]:
    cluster = Cluster(work, extra_config=CHAOS_CONFIG)
    for node in cluster.nodes[:2]:
        node.config.write_text(node.config.read_text() + WORKERS_CONFIG)
    if any(name == "partition" for name, _, _ in chosen):
        for i, node in enumerate(cluster.nodes):  # a group id of its own, for the firewall
            node.prefix = firewall.gid_prefix(i)
    receiver = Receiver(work)
    ctx = Ctx(cluster, receiver, args, work)
    results: list[dict[str, Any]] = []
    try:
        cluster.start()
        cluster.wait_ready()
        ledger.load_workload(ctx)
        time.sleep(3)
        for _, title, scenario in chosen:
            print(f"== {title}", flush=True)
            results.append(run_one(ctx, title, scenario))
            print(json.dumps(results[-1]), flush=True)
    finally:
        try:
            cluster.stop()  # a node under faketime by its own PID (harness)
        finally:
            receiver.stop()
    return results


def run_one(ctx: Ctx, title: str, scenario: Scenario) -> dict[str, Any]:
    start = now_ms()
    try:
        measured = scenario(ctx)
    except FaultNotApplied as exc:
        measured = {"fault_error": str(exc)}
    window = (start, now_ms())
    ctx.cluster.wait_ready()
    time.sleep(SETTLE_S)
    return ledger.reconcile(title, ctx, window, measured)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [name for name, _, _ in SCENARIOS]
    parser.add_argument("--scenario", action="append", default=[], choices=names, metavar="NAME",
                        help="run this scenario (repeatable; default: all): " + ", ".join(names))
    parser.add_argument("--skip", action="append", default=[], choices=names, metavar="NAME",
                        help="leave this scenario out (repeatable)")
    parser.add_argument("--only", default="", help="run only scenarios whose title contains this")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--leader-kills", type=int, default=10)
    parser.add_argument("--out", default="chaos-results")
    parser.add_argument("--keep", default="", help="run in this directory and keep its node logs and data")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.list:
        print("\n".join(f"{name:16} {title}" for name, title, _ in SCENARIOS))
        return 0
    chosen = selected(args)
    if problems := missing_tools(chosen):
        print("cannot run:\n  " + "\n  ".join(problems) + "\n(leave such scenarios out with --skip NAME)")
        return 2
    # SIGTERM unwinds like Ctrl-C: the finally blocks stop the nodes and remove the firewall rules.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.keep:
        Path(args.keep).mkdir(parents=True)
        results = run(args, Path(args.keep), chosen)
    else:
        with tempfile.TemporaryDirectory(prefix="schedb-chaos-") as tmp:
            results = run(args, Path(tmp), chosen)
    return report(results, Path(args.out))


def report(results: list[dict[str, Any]], out: Path) -> int:
    out.mkdir(exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(results, indent=2))
    (out / "chaos.md").write_text(ledger.markdown(results))
    print("\n" + ledger.markdown(results))
    if failed := ledger.failures(results):
        print("FAILED: lost fires (or missed while a majority worked), doubled outcomes, commits without "
              "quorum or a fault not applied in: " + ", ".join(failed))
        return 1
    print("no fire lost, no committed outcome doubled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
