"""The leader's admission control: no executor is handed more fires than it can finish.

Without it, a cluster asked for more fires than its machines can deliver collapses rather than
sheds: every fire is assigned (applied on every node), then skipped late (applied again), the
followers' event loops fall behind, their Raft threads starve for the GIL, heartbeats go
missing and leaders are elected one after another (issue 19's overload scenario: 13 elections
and ~230 fires/s delivered for 10,000 `@every 1s` jobs on a machine that delivers 3,000/s).

So the leader caps, per executor, how many fires it holds (assigned, not yet ended): its
*window*. A job whose next occurrence finds no executor with room stays in its slot. Handed
out later but within the misfire grace, it fires late; past it, the state machine's catch-up
records what was missed (`missed`, in the job's history and schedb_cluster_fires_missed) and
the job's misfire policy goes on from there. Nothing is lost or doubled: admission only
decides *when* the leader proposes an occurrence, never what the replicated state does with it.

The window is found from the executor's own pace, measured from the replicated state:
- *overdue*: its fires due more than OVERDUE_AFTER_MS ago that have no outcome yet. A call
  that takes long is overdue without the executor being behind, but it runs in one of its
  `executor.max_inflight` places: only past max_inflight + OVERDUE_HIGH overdue fires are some
  surely waiting, and the executor is not keeping up.
- Then the window becomes what it finished per second over the last PACE_S, times the
  lookahead and a second of slack: a lookahead of fires at the pace it keeps. A skipped fire
  counts as finished and is cheaper than a call, so that pace flatters it: each further cut is
  at most CUT of the window before. A cut waits for the one before to show (the fires handed
  out before it are due over the next lookahead).
- Keeping up again (overdue under max_inflight + OVERDUE_LOW), the window grows by GROWTH
  per second. It is lifted once the executor has held less than UNBOUND of it for UNBOUND_S:
  the fires asked of it, not its window, set its pace then.

The state is leader-local and starts empty on every leader (a new leader may overshoot for a
lookahead before it measures again). Time comes in as an argument: this module reads no clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

OVERDUE_AFTER_MS = 1_000  # a fire this late with no outcome counts as overdue
OVERDUE_HIGH = 256  # overdue fires beyond its places in flight that mean it is not keeping up
OVERDUE_LOW = 32  # ... and that mean it is again
SAMPLE_S = 1.0  # between two looks at an executor's load
PACE_S = 5.0  # its pace is what it finished over this long
# A first cut needs this many samples in a row behind, and a pace measured over PACE_S: outcomes
# stall for a second or two across a leader change, which must not read as an executor behind.
BEHIND_SAMPLES = 3
UNBOUND_S = 5.0  # a window its executor stayed well under (UNBOUND) this long is lifted
UNBOUND = 0.8
CUT = 0.7  # a cut after the first keeps at most this much of the window
GROWTH = 1.1  # per second of keeping up
WINDOW_MIN = 100  # never fewer: an executor that finished nothing for a while still gets fires
SLACK_S = 1.0  # the window covers the lookahead plus this (outcomes take time to commit)


class Load(NamedTuple):
    """An executor's fires in the replicated state (schedb.fire_queries.load_of)."""

    held: int  # fires it holds: assigned to it, without an outcome
    overdue: int  # those due OVERDUE_AFTER_MS ago or more (counted up to a bound)


class WindowChange(NamedTuple):
    executor: str
    window: int | None  # None: lifted
    overdue: int
    finished_per_s: float


@dataclass
class _Pace:
    """What the leader knows of one executor's pace."""

    window: int | None = None
    held: int = 0  # at the last sample
    sampled_at: float = -math.inf
    handed: int = 0  # fires proposed to it since the last sample
    finished: int = 0  # fires it finished since it was first sampled
    # (when, finished then) of the samples of the last PACE_S, oldest first
    history: deque[tuple[float, int]] = field(default_factory=deque)
    finished_per_s: float = 0.0
    cut_at: float = -math.inf
    behind: int = 0  # samples in a row with the executor behind
    bound_at: float = -math.inf  # when it last held UNBOUND of its window or more


class Admission:
    def __init__(self, lookahead_s: float, max_inflight: int) -> None:
        self._settle_s = lookahead_s + SLACK_S
        self._high, self._low = max_inflight + OVERDUE_HIGH, max_inflight + OVERDUE_LOW
        self._paces: dict[str, _Pace] = {}

    def windows(self) -> dict[str, int]:
        """Executor → the most fires it may hold; an executor not listed has no limit."""
        return {node: pace.window for node, pace in self._paces.items() if pace.window is not None}

    def handed(self, counts: dict[str, int]) -> None:
        """The fires a proposed AssignFires gives each executor."""
        for node, count in counts.items():
            self._pace(node).handed += count

    def observe(self, loads: dict[str, Load], now: float) -> list[WindowChange]:
        """The executors' loads as the last plan read them; returns the windows that changed."""
        changes = []
        for node in [n for n in self._paces if n not in loads]:  # no longer an executor
            if self._paces.pop(node).window is not None:  # a returning one is measured afresh
                changes.append(WindowChange(node, None, 0, 0.0))
        for node, load in sorted(loads.items()):
            pace = self._pace(node)
            if now - pace.sampled_at < SAMPLE_S:
                continue
            self._sample(pace, load, now)
            window = self._next_window(pace, load, now)
            if window != pace.window:
                pace.window = window
                changes.append(WindowChange(node, window, load.overdue, round(pace.finished_per_s, 1)))
        return changes

    def _pace(self, node: str) -> _Pace:
        return self._paces.setdefault(node, _Pace())

    @staticmethod
    def _sample(pace: _Pace, load: Load, now: float) -> None:
        """Fires it finished since the last sample: what it held then, plus what it was handed,
        minus what it holds now (a fire moved away counts as finished here: it left)."""
        if math.isfinite(pace.sampled_at):
            pace.finished += max(0, pace.held + pace.handed - load.held)
        pace.held, pace.handed, pace.sampled_at = load.held, 0, now
        pace.history.append((now, pace.finished))
        while len(pace.history) > 2 and now - pace.history[1][0] >= PACE_S:
            pace.history.popleft()  # keeps one sample at least PACE_S old, when there is one
        first_at, finished_then = pace.history[0]
        if now > first_at:
            pace.finished_per_s = (pace.finished - finished_then) / (now - first_at)

    def _next_window(self, pace: _Pace, load: Load, now: float) -> int | None:
        pace.behind = pace.behind + 1 if load.overdue >= self._high else 0
        if pace.window is not None and load.held >= UNBOUND * pace.window:
            pace.bound_at = now
        if pace.behind:
            return self._cut(pace, now)
        if pace.window is None or load.overdue >= self._low:
            return pace.window
        if now - pace.bound_at >= UNBOUND_S:
            return None
        return int(pace.window * GROWTH) + 1

    def _cut(self, pace: _Pace, now: float) -> int | None:
        """The window of an executor behind: unchanged until the last cut has shown, or (a
        first cut) until it has been behind for a while and its pace is measured."""
        if now - pace.cut_at < self._settle_s:
            return pace.window
        if pace.window is None and (pace.behind < BEHIND_SAMPLES or now - pace.history[0][0] < PACE_S):
            return None
        pace.cut_at = pace.bound_at = now
        window = int(pace.finished_per_s * self._settle_s)
        if pace.window is not None:
            window = min(window, int(pace.window * CUT))
        return max(WINDOW_MIN, window)
