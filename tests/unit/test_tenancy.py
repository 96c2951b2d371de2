"""Teams in the state machine: keys, scoping, quotas, throttling, usage, secrets, audit."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from schedb.commands import (
    AssignFires,
    CompleteFires,
    CreateApiKey,
    CreateJob,
    DeleteJob,
    DeleteSecret,
    Outcome,
    PutSecret,
    RegisterNode,
    ReplaceJob,
    ReplayDeadLetter,
    RevokeApiKey,
    SetDefaultQuotas,
    SetQuotas,
    TriggerJob,
)
from schedb.fsm.limits import StateLimits
from schedb.fsm.machine import StateMachine
from schedb.timefmt import ms_to_rfc3339
from tests.unit.test_state import T0, cluster_state, spec

ADMIN = {"key": "k-admin", "team": "ops", "role": "admin", "remote": "127.0.0.1"}
ALICE = {"key": "k-alice", "team": "a", "role": "operator", "remote": "127.0.0.1"}
BOB = {"key": "k-bob", "team": "b", "role": "operator", "remote": "127.0.0.1"}
HASH = "ab" * 32


def two_teams() -> StateMachine:
    state = cluster_state()
    assert state.apply(CreateJob(T0, spec("ja"), team="a", actor=ALICE))["ok"]
    assert state.apply(CreateJob(T0, spec("jb"), team="b", actor=BOB))["ok"]
    return state


def test_a_key_is_stored_by_hash_and_revocation_removes_it_from_lookup() -> None:
    state = cluster_state()
    assert state.apply(CreateApiKey(T0, "0123456789ab", HASH, "a", "viewer", "ci", actor=ADMIN))["ok"]
    assert state.key_hashes[HASH] == "0123456789ab"
    assert state.apply(CreateApiKey(T0, "0123456789ac", HASH, "a", "viewer", actor=ADMIN))["error"] == "conflict"
    assert state.apply(CreateApiKey(T0, "0123456789ad", "cd" * 32, "a", "root", actor=ADMIN))["error"] == "invalid"
    assert state.apply(RevokeApiKey(T0 + 5, "0123456789ab", actor=ADMIN))["ok"]
    assert HASH not in state.key_hashes
    assert state.api_keys["0123456789ab"]["revoked_ms"] == T0 + 5


def test_another_teams_job_does_not_exist_for_an_operator() -> None:
    state = two_teams()
    before = state.canonical_bytes()
    for command in (TriggerJob(T0, "jb", actor=ALICE), DeleteJob(T0, "jb", actor=ALICE),
                    ReplaceJob(T0, spec("jb", paused=True), actor=ALICE)):
        assert state.apply(command)["error"] == "not_found"
    assert state.apply(CreateJob(T0, spec("jc"), team="b", actor=ALICE))["error"] == "forbidden"
    assert state.jobs["jb"]["spec"]["paused"] is False and "jc" not in state.jobs
    assert state.apply(TriggerJob(T0, "jb", actor=ADMIN))["ok"]  # an admin sees every team
    assert before != state.canonical_bytes()


def test_max_jobs_quota_refuses_the_next_create_until_raised_at_runtime() -> None:
    state = two_teams()
    assert state.apply(SetQuotas(T0, "a", {"max_jobs": 1}, actor=ADMIN))["ok"]
    refused = state.apply(CreateJob(T0, spec("ja2"), team="a", actor=ALICE))
    assert refused["error"] == "quota" and refused["limit"] == "max_jobs"
    assert state.apply(CreateJob(T0, spec("jb2"), team="b", actor=BOB))["ok"]  # b is not limited
    assert state.apply(SetQuotas(T0, "a", {"max_jobs": None}, actor=ADMIN))["ok"]  # back to the default
    assert state.apply(CreateJob(T0, spec("ja2"), team="a", actor=ALICE))["ok"]
    assert state.apply(DeleteJob(T0, "ja2", actor=ALICE))["ok"] and state.team_jobs["a"] == 1


def test_fires_over_the_per_minute_quota_are_recorded_throttled_and_other_teams_fire() -> None:
    state = two_teams()
    assert state.apply(SetQuotas(T0, "a", {"fires_per_minute": 3}, actor=ADMIN))["ok"]
    statuses: dict[str, list[str]] = {"a": [], "b": []}
    for second in range(1, 6):
        now = T0 + second * 1000
        items = [[job, now, "node2"] for job in ("ja", "jb") if state.jobs[job]["next_fire_ms"] == now]
        result = state.apply(AssignFires(now - 10, items))
        assert result["assigned"] + result["throttled"] == 2
    for job, team in (("ja", "a"), ("jb", "b")):
        statuses[team] = [r["status"] for r in state.history.get(job, [])]
    assert statuses["a"] == ["throttled", "throttled"] and statuses["b"] == []
    assert state.usage["a"]["fires"] == 3 and state.usage["a"]["throttled"] == 2
    assert state.usage["b"]["fires"] == 5 and state.counters["fires_throttled"] == 2
    assert state.jobs["ja"]["next_fire_ms"] == T0 + 6000  # a throttled occurrence is passed, not retried


def test_usage_counts_attempts_webhook_time_and_bytes() -> None:
    state = two_teams()
    state.apply(AssignFires(T0, [["ja", T0 + 1000, "node2"]]))
    row = Outcome("ja:" + str(T0 + 1000), 1, "succeeded", 200, T0 + 1000, T0 + 1250, bytes_sent=321).to_list()
    assert state.apply(CompleteFires(T0 + 1300, "node2", [row]))["committed"] == 1
    assert {k: state.usage["a"][k] for k in ("attempts", "webhook_ms", "bytes_sent")} == \
        {"attempts": 1, "webhook_ms": 250, "bytes_sent": 321}


def test_secrets_are_per_team_and_only_the_own_team_may_change_them() -> None:
    state = two_teams()
    assert state.apply(PutSecret(T0, "a", "token", b"\x01sealed", actor=ALICE)) == {
        "ok": True, "created": True, "version": 1, "created_ms": T0, "updated_ms": T0}
    assert state.apply(PutSecret(T0, "a", "token", b"\x01other", actor=BOB))["error"] == "forbidden"
    assert state.apply(PutSecret(T0, "a", "token", b"\x01again", actor=ALICE))["created"] is False
    assert state.secrets["a"]["token"]["version"] == 2
    assert state.apply(DeleteSecret(T0, "a", "token", actor=BOB))["error"] == "forbidden"
    assert state.apply(DeleteSecret(T0, "a", "token", actor=ALICE))["ok"] and "a" not in state.secrets


def test_every_api_command_leaves_one_audit_record_and_cluster_commands_none() -> None:
    state = two_teams()
    state.apply(TriggerJob(T0, "jb", actor=ALICE))
    state.apply(AssignFires(T0, []))
    records: list[dict[str, Any]] = list(state.audit)
    assert [(r["action"], r["target"], r["team"], r["result"]) for r in records] == [
        ("CreateJob", "ja", "a", "ok"), ("CreateJob", "jb", "b", "ok"), ("TriggerJob", "jb", "a", "not_found")]
    assert [r["seq"] for r in records] == [1, 2, 3]


def test_a_snapshot_from_before_teams_loads_with_every_job_in_the_default_team() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec("old")))
    data = dict(state.__dict__)
    for name in ("api_keys", "key_hashes", "quotas", "secrets", "usage", "fire_windows", "team_jobs", "audit",
                 "audit_seq", "dependents", "runs", "snapshot_version"):
        del data[name]
    del data["jobs"]["old"]["team"]
    for field in ("depends_on", "trigger_rule"):  # from before workflows
        del data["jobs"]["old"]["spec"][field]
    old_limits = StateLimits.__new__(StateLimits)  # pickled by a version without the newer bounds
    old_limits.__dict__.update({"history_per_job": 7, "recent_executions": 10_000})
    data["limits"] = old_limits
    data.pop("default_quotas")
    restored = StateMachine.__new__(StateMachine)
    restored.__setstate__(data)
    assert restored.jobs["old"]["team"] == "default" and restored.team_jobs == {"default": 1}
    assert restored.limits.history_per_job == 7 and restored.limits.api_keys_max == StateLimits().api_keys_max
    restored.apply(RegisterNode(T0, "node2", "127.0.0.1:9002", "127.0.0.1:8002"))
    assert restored.apply(AssignFires(T0, [["old", T0 + 1000, "node2"]]))["assigned"] == 1  # reads the quotas
    renamed = {**restored.jobs["old"]["spec"], "schedule": "@every 2s"}
    assert restored.apply(ReplaceJob(T0, renamed))["ok"]  # reads depends_on
    assert restored.apply(DeleteJob(T0, "old"))["ok"]


def test_default_quotas_come_through_the_log_and_team_quotas_override_them() -> None:
    state = two_teams()
    wanted = {"max_jobs": 5, "fires_per_minute": 60, "concurrent_webhooks": 2, "api_rps": 10}
    assert state.apply(SetDefaultQuotas(T0, {**wanted, "api_rps": 0}))["error"] == "invalid"
    assert state.apply(SetDefaultQuotas(T0, {"max_jobs": 5}))["error"] == "invalid"  # all of them, or nothing
    assert state.apply(SetDefaultQuotas(T0, wanted))["ok"]
    assert state.apply(SetQuotas(T0, "a", {"api_rps": 99}, actor=ADMIN))["quotas"] == {**wanted, "api_rps": 99}
    assert state.apply(SetQuotas(T0, "billing\n", {"api_rps": 1}, actor=ADMIN))["error"] == "invalid"


# -- hostile input: a bad command is rejected the same way and changes nothing -----------------

JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
                       | st.binary(max_size=20), lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=10)


@given(team=JSONISH, quotas=JSONISH)
@example(team="team-a", quotas={"": 0})  # hypothesis found it: an empty key gave an empty field name
@settings(max_examples=200, deadline=None)
def test_set_quotas_rejects_garbage_without_a_trace(team: Any, quotas: Any) -> None:
    state = two_teams()
    before = state.quotas.copy()
    result = state.apply(SetQuotas(T0, team, quotas, actor=ADMIN))
    if "error" in result:
        assert result["error"] == "invalid" and result["errors"][0]["field"] and state.quotas == before
    else:
        assert all(isinstance(v, int) and v >= 1 for v in result["quotas"].values())


@given(key_id=JSONISH | st.text(alphabet="0123456789abcdef", min_size=12, max_size=12), team=JSONISH,
       role=st.sampled_from(["admin", "operator", "viewer", "root", ""]) | JSONISH, name=JSONISH)
@settings(max_examples=200, deadline=None)
def test_create_api_key_rejects_garbage_without_a_trace(key_id: Any, team: Any, role: Any, name: Any) -> None:
    state = cluster_state()
    result = state.apply(CreateApiKey(T0, key_id, HASH, team, role, name, actor=ADMIN))
    assert ("error" in result) == (state.api_keys == {})


@given(actor=st.dictionaries(st.sampled_from(["key", "team", "role", "remote"]), JSONISH, max_size=4),
       command=st.sampled_from(["trigger", "delete", "secret", "create"]))
@settings(max_examples=200, deadline=None)
def test_any_actor_is_applied_deterministically(actor: dict[str, Any], command: str) -> None:
    commands = {"trigger": TriggerJob(T0, "ja", actor=actor), "delete": DeleteJob(T0, "jb", actor=actor),
                "secret": PutSecret(T0, "a", "n", b"\x01x", actor=actor),
                "create": CreateJob(T0, spec("jc"), team="a", actor=actor)}
    first, second = two_teams(), two_teams()
    assert first.apply(commands[command]) == second.apply(commands[command])
    assert first.canonical_bytes() == second.canonical_bytes()
    assert len(first.audit) == 2 + bool(actor)  # the two creates, and this one unless the cluster proposed it


def test_a_throttled_one_shot_is_dead_lettered_so_it_can_be_replayed() -> None:
    state = two_teams()
    assert state.apply(SetQuotas(T0, "a", {"fires_per_minute": 1}, actor=ADMIN))["ok"]
    state.apply(AssignFires(T0, [["ja", T0 + 1000, "node2"]]))  # the minute's one fire
    at = T0 + 2500
    assert state.apply(CreateJob(T0, spec("once", f"@at {ms_to_rfc3339(at)}"), team="a", actor=ALICE))["ok"]
    assert state.apply(AssignFires(T0 + 2000, [["once", at, "node2"]]))["throttled"] == 1
    letter = state.dead_letters[f"once:{at}"]
    assert letter["last_status"] == "throttled" and state.jobs["once"]["next_fire_ms"] is None
    assert state.apply(SetQuotas(T0, "a", {"fires_per_minute": None}, actor=ADMIN))["ok"]
    assert state.apply(ReplayDeadLetter(T0 + 3000, f"once:{at}", actor=ALICE))["ok"]


def test_an_idempotency_key_of_another_team_replays_nothing() -> None:
    state = cluster_state()
    assert state.apply(CreateJob(T0, spec("ja"), "idem-1", team="a", actor=ALICE))["job_id"] == "ja"
    assert state.apply(CreateJob(T0, spec("jb"), "idem-1", team="b", actor=BOB)) == {"ok": True, "job_id": "jb"}
    assert state.apply(CreateJob(T0, spec("jx"), "idem-1", team="a", actor=ALICE))["replayed"] is True
