"""How many delivery workers a node runs: a decision from load samples, with no clock or I/O
(schedb.worker_pool takes the samples and starts or retires the processes).

Seed 004's rules: scale on pending work, latency and utilisation, with hysteresis. Pressure is
any one level at or above its scale_up_* setting: calls in flight per worker, the workers' busy
share of a core, the delay from hand-over to the call's start. Calm is every level below a third
of its setting. Between the two nothing changes: the band is the hysteresis that keeps a load
near one level from adding and retiring a worker by turns. Pressure held for scale_up_after_s
adds one worker, calm held for scale_down_after_s retires one (a slow way down: a worker is
cheap to keep and a burst costly to miss), and two changes are at least scale_interval_s apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from schedb.config import ExecutorSection

CALM_SHARE = 1 / 3  # of each scale_up_* level: below it on every level is calm


@dataclass(frozen=True)
class Load:
    """One sample of the workers' load, over the time since the previous one."""

    at_s: float  # the node's monotonic clock
    inflight_per_worker: float
    cpu_share: float  # the busiest worker's share of one core
    lag_ms: float  # mean delay from hand-over to the call's start


class Scaler:
    def __init__(self, settings: ExecutorSection) -> None:
        self._settings = settings
        self._pressure_since: float | None = None
        self._calm_since: float | None = None
        self._changed_at: float | None = None

    def decide(self, workers: int, load: Load) -> int:
        """The number of workers to run from now: `workers`, one more, or one fewer."""
        s = self._settings
        bounded = min(max(workers, s.workers_min), s.workers_max)
        if bounded != workers:
            return self._changed(load.at_s, bounded)
        levels = ((load.inflight_per_worker, s.scale_up_inflight), (load.cpu_share, s.scale_up_cpu),
                  (load.lag_ms, s.scale_up_lag_ms))
        if any(value >= high for value, high in levels):
            self._calm_since = None
            self._pressure_since = _since(self._pressure_since, load.at_s)
            if workers < s.workers_max and self._held(self._pressure_since, s.scale_up_after_s, load.at_s):
                return self._changed(load.at_s, workers + 1)
        elif all(value < high * CALM_SHARE for value, high in levels):
            self._pressure_since = None
            self._calm_since = _since(self._calm_since, load.at_s)
            if workers > s.workers_min and self._held(self._calm_since, s.scale_down_after_s, load.at_s):
                return self._changed(load.at_s, workers - 1)
        else:
            self._pressure_since = self._calm_since = None
        return workers

    def _held(self, since: float | None, for_s: float, now_s: float) -> bool:
        apart = self._changed_at is None or now_s - self._changed_at >= self._settings.scale_interval_s
        return since is not None and now_s - since >= for_s and apart

    def _changed(self, now_s: float, workers: int) -> int:
        """A change restarts both clocks: the next one needs a whole period of its own."""
        self._changed_at = now_s
        self._pressure_since = self._calm_since = None
        return workers


def _since(since: float | None, now_s: float) -> float:
    return now_s if since is None else since
