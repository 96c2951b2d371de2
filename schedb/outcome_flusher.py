"""An executor's outcomes → the log: reported outcomes are batched (`executor.outcome_batch_s`,
at most `outcome_batch_max`) into one CompleteFires, and submitted again until it commits.
An outcome waits in the executor's local fires table (phase `reported`) until then."""

from __future__ import annotations

import asyncio

import structlog

from schedb.clock import wall_ms
from schedb.commands import CompleteFires
from schedb.config import Config
from schedb.fsm.model import ExecutionStatus
from schedb.local_fires import LocalFires, Phase
from schedb.raft import Replica, SubmitError

log = structlog.get_logger("schedb.executor")
COMPLETE_TIMEOUT_S = 2.0
RETRY_DELAY_S_MAX = 1.0


class OutcomeFlusher:
    def __init__(self, config: Config, replica: Replica, fires: LocalFires) -> None:
        self._config = config
        self._replica = replica
        self._fires = fires
        self.ready = asyncio.Event()  # set when an outcome was reported

    async def run(self) -> None:
        batch_s = self._config.executor.outcome_batch_s
        retry_s = batch_s
        while True:
            await self.ready.wait()
            await asyncio.sleep(batch_s)
            self.ready.clear()
            if await self._flush_once():
                retry_s = batch_s
                continue
            self.ready.set()  # keep trying: outcomes wait here until they commit
            await asyncio.sleep(retry_s)
            retry_s = min(RETRY_DELAY_S_MAX, retry_s * 2)

    async def _flush_once(self) -> bool:
        batch = self._fires.outcomes(self._config.executor.outcome_batch_max)
        if not batch:
            return True
        rows = [outcome.to_list() for _, outcome in batch]
        try:
            await self._replica.submit(CompleteFires(wall_ms(), self._config.node.id, rows), COMPLETE_TIMEOUT_S)
        except SubmitError as exc:
            log.warning("outcomes_not_committed", count=len(rows), reason=exc.reason)
            return False
        self._fires.committed(key for key, _ in batch)
        succeeded = sum(1 for _, outcome in batch if outcome.status == ExecutionStatus.SUCCEEDED)
        log.info("outcomes_committed", count=len(rows), succeeded=succeeded, other=len(rows) - succeeded)
        if self._fires.count(Phase.REPORTED):
            self.ready.set()
        return True
