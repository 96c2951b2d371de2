"""Prometheus metrics of one node (`GET /metrics`).

Two kinds:
- events measured at the edges, as they happen: fire delay, webhook duration,
  fires by outcome on this executor, commit latency, API requests, leadership
  changes;
- numbers read from the replicated state and Raft at scrape time (a custom
  collector): jobs, active fires, dead letters, the state's own counters
  (retries, moves, duplicate completions, …), role, commit index, log size.
  The state's counters are the same on every node: they count what the
  cluster committed, not what this node did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

DELAY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
ROLES = ("follower", "candidate", "leader")
# Per-team usage (replicated, the same on every node), by the field of tenancy.USAGE_FIELDS.
TEAM_USAGE = (("fires", "schedb_team_fires", "Fires created", 1),
              ("attempts", "schedb_team_attempts", "Webhook calls made", 1),
              ("webhook_ms", "schedb_team_webhook_seconds", "Time spent in webhook calls", 1000),
              ("bytes_sent", "schedb_team_bytes_sent", "Request body bytes sent to webhooks", 1),
              ("throttled", "schedb_team_throttled", "Fires not run: over the fires-per-minute quota", 1))


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fire_delay = Histogram("schedb_fire_delay_seconds", "Start of a webhook attempt minus its due time",
                                    buckets=DELAY_BUCKETS_S, registry=r)
        self.webhook_duration = Histogram("schedb_webhook_duration_seconds", "Duration of webhook attempts",
                                          buckets=DURATION_BUCKETS_S, registry=r)
        self.fires = Counter("schedb_executor_fires_total", "Attempts this node executed or skipped, by outcome",
                             ["outcome"], registry=r)
        self.commit_latency = Histogram("schedb_commit_latency_seconds", "Time from proposing a command to its "
                                        "local apply", ["command"], buckets=COMMIT_BUCKETS_S, registry=r)
        self.commit_failures = Counter("schedb_commit_failures_total", "Proposals that did not commit",
                                       ["command", "reason"], registry=r)
        self.api_requests = Counter("schedb_api_requests_total", "HTTP API requests",
                                    ["route", "method", "status"], registry=r)
        self.leadership_changes = Counter("schedb_leadership_changes_total",
                                          "Times this node became or stopped being the leader", registry=r)
        self.inflight = Gauge("schedb_webhooks_in_flight", "Webhook requests running on this node", registry=r)
        self.admission_window = Gauge("schedb_admission_window_fires", "The most fires this leader lets an "
                                      "executor hold while it falls behind (schedb.admission)", ["executor"],
                                      registry=r)
        self.workers = Gauge("schedb_executor_workers", "Delivery worker processes running on this node "
                             "(schedb.worker_pool; 0: the node's own loop calls the webhooks)", registry=r)
        self.worker_exits = Counter("schedb_executor_worker_exits_total", "Delivery workers that ended unasked "
                                    "(a crash, a kill), and the calls they had in flight", ["what"], registry=r)
        self.circuit_state = Gauge("schedb_circuit_state", "This node's circuit per team, webhook target and the "
                                   "jobs' own breaker settings (\"\": the node's): 0 closed, 1 half-open, 2 open "
                                   "(schedb.breaker)", ["team", "target", "settings"], registry=r)

    def forget_circuit(self, team: str, target: str, settings: str) -> None:
        with contextlib.suppress(KeyError):  # never set
            self.circuit_state.remove(team, target, settings)

    def set_admission_window(self, executor: str, window: int | None) -> None:
        """A window set, or lifted (None: the series goes away)."""
        if window is not None:
            self.admission_window.labels(executor).set(window)
            return
        with contextlib.suppress(KeyError):  # it had none
            self.admission_window.remove(executor)

    def watch(self, read_state: Callable[[], dict[str, Any]], read_raft: Callable[[], dict[str, Any]]) -> None:
        """Register the scrape-time collector over the node's state and Raft view."""
        self.registry.register(_StateCollector(read_state, read_raft))


class _StateCollector(Collector):
    def __init__(self, read_state: Callable[[], dict[str, Any]], read_raft: Callable[[], dict[str, Any]]) -> None:
        self._read_state = read_state
        self._read_raft = read_raft

    def collect(self) -> Iterator[Any]:
        state = self._read_state()
        raft = self._read_raft()
        for name, help_text in (("jobs", "Jobs"), ("active_fires", "Fires assigned or pending, without an outcome"),
                                ("pending_fires", "Fires waiting for an executor"),
                                ("dead_letters", "Fires in the dead-letter queue")):
            yield GaugeMetricFamily(f"schedb_{name}", help_text, value=state[name])
        for name, value in sorted(state["counters"].items()):
            yield CounterMetricFamily(f"schedb_cluster_{name}", f"Committed by the cluster: {name}", value=value)
        yield from _team_usage(state["usage"])
        role = GaugeMetricFamily("schedb_raft_role", "1 for this node's current Raft role", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1.0 if raft["role"] == name else 0.0)
        yield role
        yield GaugeMetricFamily("schedb_raft_commit_index", "Raft commit index", value=raft["commit_index"])
        yield GaugeMetricFamily("schedb_raft_applied_index", "Last applied log index", value=raft["last_applied"])
        yield GaugeMetricFamily("schedb_raft_log_entries", "Entries in the Raft log", value=raft["log_len"])
        yield GaugeMetricFamily("schedb_raft_term", "Current Raft term", value=raft["term"])


def _team_usage(usage: dict[str, dict[str, int]]) -> Iterator[Any]:
    for field, name, help_text, divisor in TEAM_USAGE:
        family = CounterMetricFamily(name, help_text, labels=["team"])
        for team in sorted(usage):
            family.add_metric([team], usage[team][field] / divisor)
        yield family
