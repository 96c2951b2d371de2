"""Scenarios that kill, stop, freeze and restart node processes."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from chaoskit.common import Ctx, FaultNotApplied, Measured, cluster_view, restart, wait_new_leader
from devkit.harness import NodeProc

FREEZE_S = 8.0  # past the fence (3 s) and the re-assignment (5 s): the leader moves its fires


def baseline(ctx: Ctx) -> Measured:
    time.sleep(15)
    return {}


def leader_kills(ctx: Ctx) -> Measured:
    times = []
    for _ in range(ctx.args.leader_kills):
        leader = ctx.cluster.leader()
        ctx.cluster.stop([leader], sig=signal.SIGKILL)
        times.append(wait_new_leader(ctx.cluster, leader))
        restart(ctx.cluster, [leader])
        time.sleep(2)
    return {"elections": times}


def follower_kill(ctx: Ctx) -> Measured:
    victim = ctx.cluster.followers()[0]
    ctx.cluster.stop([victim], sig=signal.SIGKILL)
    time.sleep(12)
    restart(ctx.cluster, [victim])
    return {}


def no_quorum(ctx: Ctx) -> Measured:
    """Two of three nodes die: the survivor must commit nothing until they are back."""
    victims, survivor = ctx.cluster.nodes[:2], ctx.cluster.nodes[2]
    ctx.cluster.stop(victims, sig=signal.SIGKILL)
    time.sleep(1.5)  # what was in flight when they died may still land
    before = ctx.cluster.status(survivor)["commit_index"]
    time.sleep(8.5)
    commits = ctx.cluster.status(survivor)["commit_index"] - before
    restart(ctx.cluster, victims)
    return {"commits_without_quorum": commits}


def sigstop_leader(ctx: Ctx) -> Measured:
    leader = ctx.cluster.leader()
    with frozen(leader.pid):
        elected = wait_new_leader(ctx.cluster, leader)
        time.sleep(4)
    time.sleep(3)
    return {"elections": [elected]}


def follower_freezes(ctx: Ctx) -> Measured:
    """A follower SIGSTOPped for 8 s, then SIGCONTed, twice: when it thaws, the fires it held
    have moved to another node, and it must not deliver them from its stale view."""
    checks: dict[str, object] = {}
    for round_no in (1, 2):
        leader = ctx.cluster.leader()
        victim = next(n for n in ctx.cluster.nodes if n is not leader)
        with frozen(victim.pid):
            checks[f"freeze {round_no}"] = f"{victim.node_id} state {proc_state(victim.pid)}"
            time.sleep(FREEZE_S - 1.5)
            checks[f"freeze {round_no} leader saw"] = _leader_sees(leader, victim.node_id)
            time.sleep(1.5)
        checks[f"thaw {round_no}"] = f"state {proc_state(victim.pid)}"
        time.sleep(6)  # it catches up, and its executor runs again, before the next freeze
    return {"checks": checks, "quorum_kept": True}


def _leader_sees(leader: NodeProc, node_id: str) -> str:
    """How the leader rates a member: a frozen one must not look alive to its dispatcher."""
    view = cluster_view(leader)
    member = next((m for m in (view or {}).get("members", []) if m["node_id"] == node_id), None)
    if member is None:
        return "leader did not answer"
    return f"executor_alive={member.get('executor_alive')}, last_ack_ms_ago={member.get('last_ack_ms_ago')}"


def full_restart(ctx: Ctx) -> Measured:
    ctx.cluster.stop()
    time.sleep(3)
    restart(ctx.cluster, ctx.cluster.nodes)
    return {}


def rolling_restart(ctx: Ctx) -> Measured:
    for node in ctx.cluster.nodes:
        ctx.cluster.stop([node])
        restart(ctx.cluster, [node])
        time.sleep(2)
    return {}


# -- freezing a process -----------------------------------------------------------

def proc_state(pid: int) -> str:
    """The process state letter from /proc (T: stopped by a signal)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_state(pid: int, stopped: bool, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (proc_state(pid) == "T") != stopped:
        if time.monotonic() > deadline:
            raise FaultNotApplied(f"process {pid} is in state {proc_state(pid)} after "
                                  f"{'SIGSTOP' if stopped else 'SIGCONT'}")
        time.sleep(0.01)


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP pid for the block, checking it really stopped; SIGCONT it whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        _wait_state(pid, stopped=True)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
    _wait_state(pid, stopped=False)


# -- delivery workers (schedb.worker_pool): node1 and node2 run them (chaos.WORKERS_CONFIG) ----

WORKER_KILL_ROUNDS = 6
WORKER_KILL_EVERY_S = 2.5


def worker_kills(ctx: Ctx) -> Measured:
    """Every executing node's delivery workers SIGKILLed, mid-call under load, six times 2.5 s
    apart: the calls they had fail as worker_lost and are tried again, none lost; each node
    replaces its worker before the next round."""
    checks: dict[str, object] = {}
    killed = 0
    for round_no in range(1, WORKER_KILL_ROUNDS + 1):
        victims = _worker_pids(ctx)
        if not victims:
            raise FaultNotApplied("no follower runs delivery workers")
        time.sleep(1.03 - time.time() % 1)  # 30 ms into a second: the `@every 1s` burst is in flight
        for pids in victims.values():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(WORKER_KILL_EVERY_S)
        after = _worker_pids(ctx)
        replaced = all(after.get(n) and not set(after[n]) & set(pids) for n, pids in victims.items())
        checks[f"round {round_no}"] = {n: f"{old} -> {after.get(n)}" for n, old in victims.items()}
        if not replaced:
            raise FaultNotApplied(f"round {round_no}: workers not replaced: {checks[f'round {round_no}']}")
    checks["calls in flight lost with their workers (since the start)"] = sum(
        _calls_lost(node) for node in ctx.cluster.nodes)
    return {"checks": checks, "workers_killed": killed, "quorum_kept": True}


def _calls_lost(node: NodeProc) -> int:
    workers = (cluster_view(node) or {}).get("executor", {}).get("workers")
    return workers["exits"]["calls"] if workers else 0


def _worker_pids(ctx: Ctx) -> dict[str, list[int]]:
    """The worker PIDs of each follower that runs workers."""
    out = {}
    for node in ctx.cluster.nodes:
        view = cluster_view(node)
        workers = view and view["role"] == "follower" and view["executor"]["workers"]
        if workers:
            out[node.node_id] = [w["pid"] for w in workers["running"]]
    return out
