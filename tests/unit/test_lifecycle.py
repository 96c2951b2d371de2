"""A fire's life in the state machine: retries, dead letters, replays, moves, triggers."""

from __future__ import annotations

from typing import Any

from schedb.commands import (
    AssignFires,
    BackfillJob,
    CompleteFires,
    CreateJob,
    DeleteJob,
    DrainNode,
    DropDeadLetter,
    Outcome,
    RegisterNode,
    ReplaceJob,
    ReplayDeadLetter,
    TriggerJob,
)
from schedb.fsm.machine import StateMachine
from schedb.retry import backoff_ms
from tests.unit.test_state import T0, at, cluster_state, ok, spec

FIRE = f"job:{T0 + 1000}"


def failed(fire_id: str, attempt: int, retry_after_ms: int = 0) -> list[Any]:
    return Outcome(fire_id, attempt, "failed", 500, T0, T0 + 5, "HTTP 500", retry_after_ms).to_list()


def assigned_state(**job: Any) -> StateMachine:
    state = cluster_state()
    state.apply(CreateJob(T0, spec(**job)))
    state.apply(AssignFires(T0, [["job", T0 + 1000, "node2"]]))
    return state


def test_a_failed_attempt_is_retried_on_the_same_executor_after_a_backoff() -> None:
    state = assigned_state(retry={"max_attempts": 3, "backoff_s": 2, "backoff_max_s": 60})
    at(state, CompleteFires(T0 + 1100, "node2", [failed(FIRE, 1)]))
    fire = state.book.fires[FIRE]
    assert fire["attempt"] == 2 and fire["node"] == "node2"
    assert fire["due_ms"] == T0 + 1100 + backoff_ms(FIRE, 1, 2, 60)
    assert 1600 <= fire["due_ms"] - (T0 + 1100) < 2400  # 2 s ± 20 % jitter
    assert [e["status"] for e in state.history["job"]] == ["failed"]
    assert state.counters["retries_scheduled"] == 1


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    delays = [backoff_ms("f", n, 1, 10) for n in range(1, 7)]
    assert delays[0] < delays[1] < delays[2] and max(delays) == 10_000
    assert backoff_ms("f", 1, 1, 10, retry_after_ms=5_000) == 5_000
    assert backoff_ms("f", 1, 1, 10, retry_after_ms=60_000) == 10_000  # bounded by the cap
    assert backoff_ms("f", 3, 1, 10) == backoff_ms("f", 3, 1, 10)  # deterministic jitter


def test_exhausted_attempts_go_to_the_dead_letter_queue_and_replay_brings_them_back() -> None:
    state = assigned_state(retry={"max_attempts": 2, "backoff_s": 1, "backoff_max_s": 5})
    at(state, CompleteFires(T0 + 1100, "node2", [failed(FIRE, 1)]))
    at(state, CompleteFires(T0 + 3000, "node2", [failed(FIRE, 2)]))
    assert FIRE not in state.book.fires and state.jobs["job"]["active_fires"] == []
    letter = state.dead_letters[FIRE]
    assert letter["attempts"] == 2 and letter["last_error"] == "HTTP 500"
    assert at(state, ReplayDeadLetter(T0 + 5000, FIRE)) == {"ok": True, "fire_id": FIRE}
    fire = state.book.fires[FIRE]
    assert fire["attempt"] == 3 and fire["node"] == "" and fire["trigger"] == "replay"
    assert state.book.pending == {FIRE: None} and state.dead_letters == {}
    at(state, AssignFires(T0 + 5000, [], [[FIRE, 3, "node3"]]))
    assert state.book.fires[FIRE]["attempt"] == 3 and state.book.fires[FIRE]["node"] == "node3"
    at(state, CompleteFires(T0 + 5100, "node3", [ok(FIRE, attempt=3)]))
    assert [e["attempt"] for e in state.history["job"]] == [1, 2, 3]
    assert at(state, ReplayDeadLetter(T0, FIRE))["error"] == "not_found"


def test_drop_dead_letter() -> None:
    state = assigned_state(retry={"max_attempts": 1})
    state.apply(CompleteFires(T0 + 1100, "node2", [failed(FIRE, 1)]))
    assert state.apply(DropDeadLetter(T0, FIRE)) == {"ok": True}
    assert state.apply(DropDeadLetter(T0, FIRE))["error"] == "not_found"


def test_moving_a_held_fire_starts_a_new_attempt_and_the_first_success_wins() -> None:
    state = assigned_state()
    assert state.apply(AssignFires(T0 + 7000, [], [[FIRE, 1, "node3"]]))["reassigned"] == 1
    fire = state.book.fires[FIRE]
    assert (fire["attempt"], fire["node"]) == (2, "node3") and state.counters["fires_reassigned"] == 1
    assert state.book.of_node("node2") == []
    # The old executor was only slow: its attempt-1 success still counts, once.
    assert state.apply(CompleteFires(T0 + 7100, "node2", [ok(FIRE, attempt=1)]))["committed"] == 1
    assert FIRE not in state.book.fires
    assert state.apply(CompleteFires(T0 + 7200, "node3", [ok(FIRE, attempt=2)]))["committed"] == 0


def test_an_older_attempt_failing_does_not_disturb_the_current_one() -> None:
    state = assigned_state()
    state.apply(AssignFires(T0 + 7000, [], [[FIRE, 1, "node3"]]))
    state.apply(CompleteFires(T0 + 7100, "node2", [failed(FIRE, 1)]))
    fire = state.book.fires[FIRE]
    assert (fire["attempt"], fire["node"]) == (2, "node3")
    assert state.counters["retries_scheduled"] == 0 and len(state.history["job"]) == 1


def test_stale_moves_are_no_ops() -> None:
    state = assigned_state()
    before = state.book.fires[FIRE]["attempt"]
    result = state.apply(AssignFires(T0, [], [[FIRE, 9, "node3"], [FIRE, 1, "node2"], [FIRE, 1, "ghost"],
                                              ["nope:1", 1, "node3"], "junk"]))
    assert result["reassigned"] == 0 and state.book.fires[FIRE]["attempt"] == before


def test_trigger_makes_a_pending_fire_due_now() -> None:
    state = cluster_state()
    at(state, CreateJob(T0, spec(schedule="@yearly")))
    first = at(state, TriggerJob(T0 + 1234, "job"))
    assert at(state, TriggerJob(T0 + 1234, "job"))["error"] == "conflict"  # the first is due
    second = at(state, TriggerJob(T0 + 1234, "job", force=True))
    assert first["fire_id"] == f"job:{T0 + 1234}" and second["fire_id"] == f"job:{T0 + 1235}"
    fire = state.book.fires[first["fire_id"]]
    assert fire["node"] == "" and fire["due_ms"] == T0 + 1234 and fire["trigger"] == "manual:api"
    assert at(state, TriggerJob(T0, "ghost"))["error"] == "not_found"


def test_pause_withdraws_retries_and_pending_fires_too() -> None:
    state = assigned_state(retry={"max_attempts": 3, "backoff_s": 10, "backoff_max_s": 60})
    at(state, CompleteFires(T0 + 1100, "node2", [failed(FIRE, 1)]))  # a retry is now waiting
    at(state, TriggerJob(T0 + 1200, "job"))
    at(state, ReplaceJob(T0 + 1300, spec(paused=True)))
    assert state.book.fires == {} and state.jobs["job"]["active_fires"] == []


def test_delete_cancels_fires_and_dead_letters() -> None:
    state = assigned_state(retry={"max_attempts": 1})
    at(state, CompleteFires(T0 + 1100, "node2", [failed(FIRE, 1)]))
    at(state, TriggerJob(T0 + 1200, "job"))
    at(state, DeleteJob(T0 + 1300, "job"))
    assert state.book.fires == {} and state.dead_letters == {} and state.book.pending == {}


def test_idempotent_create_returns_the_first_job_until_the_key_expires() -> None:
    state = cluster_state()
    assert at(state, CreateJob(T0, spec("first"), "key-1")) == {"ok": True, "job_id": "first"}
    again = at(state, CreateJob(T0 + 10, spec("second"), "key-1"))
    assert again == {"ok": True, "job_id": "first", "replayed": True} and "second" not in state.jobs
    ttl = state.limits.idempotency_ttl_ms
    assert at(state, CreateJob(T0 + ttl + 1, spec("second"), "key-1")) == {"ok": True, "job_id": "second"}
    assert at(state, CreateJob(T0, spec("third"), "k" * 500))["error"] == "invalid"


def test_at_most_once_never_retries_and_never_moves_a_fire_that_may_have_started() -> None:
    state = assigned_state(delivery="at_most_once", retry={"max_attempts": 5})
    # the executor died after the fire was due: moving it could call the webhook twice
    assert state.apply(AssignFires(T0 + 8000, [], [[FIRE, 1, "node3"]]))["reassigned"] == 1
    assert FIRE not in state.book.fires and state.dead_letters[FIRE]["last_status"] == "unknown"
    (row,) = state.history["job"]
    assert (row["status"], row["reason"], row["attempt"]) == ("unknown", "executor_lost", 1)

    state = assigned_state(delivery="at_most_once", retry={"max_attempts": 5})
    state.apply(CompleteFires(T0 + 1100, "node2", [failed(FIRE, 1)]))
    assert FIRE not in state.book.fires and state.dead_letters[FIRE]["attempts"] == 1


def test_at_most_once_fire_not_yet_due_moves_normally() -> None:
    state = assigned_state(delivery="at_most_once")
    state.apply(AssignFires(T0 + 500, [], [[FIRE, 1, "node3"]]))
    assert state.book.fires[FIRE]["node"] == "node3"


def test_skipped_outcome_ends_the_fire_with_a_reason() -> None:
    state = assigned_state(concurrency="forbid")
    row = Outcome(FIRE, 1, "skipped", 0, T0 + 1000, T0 + 1000, "skipped_overlap: job:1 still running").to_list()
    assert state.apply(CompleteFires(T0 + 1010, "node2", [row]))["committed"] == 1
    (execution,) = state.history["job"]
    assert execution["status"] == "skipped" and execution["reason"] == "skipped_overlap"
    assert FIRE not in state.book.fires and state.counters["fires_skipped"] == 1


def test_backfill_creates_pending_fires_with_historical_times() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec(schedule="*/1 * * * *")))
    start, end = T0 - 600_000, T0 - 1
    result = state.apply(BackfillJob(T0, "job", start, end))
    assert result["fires"] == 10 and result["already_active"] == 0
    fires = state.book.pending_fires()
    assert [f["scheduled_ms"] for f in fires] == list(range(start, end, 60_000))
    assert all(f["trigger"] == "backfill" and f["due_ms"] == T0 for f in fires)
    assert state.apply(BackfillJob(T0, "job", start, end))["fires"] == 0  # already active: no double
    assert state.apply(BackfillJob(T0, "job", T0 - 86_400_000, T0))["error"] == "invalid"  # > 1000 fires
    assert state.apply(BackfillJob(T0, "job", end, start))["error"] == "invalid"


def test_a_draining_node_hands_back_fires_it_has_not_started() -> None:
    state = assigned_state()
    state.apply(AssignFires(T0, [["job", T0 + 2000, "node2"]]))
    second = f"job:{T0 + 2000}"
    result = state.apply(DrainNode(T0 + 500, "node2", [[FIRE, 1], [second, 7], ["ghost:1", 1], "junk"]))
    assert result == {"ok": True, "released": 1} and state.nodes["node2"]["draining"] is True
    assert state.book.fires[FIRE]["node"] == "" and state.book.fires[FIRE]["attempt"] == 1
    assert state.book.fires[second]["node"] == "node2"  # wrong attempt: stays
    state.apply(RegisterNode(T0 + 9000, "node2", "127.0.0.1:9002", "127.0.0.1:8002"))
    assert state.nodes["node2"]["draining"] is False


def missed(fire_id: str, attempt: int) -> list[Any]:
    return Outcome(fire_id, attempt, "missed", 0, T0, T0, "missed: due 18475 ms ago; misfire skip").to_list()


def test_a_success_that_commits_after_a_later_attempt_ended_the_fire_is_still_recorded() -> None:
    """Simulator seed 453000042: node2 called the fire and it succeeded, but its outcome waited to
    commit past the lease; the fire moved to node3 as attempt 2, which recorded it missed (late
    past the misfire grace), and that ended it. Node2's success then arrived and was dropped: the
    history said missed for a fire the receiver had. It is recorded now, once."""
    state = assigned_state(misfire="skip")
    assert state.apply(AssignFires(T0 + 18_000, [], [[FIRE, 1, "node3"]]))["reassigned"] == 1
    assert at(state, CompleteFires(T0 + 18_100, "node3", [missed(FIRE, 2)]))["committed"] == 1
    assert FIRE not in state.book.fires
    assert at(state, CompleteFires(T0 + 24_000, "node2", [ok(FIRE, attempt=1)]))["committed"] == 1
    rows = {row["attempt"]: row["status"] for row in state.history["job"]}
    assert rows == {1: "succeeded", 2: "missed"}
    assert at(state, CompleteFires(T0 + 24_100, "node2", [ok(FIRE, attempt=1)]))["committed"] == 0  # once
    assert FIRE not in state.book.fires and state.jobs["job"]["active_fires"] == []


def test_an_at_most_once_fire_dead_lettered_as_lost_records_its_executors_late_success() -> None:
    """The executor was not dead, only cut off: its success comes after the fire went to the dead
    letters as unknown. The history says what happened, and the dead letter goes: replaying it
    would call the webhook a second time."""
    state = assigned_state(delivery="at_most_once")
    state.apply(AssignFires(T0 + 8000, [], [[FIRE, 1, "node3"]]))
    assert state.dead_letters[FIRE]["last_status"] == "unknown"
    assert at(state, CompleteFires(T0 + 9000, "node2", [ok(FIRE, attempt=1)]))["committed"] == 1
    assert sorted(row["status"] for row in state.history["job"]) == ["succeeded", "unknown"]
    assert FIRE not in state.dead_letters and FIRE not in state.book.ended
