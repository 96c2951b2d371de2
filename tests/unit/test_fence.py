"""The follower's fence (schedb.fence): when may a node trust its view of the state to fire?"""

from __future__ import annotations

from typing import Any

from schedb.fence import ECHO, SENT, Echoes, Fence

T0_MS = 1_800_000_000_000


def test_a_round_trip_within_the_fence_and_applied_opens_it() -> None:
    fence = Fence(long_gap_s=3.0)
    fence.heard(100.0, T0_MS, commit_index=7, echo=99.9)  # its reply sent at 99.9 s reached the leader
    assert not fence.open(100.1, 3.0, last_applied=6, state_now_ms=T0_MS, max_offset_ms=500, leading=False)
    assert fence.open(100.1, 3.0, last_applied=7, state_now_ms=T0_MS + 600, max_offset_ms=500, leading=False)
    assert not fence.open(102.9, 3.0, last_applied=7, state_now_ms=T0_MS + 600, max_offset_ms=500, leading=False)


def test_a_leader_is_never_fenced() -> None:
    assert Fence(long_gap_s=3.0).open(100.0, 3.0, 0, 0, 500, leading=True)


def test_hearing_the_leader_without_being_heard_closes_the_fence() -> None:
    """Found by the simulator (seeds 42, 46, 126, 203): a one-way partition cut what a follower
    sent, not what it heard; its fence stayed open, it fired, and the leader, which heard nothing
    from it for reassign_after_s, released those fires to another follower as the same attempt.
    The fence counts from the last reply the leader got (its echo), not from what arrives."""
    fence = Fence(long_gap_s=3.0)
    fence.heard(100.0, T0_MS, commit_index=7, echo=99.9)
    for tick in range(1, 40):  # the leader's heartbeats keep coming, echoing the same old reply
        fence.heard(100.0 + tick * 0.1, T0_MS + tick * 100, commit_index=7, echo=99.9)
    assert fence.open(102.8, 3.0, 7, T0_MS + 2_800, 500, leading=False)
    assert not fence.open(102.95, 3.0, 7, T0_MS + 2_950, 500, leading=False)


def test_a_first_message_without_an_echo_opens_nothing() -> None:
    fence = Fence(long_gap_s=3.0)
    fence.heard(100.0, T0_MS, commit_index=0, echo=None)
    assert not fence.open(100.1, 3.0, 0, T0_MS, 500, leading=False)


def test_a_deposed_leader_waits_to_hear_the_next_one() -> None:
    """Found by the simulator (seed 5): a node led for a moment, released its own fires to a
    follower as the same attempt, and lost its leadership before it learnt that the release
    committed. Its fence was open (it had heard the previous leader 1.9 s before, within
    fence_s), so it fired one of them from its state, as did the follower the release gave it
    to. A node that led hears a leader again, and applies what that leader committed, first."""
    fence = Fence(long_gap_s=3.0)
    fence.heard(100.0, T0_MS, commit_index=7, echo=99.95)
    fence.leading()  # elected at 100.5 s (the Raft layer tells it)
    assert not fence.open(101.2, 3.0, 9, T0_MS, 500, leading=False)  # deposed: heard no one since
    fence.heard(101.5, T0_MS + 1_500, commit_index=12, echo=101.4)  # the next leader
    assert not fence.open(101.6, 3.0, 11, T0_MS + 1_500, 500, leading=False)
    assert not fence.open(101.6, 3.0, 12, T0_MS + 1_500, 500, leading=False)  # and its time, as after any long gap
    assert fence.open(102.2, 3.0, 13, T0_MS + 2_100, 500, leading=False)


def test_echoes_return_each_followers_newest_reply() -> None:
    leader, follower = Echoes(), Echoes()
    reply: dict[str, Any] = {"type": "next_node_idx", "next_node_idx": 8}
    follower.stamp("leader", reply, now=50.0)
    assert reply[SENT] == 50.0
    first: dict[str, Any] = {"type": "append_entries"}
    leader.stamp("f1", first, now=1.0)
    assert ECHO not in first  # no reply from f1 yet
    leader.replied("f1", reply)
    leader.replied("f1", {"type": "next_node_idx", SENT: 49.0})  # an older reply, late: ignored
    for kind, echoed in (("append_entries", True), ("request_vote", False)):
        message: dict[str, Any] = {"type": kind}
        leader.stamp("f1", message, now=2.0)
        assert (message.get(ECHO) == 50.0) is echoed
    leader.keep_only({"f2"})
    gone: dict[str, Any] = {"type": "append_entries"}
    leader.stamp("f1", gone, now=3.0)
    assert ECHO not in gone
