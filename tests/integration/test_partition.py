"""A follower cut off from the cluster by a network partition (iptables, as root): the promise
"no failure loses or doubles a fire" (issue 16). Unlike a frozen node, a cut-off follower
keeps running: it delivers the fires it holds until its fence closes, and none of those
outcomes can commit. The leader must move only what the follower cannot have started, and
leave the rest to the follower's outcomes when it is back. Real nodes, real HTTP, real
iptables rules on the loopback (devkit.firewall says how), the real receiver."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit import firewall
from devkit.harness import Cluster, Receiver
from tests.integration.test_promise import all_fires_ended, assert_nothing_committed_twice, now_ms
from tests.integration.workload import committed, load_jobs, pause_jobs, wait_for

JOBS = 20
CUT_S = 8.0  # past the fence (3 s) and the re-assignment (5 s); within the misfire grace (10 s)
CUTS = 2

WHY_NOT = firewall.unavailable()
if os.environ.get("CI") and os.geteuid() == 0 and WHY_NOT:
    raise RuntimeError(f"CI runs as root and must cut the network: {WHY_NOT}")
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=f"a partition needs iptables as root: {WHY_NOT}")


@pytest.fixture
def walled_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, firewall.Firewall]]:
    """Three nodes, each under its own group id (for the firewall), stopped by PID afterwards;
    the firewall's chain is removed even on failure."""
    cluster = Cluster(tmp_path)
    for i, node in enumerate(cluster.nodes):
        node.prefix = firewall.gid_prefix(i)
    wall = firewall.Firewall(cluster)
    try:
        wall.install()
        cluster.start()
        cluster.wait_ready()
        yield cluster, wall
    finally:
        wall.remove()
        cluster.stop()


def test_a_follower_cut_off_delivers_what_it_holds_once_and_the_leader_moves_only_the_rest(
        walled_cluster: tuple[Cluster, firewall.Firewall], receiver: Receiver) -> None:
    cluster, wall = walled_cluster
    leader = cluster.leader()
    load_jobs(receiver, "pt", leader.url, count=JOBS)
    job_ids = [f"pt-{i:02d}" for i in range(JOBS)]
    first_ms = (now_ms() // 1000 + 1) * 1000
    time.sleep(3.0)
    dropped = 0
    for _ in range(CUTS):
        victim = cluster.followers()[0]
        wall.isolate(victim, [n for n in cluster.nodes if n is not victim])
        time.sleep(CUT_S)
        dropped += wall.heal()
        time.sleep(6.0)  # it catches up, reports what it delivered, and fires again
    assert dropped > 0, "the firewall dropped nothing: the partition did not happen"
    pause_jobs(cluster.leader().url, "pt", count=JOBS)
    last_ms = now_ms() - 1000  # later fires may have been withdrawn by the pause
    with contextlib.suppress(AssertionError):
        wait_for(lambda: all_fires_ended(cluster), 30, "every fire to end on every node")

    deliveries = [d for d in receiver.deliveries() if d["job_id"] in job_ids]
    twice = sorted(f for f, n in Counter(d["fire_id"] for d in deliveries).items() if n > 1)
    assert twice == [], f"{len(twice)} fires delivered twice, e.g. {twice[:5]}"
    assert_nothing_committed_twice(cluster, job_ids)
    delivered = {d["fire_id"] for d in deliveries}
    expected = {f"{job_id}:{ms}" for job_id in job_ids for ms in range(first_ms, last_ms + 1, 1000)}
    missing = expected - delivered
    rows = [r for node in cluster.nodes for r in committed(node.url, job_ids)]
    statuses = Counter(r["status"] for r in rows if r["fire_id"] in missing)
    assert not missing, (f"{len(missing)} fires never delivered (committed as {dict(statuses)}), "
                         f"e.g. {sorted(missing)[:5]}")
