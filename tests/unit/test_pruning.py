"""Per-team and per-node entries go with their team or node (issue 16, defect 10): usage and fire
windows in the state, the executor's team gates, the leader's follower acks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj

from schedb.commands import AssignFires, CreateApiKey, CreateJob, DeleteJob, RevokeApiKey, SetQuotas
from schedb.config import load_config
from schedb.executor import Executor
from schedb.fence import SENT, Echoes
from schedb.fsm.machine import StateMachine
from schedb.metrics import NodeMetrics
from schedb.raft_node import RaftNode
from tests.unit.test_state import T0, cluster_state, spec

ADMIN = {"key": "k-admin", "team": "ops", "role": "admin", "remote": "127.0.0.1"}


def fired_job(state: StateMachine, team: str) -> str:
    """A job of the team that fired once: the team has usage and a fire window."""
    job_id = f"job-{team}"
    assert state.apply(CreateJob(T0, spec(job_id), team=team, actor=ADMIN))["ok"]
    assert state.apply(AssignFires(T0, [[job_id, T0 + 1000, "node2"]]))["assigned"] == 1
    return job_id


def per_team(state: StateMachine) -> dict[str, set[str]]:
    return {"usage": set(state.usage), "fire_windows": set(state.fire_windows), "team_jobs": set(state.team_jobs)}


def test_a_team_whose_last_job_is_deleted_leaves_no_entries() -> None:
    state = cluster_state()
    for team in ("gone", "stays"):
        fired_job(state, team)
    assert state.apply(DeleteJob(T0, "job-gone"))["ok"]
    assert per_team(state) == {"usage": {"stays"}, "fire_windows": {"stays"}, "team_jobs": {"stays"}}


def test_a_team_with_a_live_key_or_its_own_quotas_stays_until_those_go() -> None:
    state = cluster_state()
    keyed, quoted = fired_job(state, "keyed"), fired_job(state, "quoted")
    assert state.apply(CreateApiKey(T0, "0123456789ab", "ab" * 32, "keyed", "operator", actor=ADMIN))["ok"]
    assert state.apply(SetQuotas(T0, "quoted", {"max_jobs": 5}, actor=ADMIN))["ok"]
    for job_id in (keyed, quoted):
        assert state.apply(DeleteJob(T0, job_id))["ok"]
    assert per_team(state)["usage"] == {"keyed", "quoted"}  # the teams still exist
    assert state.apply(RevokeApiKey(T0, "0123456789ab", actor=ADMIN))["ok"]
    assert state.apply(SetQuotas(T0, "quoted", {"max_jobs": None}, actor=ADMIN))["ok"]
    assert per_team(state) == {"usage": set(), "fire_windows": set(), "team_jobs": set()}


async def test_an_executor_keeps_a_team_gate_only_while_calls_of_that_team_hold_or_await_it(
        tmp_path: Path) -> None:
    config_file = tmp_path / "node.toml"
    config_file.write_text(f'[node]\nid = "node2"\ndata_dir = "{tmp_path}"\n')
    executor = Executor(load_config(config_file, {}), None, None, NodeMetrics())  # type: ignore[arg-type]
    inside, release = asyncio.Event(), asyncio.Event()

    async def call(team: str) -> None:
        async with executor._team_gate(team, 1):
            inside.set()
            await release.wait()

    first = asyncio.create_task(call("a"))
    await inside.wait()
    second = asyncio.create_task(call("a"))  # waits: the quota is 1
    await asyncio.sleep(0.01)
    assert not second.done() and len(executor._team_gates) == 1
    release.set()
    await asyncio.gather(first, second)
    for n in range(1_000):  # teams come and go
        async with executor._team_gate(f"team{n}", 4):
            pass
    assert len(executor._team_gates) == 0


class _Peer:
    def __init__(self, address: str) -> None:
        self.id = address


def test_the_leader_forgets_the_acks_of_a_node_that_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SyncObj, "_SyncObj__onMessageReceived", lambda self, node, message: None)
    node: Any = object.__new__(RaftNode)  # only what the ack bookkeeping reads: no sockets, no threads
    node.follower_acks = {}
    node.echoes = Echoes()
    peers = {address: _Peer(address) for address in ("127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004")}
    ack = {"type": "next_node_idx", "next_node_idx": 8, "success": True}
    node._SyncObj__otherNodes = {peers["127.0.0.1:9002"], peers["127.0.0.1:9003"]}
    for address in ("127.0.0.1:9002", "127.0.0.1:9003"):
        node._SyncObj__onMessageReceived(peers[address], ack)
    node._SyncObj__otherNodes = {peers["127.0.0.1:9002"], peers["127.0.0.1:9004"]}  # 9003 replaced by 9004
    node._SyncObj__onMessageReceived(peers["127.0.0.1:9004"], ack)
    assert sorted(node.follower_acks) == ["127.0.0.1:9002", "127.0.0.1:9004"]
    assert node.follower_acks["127.0.0.1:9004"][1] == 7
    assert sorted(node.echoes._sent) == []  # the acks carried no round-trip stamp
    node._SyncObj__onMessageReceived(peers["127.0.0.1:9004"], {**ack, SENT: 5.0})
    node._SyncObj__otherNodes = {peers["127.0.0.1:9002"]}
    node._SyncObj__onMessageReceived(peers["127.0.0.1:9002"], {**ack, SENT: 6.0})
    assert node.echoes._sent == {"127.0.0.1:9002": 6.0}
