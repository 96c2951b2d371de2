"""A circuit breaker per team and webhook target (scheme, host and port), on each node.

A receiver that is down costs every fire aimed at it a place in the node's in-flight limit and
the team's quota for as long as its call takes to fail (a timeout: seconds). After enough
failures in a row, or too large a share of the calls over a window, the target's circuit opens:
its fires are not called, and each is reported at once as a failed attempt whose error starts
with `circuit_open`, with the time left of the cool-down as its Retry-After. The job's retry
policy then schedules the next attempt after the cool-down (capped by its backoff_max_s), and
one whose attempts run out is a dead letter with that reason: no fire is lost, and each one not
delivered says why. Once the cool-down is over the circuit is half-open: one call at a time goes
through as a probe; its success closes the circuit, its failure opens it for another cool-down.

Why per node and not replicated: what a node sees of a target is its own network path (one
node's route may fail while another's works), a replicated breaker would cost a log entry per
change on every node, and the verdict it would share is minutes old by the time it matters.
Each executor learns on its own in a few calls.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any
from urllib.parse import urlsplit

import structlog

from schedb.clock import monotonic, wall_ms
from schedb.commands import Outcome
from schedb.config import BreakerSection
from schedb.metrics import NodeMetrics
from schedb.webhook import WORKER_ERROR, WORKER_LATE, WORKER_LOST

log = structlog.get_logger("schedb.breaker")
CIRCUITS_MAX = 2_000  # circuits remembered; the longest-unused closed ones go first
IDLE_S = 3_600.0  # a circuit unused this long is forgotten, open or not
PROBE_SLACK_S = 1.0  # a fire refused while the probe is out is tried again this long after it ends
OPEN = "circuit_open"  # the reason, first in the error text of a refused attempt
# In an attempt's error when the egress policy refused it (schedb.egress.EgressRefused), also when
# the resolver refused a name (aiohttp wraps it): the target was never reached.
EGRESS_REFUSED = "refused by the egress policy"


class State(IntEnum):
    """The values of schedb_circuit_state{team,target,settings}."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


Override = tuple[tuple[str, Any], ...]  # a job's own settings (spec["breaker"]), as a key


@dataclass
class Circuit:
    team: str
    target: str
    settings: BreakerSection
    override: Override = ()  # the jobs' own settings it is for; (): the node's
    state: State = State.CLOSED
    failures_in_a_row: int = 0
    calls: deque[tuple[float, bool]] = field(default_factory=deque)  # (monotonic, failed) within the window
    open_until: float = 0.0
    probing: bool = False
    probe_ends: float = 0.0  # monotonic: the probe's timeout
    opened: int = 0  # times it opened
    used_at: float = 0.0  # monotonic: its last call

    @property
    def settings_label(self) -> str:
        """The settings of the jobs it is for (the metric's `settings` label; "" for the node's)."""
        return ",".join(f"{k}={v}" for k, v in self.override)


def target_of(url: str) -> str:
    """scheme://host:port of a webhook URL (the port made explicit, an IPv6 host in brackets)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{port}"


# Answers that say the target itself is down or overloaded, rather than that this request
# failed: a 500 is one endpoint's error, and must not stop the calls to the target's others.
TARGET_DOWN_STATUSES = frozenset({429, 502, 503, 504})


def target_failed(outcome: Outcome) -> bool | None:
    """Does the outcome say the target is in trouble: no answer in time (a refused connection, a
    timeout, headers and then silence), or 429, 502, 503, 504? Other answers come from a target
    that is up. None: it says nothing of the target, which the call never reached or whose
    answer never came back: the egress policy refused it, or a delivery worker did not see it
    through. Judged by the text schedb itself wrote first, never by what a receiver sent."""
    error = outcome.error
    if outcome.status == "timed_out":
        return True
    if outcome.http_status:
        return outcome.http_status in TARGET_DOWN_STATUSES
    refused = error.startswith(EGRESS_REFUSED) or (error.startswith("ClientConnectorError") and EGRESS_REFUSED in error)
    if refused or error.startswith((WORKER_LOST, WORKER_LATE, WORKER_ERROR)):
        return None
    return outcome.status == "failed"


class Breakers:
    def __init__(self, settings: BreakerSection, metrics: NodeMetrics | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        # by (team, target, the jobs' own settings)
        self._circuits: OrderedDict[tuple[str, str, Override], Circuit] = OrderedDict()
        self.call_slack_s = 0.0  # how much later than its timeout a call may end (delivery workers)

    async def call(self, team: str, fire: dict[str, Any], spec: dict[str, Any],
                   send: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """send() behind the circuit of the team's webhook target: a team's failing endpoint
        never stops another team's calls to the same host. A job with settings of its own
        (spec["breaker"]) has a circuit of its own for them, shared with the jobs of the same
        settings: thresholds are a circuit's, not a call's."""
        override: Override = tuple((spec.get("breaker") or {}).items())
        settings = replace(self._settings, **dict(override)) if override else self._settings
        if not settings.enabled:
            return await send()
        circuit = self._circuit(team, target_of(spec["webhook"]["url"]), override, settings)
        wait_s, probe = self._admit(circuit, spec["webhook"]["timeout_s"])
        if wait_s:
            return _refused(fire, circuit, wait_s)
        try:
            outcome = await send()
        except BaseException:
            if probe:
                circuit.probing = False  # cancelled mid-call: the next fire probes
            raise
        self._record(circuit, target_failed(outcome), probe)
        return outcome

    def circuits(self) -> list[dict[str, Any]]:
        """Every circuit that is not closed, or failed lately (/api/v1/cluster's `circuits`)."""
        now = monotonic()
        return [{"team": c.team, "target": c.target, "override": dict(c.override) or None,
                 "state": c.state.name.lower(),
                 "failures_in_a_row": c.failures_in_a_row,
                 "open_for_s": round(max(0.0, c.open_until - now), 1) if c.state == State.OPEN else 0.0,
                 "opened": c.opened}
                for c in self._circuits.values() if c.state != State.CLOSED or c.failures_in_a_row]

    # -- the circuit's states -----------------------------------------------------------

    def _circuit(self, team: str, target: str, override: Override, settings: BreakerSection) -> Circuit:
        key = (team, target, override)
        circuit = self._circuits.get(key)
        if circuit is None:
            self._evict()
            circuit = self._circuits[key] = Circuit(team, target, settings, override)
        else:
            self._circuits.move_to_end(key)
        circuit.used_at = monotonic()
        return circuit

    def _evict(self) -> None:
        """Room for one more: the longest-unused circuits go, closed ones first, and any unused
        for IDLE_S whatever its state (a job's settings edited while its circuit was open); past
        the bound, open ones too: a target forgotten is called again, and trips again."""
        now = monotonic()
        while self._circuits and now - next(iter(self._circuits.values())).used_at > IDLE_S:
            self._forget(next(iter(self._circuits)))
        while len(self._circuits) >= CIRCUITS_MAX:
            closed = next((k for k, c in self._circuits.items() if c.state == State.CLOSED), None)
            self._forget(closed if closed is not None else next(iter(self._circuits)))

    def _forget(self, key: tuple[str, str, Override]) -> None:
        gone = self._circuits.pop(key)
        if self._metrics is not None:
            self._metrics.forget_circuit(gone.team, gone.target, gone.settings_label)

    def _admit(self, circuit: Circuit, timeout_s: float) -> tuple[float, bool]:
        """(0, whether the call is the half-open circuit's probe), or (the seconds after which
        to try again, False) when the call is not to be made: the rest of the cool-down, or
        while a probe is out, until it must have ended (its timeout), so that the next attempt
        finds the circuit closed, or open again, rather than the same probe still out."""
        if circuit.state == State.CLOSED:
            return 0.0, False
        now = monotonic()
        if circuit.state == State.OPEN and now < circuit.open_until:
            return circuit.open_until - now, False
        if circuit.probing:
            return max(PROBE_SLACK_S, circuit.probe_ends - now + PROBE_SLACK_S), False
        self._set(circuit, State.HALF_OPEN)
        circuit.probing, circuit.probe_ends = True, now + timeout_s + self.call_slack_s
        return 0.0, True

    def _record(self, circuit: Circuit, failed: bool | None, probe: bool) -> None:
        """A call's outcome. Calls made before the circuit opened may end while it is open or
        half-open: only the probe's closes or reopens it. One that says nothing of the target
        (None) changes nothing: a probe of that kind leaves the next fire to probe."""
        now = monotonic()
        if probe:
            circuit.probing = False
        if failed is None:
            return
        if failed:
            circuit.failures_in_a_row += 1
        else:
            circuit.failures_in_a_row = 0
            if probe:
                self._close(circuit)
        self._remember(circuit, now, failed)
        if failed and (probe or (circuit.state == State.CLOSED and self._trips(circuit))):
            self._open(circuit, now)

    def _remember(self, circuit: Circuit, now: float, failed: bool) -> None:
        calls, window_s = circuit.calls, circuit.settings.window_s
        calls.append((now, failed))
        while calls and (calls[0][0] < now - window_s or len(calls) > circuit.settings.window_calls_max):
            calls.popleft()

    def _trips(self, circuit: Circuit) -> bool:
        s = circuit.settings
        if circuit.failures_in_a_row >= s.failures:
            return True
        failed = sum(1 for _, f in circuit.calls if f)
        return len(circuit.calls) >= s.window_calls_min and failed >= s.failure_rate * len(circuit.calls)

    def _open(self, circuit: Circuit, now: float) -> None:
        circuit.open_until = now + circuit.settings.cooldown_s
        circuit.opened += 1
        self._set(circuit, State.OPEN)
        log.warning("circuit_opened", team=circuit.team, target=circuit.target,
                    failures_in_a_row=circuit.failures_in_a_row, calls_in_window=len(circuit.calls),
                    cooldown_s=circuit.settings.cooldown_s, override=dict(circuit.override) or None)

    def _close(self, circuit: Circuit) -> None:
        circuit.calls.clear()
        self._set(circuit, State.CLOSED)
        log.info("circuit_closed", team=circuit.team, target=circuit.target)

    def _set(self, circuit: Circuit, state: State) -> None:
        circuit.state = state
        if self._metrics is not None:
            self._metrics.circuit_state.labels(circuit.team, circuit.target, circuit.settings_label).set(int(state))


def _refused(fire: dict[str, Any], circuit: Circuit, retry_after_s: float) -> Outcome:
    now_ms = wall_ms()
    why = "a probe is out" if circuit.state == State.HALF_OPEN else "cooling down"
    return Outcome(fire["fire_id"], fire["attempt"], "failed", 0, now_ms, now_ms,
                   f"{OPEN}: {circuit.target} is failing ({why}; opened {circuit.opened} times)",
                   retry_after_ms=max(1, round(retry_after_s * 1000)))
