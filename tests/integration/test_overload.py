"""More fires than the executors can deliver (issue 19, overload): the leader's admission
control (schedb.admission) caps what each executor holds, keeps its leadership, and every
occurrence is delivered once or recorded with its reason. Real nodes, a real slow receiver.

The executors are made slow on purpose rather than the machine busy: each holds at most
MAX_INFLIGHT calls, and every call takes HANG_S, so two followers deliver about
2 * MAX_INFLIGHT / HANG_S = 16 fires a second, against JOBS a second asked."""

from __future__ import annotations

import time
from pathlib import Path

from devkit.devcluster import get_json
from devkit.harness import Receiver
from tests.integration.conftest import running_cluster
from tests.integration.test_firing import metrics
from tests.integration.workload import assert_once_each, committed, load_jobs, pause_jobs, scheduled_ms, wait_for

MAX_INFLIGHT = 4
HANG_S = 0.5
JOBS = 60  # `@every 1s`: 60 fires a second
WINDOW_S = 20  # the occurrences checked
SETTLE_S = 15  # after the pause: calls finish, held occurrences are recorded


def now_ms() -> int:
    return int(time.time() * 1000)


def admission_windows(url: str) -> dict[str, float]:
    return {name: value for name, value in metrics(url).items() if name.startswith("schedb_admission_window_fires{")}


def account(url: str, delivered: list[dict], start_ms: int, end_ms: int) -> tuple[list[str], set[tuple[str, str]]]:
    """The occurrences in [start, end) neither delivered nor recorded with a reason, and the
    (status, reason) pairs of those recorded and not delivered."""
    job_ids = [f"ov-{i:02d}" for i in range(JOBS)]
    records = {r["fire_id"]: r for r in committed(url, job_ids)}
    delivered_ids = {d["fire_id"] for d in delivered}
    unaccounted, reasons = [], set()
    for job_id in job_ids:
        for at_ms in range(start_ms, end_ms, 1000):
            fire_id = f"{job_id}:{at_ms}"
            record = records.get(fire_id)
            if fire_id in delivered_ids:
                continue
            if record is None or record["status"] == "succeeded":
                unaccounted.append(fire_id)
            else:
                reasons.add((record["status"], record.get("reason") or record.get("error")))
    return unaccounted, reasons


def test_an_overload_is_shed_with_a_record_of_each_fire_and_no_election(tmp_path: Path) -> None:
    for part in ("receiver", "cluster"):
        (tmp_path / part).mkdir()
    receiver = Receiver(tmp_path / "receiver")
    try:
        with running_cluster(tmp_path / "cluster", f"[executor]\nmax_inflight = {MAX_INFLIGHT}\n") as cluster:
            url = cluster.followers()[0].url
            term = get_json(url + "/api/v1/cluster")[1]["term"]
            load_jobs(receiver, "ov", url, f"?hang={HANG_S}", count=JOBS)
            start_ms = (now_ms() // 1000 + 2) * 1000
            end_ms = start_ms + WINDOW_S * 1000
            windows = wait_for(lambda: admission_windows(cluster.leader().url), WINDOW_S, "an admission window")
            time.sleep(max(0.0, (end_ms - now_ms()) / 1000))
            pause_jobs(url, "ov", count=JOBS)
            time.sleep(SETTLE_S)
            assert get_json(url + "/api/v1/cluster")[1]["term"] == term, "the overload cost a leader election"
            delivered = [d for d in receiver.deliveries() if d["job_id"].startswith("ov-")
                         and start_ms <= scheduled_ms(d) < end_ms]
            assert_once_each(delivered)
            unaccounted, reasons = account(url, delivered, start_ms, end_ms)
            assert unaccounted == [], f"{len(unaccounted)} neither delivered nor recorded: {unaccounted[:5]}"
            # The overload was real: far fewer delivered than asked, the rest recorded missed.
            assert len(delivered) < JOBS * WINDOW_S // 2, windows
            assert ("missed", "missed") in reasons, reasons
    finally:
        receiver.stop()
