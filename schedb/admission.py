"""The leader's admission control: no executor is handed more fires than it can finish.

Without it, a cluster asked for more fires than its machines can deliver collapses rather than
sheds: every fire is assigned (applied on every node), then skipped late (applied again), the
followers' event loops fall behind, their Raft threads starve for the GIL, heartbeats go
missing and leaders are elected one after another (issue 19's overload scenario: 13 elections
and ~230 fires/s delivered for 10,000 `@every 1s` jobs on a machine that delivers 3,000/s).

So the leader caps, per executor, how many fires it holds (assigned, not yet ended, not yet
overdue: those are a backlog, see schedb.fire_queries.plan_batch): its *window*. A job whose
next occurrence finds no executor with room stays in its slot. Handed out later but within
the misfire grace, it fires late; past it, the state machine's catch-up records what was
missed (`missed`, in the job's history and schedb_cluster_fires_missed) and the job's misfire
policy goes on from there. Nothing is lost or doubled: admission only decides *when* the
leader proposes an occurrence, never what the replicated state does with it.

The window is found from the executor's own pace, measured from the replicated state:
- *overdue*: its fires due more than OVERDUE_AFTER_MS ago that have no outcome yet. A call
  that takes long is overdue without the executor being behind, but it runs in one of its
  `executor.max_inflight` places: only past max_inflight + (OVERDUE_HIGH of them) are some
  surely waiting; and unless they are clearly fewer (WORKED_OFF) than a second before, the
  executor is not keeping up (one working off a backlog by itself is left to it).
- Then (BEHIND_SAMPLES looks in a row) the window becomes what it finished per second over
  the last PACE_S, times WINDOW_S: the fires it is handed are then due about now (the plan
  gives the room to those first), and none waits much longer than WINDOW_S. A skipped fire
  counts as finished and is cheaper than a call, so that pace flatters it: each further cut is
  at most CUT of the window before. A cut waits for the one before to show (the fires handed
  out before it are due over the next lookahead, and a second more).
- Keeping up again (overdue under max_inflight + OVERDUE_LOW of them), the window grows by GROWTH
  per second (GROWTH_NEAR_CUT past NEAR_CUT times the window its last cut set). It is
  lifted once no plan has run out of its room for UNBOUND_S: the fires
  asked of it, not its window, set its pace then.

The state is leader-local and starts empty on every leader (a new leader may overshoot for a
few seconds before it measures again). Which occurrences get the room is the plan's choice
(schedb.fire_queries._new_fires). Time comes in as an argument: this module reads no clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

# A fire this late with no outcome counts as overdue. A loaded executor that keeps up (3,000
# fires/s on the development machine) has its p99 near a second: not below that.
OVERDUE_AFTER_MS = 3_000
# Overdue fires beyond its places in flight that mean an executor is not keeping up: this share
# of its places (256 of the default 512), at least OVERDUE_HIGH_MIN; and that mean it is again.
OVERDUE_HIGH = 0.5
OVERDUE_HIGH_MIN = 32
OVERDUE_LOW = 1 / 16
OVERDUE_LOW_MIN = 4
SAMPLE_S = 1.0  # between two looks at an executor's load
PACE_S = 5.0  # its pace is what it finished over this long
# A first cut needs this many samples in a row behind, and a pace measured over FIRST_PACE_S:
# outcomes stall for a second or so across a leader change, which should not read as an
# executor behind. Not longer: an overload that starts (10,000 jobs created at once) has the
# followers' Raft threads starving within seconds, and each election starts the count again.
BEHIND_SAMPLES = 2
WORKED_OFF = 0.9  # overdue fewer than this share of a second before: it is working them off
FIRST_PACE_S = 2.0
# An executor that drops out of the candidates (a follower behind the log: overload does that)
# keeps its window this long, so that it does not come back to no limit at all.
DEPARTED_KEEP_S = 60.0
UNBOUND_S = 5.0  # a window no plan ran out of for this long is lifted
CUT = 0.7  # a cut after the first keeps at most this much of the window
GROWTH = 1.25  # per second of keeping up
# ... and once past NEAR_CUT times the window of its last cut, where it fell behind before: the
# overdue show a few seconds late, so growing fast there overshoots into the next cut.
GROWTH_NEAR_CUT = 1.05
NEAR_CUT = 1.5
# Never fewer than this many times its places in flight: an executor that seemed to finish
# nothing for a while (its outcomes stalled, or were not measured yet) still gets fires.
WINDOW_MIN_PER_PLACE = 2
# A window holds this long of fires at the executor's pace: what it holds is due about now, so
# a fire it is given waits about this long at most (a lookahead of fires would wait a lookahead).
WINDOW_S = 2.0
SETTLE_S = 1.0  # a cut shows a lookahead and this long after it: cut again no sooner


class Load(NamedTuple):
    """An executor's fires in the replicated state (schedb.fire_queries.load_of)."""

    held: int  # fires it holds: assigned to it, without an outcome
    overdue: int  # those due OVERDUE_AFTER_MS ago or more (counted up to a bound)
    deferred: int = 0  # retries waiting for their backoff (counted up to a bound)


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
    handed: int = 0  # fires committed AssignFires gave it since the last sample
    finished: int = 0  # fires it finished since it was first sampled
    # (when, finished then) of the samples of the last PACE_S, oldest first
    history: deque[tuple[float, int]] = field(default_factory=deque)
    finished_per_s: float = 0.0
    cut_at: float = -math.inf
    cut_to: int = 0  # the window the last cut set
    behind: int = 0  # samples in a row with the executor behind
    overdue: int = 0  # at the last sample
    bound_at: float = -math.inf  # when a plan last ran out of its room (at a sample)
    bound: bool = False  # a plan ran out of its room since the last sample
    departed_at: float | None = None  # when it dropped out of the candidates, if it did

    def restart_measure(self) -> None:
        """Back among the candidates: what it holds changed unseen meanwhile; the window stays."""
        self.sampled_at, self.handed, self.behind, self.departed_at = -math.inf, 0, 0, None
        self.history.clear()


class Admission:
    def __init__(self, lookahead_s: float, max_inflight: int) -> None:
        self._settle_s = lookahead_s + SETTLE_S
        self._high = max_inflight + max(OVERDUE_HIGH_MIN, int(max_inflight * OVERDUE_HIGH))
        self._low = max_inflight + max(OVERDUE_LOW_MIN, int(max_inflight * OVERDUE_LOW))
        self._window_min = WINDOW_MIN_PER_PLACE * max_inflight
        self._paces: dict[str, _Pace] = {}

    def windows(self) -> dict[str, int]:
        """Executor → the most fires it may hold; an executor not listed has no limit."""
        return {node: pace.window for node, pace in self._paces.items() if pace.window is not None}

    def handed(self, counts: dict[str, int]) -> None:
        """The fires a committed AssignFires gave each executor (its result's `given`)."""
        for node, count in counts.items():
            self._pace(node).handed += count

    def observe(self, loads: dict[str, Load], full: frozenset[str], now: float) -> list[WindowChange]:
        """The executors' loads as the last plan read them, and those it gave all their room
        (it had more to give them); returns the windows that changed."""
        changes = self._departures(loads, now)
        for node, load in sorted(loads.items()):
            pace = self._pace(node)
            if pace.departed_at is not None:
                pace.restart_measure()
            pace.bound = pace.bound or node in full
            if now - pace.sampled_at < SAMPLE_S:
                continue
            self._sample(pace, load, now)
            window = self._next_window(pace, load, now)
            if window != pace.window:
                pace.window = window
                changes.append(WindowChange(node, window, load.overdue, round(pace.finished_per_s, 1)))
        return changes

    def _departures(self, loads: dict[str, Load], now: float) -> list[WindowChange]:
        """Note the executors no longer among the candidates; forget those gone long enough."""
        changes = []
        for node, pace in list(self._paces.items()):
            if node in loads:
                continue
            if pace.departed_at is None:
                pace.departed_at = now
            elif now - pace.departed_at >= DEPARTED_KEEP_S:
                del self._paces[node]
                if pace.window is not None:
                    changes.append(WindowChange(node, None, 0, 0.0))
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
        # Behind: many overdue, and not clearly fewer (WORKED_OFF) than at the last look. An
        # executor at its limit that works off a backlog by itself (a slow second, a burst) is
        # left to it.
        behind = load.overdue >= max(self._high, int(WORKED_OFF * pace.overdue))
        pace.behind, pace.overdue = pace.behind + 1 if behind else 0, load.overdue
        if pace.bound:
            pace.bound, pace.bound_at = False, now
        if pace.behind:
            return self._cut(pace, now)
        if pace.window is None or load.overdue >= self._low:
            return pace.window
        if now - pace.bound_at >= UNBOUND_S:
            return None
        growth = GROWTH if pace.window < NEAR_CUT * pace.cut_to else GROWTH_NEAR_CUT
        return int(pace.window * growth) + 1

    def _cut(self, pace: _Pace, now: float) -> int | None:
        """The window of an executor behind: unchanged until the last cut has shown, or (a
        first cut) until it has been behind for a while and its pace is measured."""
        if now - pace.cut_at < self._settle_s:
            return pace.window
        if pace.behind < BEHIND_SAMPLES or now - pace.history[0][0] < FIRST_PACE_S:
            return pace.window  # a first cut, or the first since it came back among the candidates
        pace.cut_at = pace.bound_at = now
        window = int(pace.finished_per_s * WINDOW_S)
        if pace.window is not None:
            window = min(window, int(pace.window * CUT))
        pace.cut_to = max(self._window_min, window)
        return pace.cut_to
