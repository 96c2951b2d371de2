"""The leader's dispatcher: hands due fires to executors, ahead of time.

Every `dispatch_interval_s` the leader reads the jobs whose next fire falls
within the lookahead window, picks an executor for each by rendezvous hashing
of the job id over the live followers, and proposes one AssignFires command for
the batch. Fires reach executors only through the committed log, so a stale
leader cannot hand out anything: its proposal never commits, and an item that
no longer matches the state (already assigned, job changed) is a no-op on apply.

Why ahead of time: when the leader dies, the next `lookahead_s` of fires already
sit on the followers, which keep firing on time through the election.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import structlog

from schedb.commands import AssignFires
from schedb.config import Config
from schedb.raft import Replica, SubmitError

log = structlog.get_logger("schedb.dispatcher")
# A follower whose log lags further behind than this is not given new fires.
FOLLOWER_LAG_MAX = 1_000
ASSIGN_BATCH_MAX = 2_000


def rendezvous_pick(job_id: str, candidates: list[str]) -> str:
    """The candidate with the highest hash of (candidate, job): stable as members come and go."""
    assert candidates, "rendezvous_pick needs at least one candidate"

    def score(node_id: str) -> bytes:
        return hashlib.blake2b(f"{node_id}\x00{job_id}".encode(), digest_size=8).digest()

    return max(candidates, key=score)


class Dispatcher:
    def __init__(self, config: Config, replica: Replica) -> None:
        self._config = config
        self._replica = replica
        self._lookahead_ms = int(config.scheduler.lookahead_s * 1000)
        self._was_leader = False

    async def run(self) -> None:
        interval_s = self._config.scheduler.dispatch_interval_s
        while True:
            await asyncio.sleep(interval_s)
            leader = self._replica.is_leader()
            if leader != self._was_leader:
                log.info("leadership_changed", leader=leader)
                self._was_leader = leader
            if not leader:
                continue
            try:
                # Keep going while a full batch came back: catch up quickly after a failover.
                while await self.dispatch_once() >= ASSIGN_BATCH_MAX:
                    pass
            except SubmitError as exc:
                log.warning("assign_not_committed", reason=exc.reason)

    def executors(self) -> list[str]:
        """Node ids that may execute fires now: live followers, or this node when it has no peers."""
        config = self._config
        if not config.raft.peers:
            return [config.node.id]
        live = set(self._replica.live_followers(config.scheduler.follower_alive_s, FOLLOWER_LAG_MAX))
        nodes = self._replica.read(lambda s: dict(s.nodes))
        return sorted(node_id for node_id, node in nodes.items()
                      if node["raft_addr"] in live and node_id != config.node.id)

    async def dispatch_once(self) -> int:
        """Assign what is due within the window; returns how many fires were created."""
        now_ms = int(time.time() * 1000)
        candidates = self.executors()
        if not candidates:
            return 0
        due = self._replica.read(lambda s: s.due_jobs(now_ms + self._lookahead_ms, ASSIGN_BATCH_MAX))
        if not due:
            return 0
        items = [[job_id, scheduled_ms, rendezvous_pick(job_id, candidates)] for job_id, scheduled_ms in due]
        result = await self._replica.submit(AssignFires(now_ms, items))
        assigned = int(result.get("assigned", 0))
        log.debug("fires_assigned", proposed=len(items), assigned=assigned)
        return assigned
