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


def test_echoes_return_each_followers_latest_reply() -> None:
    leader, follower = Echoes(), Echoes()
    reply: dict[str, Any] = {"type": "next_node_idx", "next_node_idx": 8}
    follower.stamp("leader", reply, now=50.0)
    assert reply[SENT] == 50.0
    first: dict[str, Any] = {"type": "append_entries"}
    leader.stamp("f1", first, now=1.0)
    assert ECHO not in first  # no reply from f1 yet
    leader.replied("f1", {"type": "next_node_idx", SENT: 49.0})
    leader.replied("f1", reply)
    for kind, echoed in (("append_entries", True), ("request_vote", False)):
        message: dict[str, Any] = {"type": kind}
        leader.stamp("f1", message, now=2.0)
        assert (message.get(ECHO) == 50.0) is echoed
    leader.keep_only({"f2"})
    gone: dict[str, Any] = {"type": "append_entries"}
    leader.stamp("f1", gone, now=3.0)
    assert ECHO not in gone


def test_a_follower_whose_clock_restarted_is_heard_again() -> None:
    """Review: a follower's host rebooted (its monotonic clock restarts near 0); the leader kept
    the larger, pre-reboot stamp and echoed it for ever, which the follower dropped as from its
    future: fenced for as long as that leader led. The leader echoes the latest reply's stamp."""
    leader, fence = Echoes(), Fence(long_gap_s=3.0)
    leader.replied("f1", {"type": "next_node_idx", SENT: 30 * 86_400.0})  # before the reboot
    leader.replied("f1", {"type": "next_node_idx", SENT: 60.0})  # after it
    message: dict[str, Any] = {"type": "append_entries"}
    leader.stamp("f1", message, now=1_000.0)
    fence.heard(60.1, T0_MS, 10, message.get(ECHO))
    assert fence.open(60.2, 3.0, 10, T0_MS + 600, 500, leading=False)


def test_a_round_trip_after_a_long_silence_waits_for_the_log_and_fresh_time() -> None:
    """Review: with a one-way partition messages kept arriving, so no gap was seen, and the first
    fresh echo after it reopened the fence at once, from a state that did not yet hold the moves
    the leader made meanwhile. A long gap in round trips raises the same barriers as one in
    messages: the commit index that message carried, and leader time stamped after it."""
    fence = Fence(long_gap_s=3.0)
    fence.heard(100.0, T0_MS, commit_index=7, echo=99.9)
    for tick in range(1, 60):  # its answers are lost: the echo stays at 99.9 s
        fence.heard(100.0 + tick * 0.1, T0_MS + tick * 100, commit_index=7, echo=99.9)
    fence.heard(106.0, T0_MS + 6_000, commit_index=11, echo=105.9)  # healed
    assert not fence.open(106.1, 3.0, 10, T0_MS + 6_100, 500, leading=False)  # the moves are not applied yet
    assert not fence.open(106.1, 3.0, 11, T0_MS + 5_000, 500, leading=False)  # nor leader time after it
    assert fence.open(106.7, 3.0, 12, T0_MS + 6_600, 500, leading=False)
