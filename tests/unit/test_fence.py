"""The follower's fence (schedb.fence): when may a node trust its view of the state to fire?"""

from __future__ import annotations

from schedb.fence import Fence

T0_MS = 1_800_000_000_000


def test_heard_within_the_fence_and_applied_opens_it() -> None:
    fence = Fence(long_gap_s=3.0)
    fence.heard(100.0, T0_MS, commit_index=7)
    assert not fence.open(100.1, 3.0, last_applied=6, state_now_ms=T0_MS, max_offset_ms=500, leading=False)
    assert fence.open(100.1, 3.0, last_applied=7, state_now_ms=T0_MS + 600, max_offset_ms=500, leading=False)
    assert not fence.open(103.1, 3.0, last_applied=7, state_now_ms=T0_MS + 600, max_offset_ms=500, leading=False)


def test_a_leader_is_never_fenced() -> None:
    assert Fence(long_gap_s=3.0).open(100.0, 3.0, 0, 0, 500, leading=True)


def test_a_deposed_leader_waits_to_hear_the_next_one() -> None:
    """Found by the simulator (seed 5): a node led for a moment, released its own fires to a
    follower as the same attempt, and lost its leadership before it learnt that the release
    committed. Its fence was open (it had heard the previous leader 1.9 s before, within
    fence_s), so it fired one of them from its state, as did the follower the release gave it
    to. A node that led hears a leader again, and applies what that leader committed, first."""
    fence = Fence(long_gap_s=3.0)
    fence.heard(100.0, T0_MS, commit_index=7)
    fence.leading()  # elected at 100.5 s (the Raft layer tells it)
    assert not fence.open(101.2, 3.0, 9, T0_MS, 500, leading=False)  # deposed: heard no one since
    fence.heard(101.5, T0_MS + 1_500, commit_index=12)  # the next leader
    assert not fence.open(101.6, 3.0, 11, T0_MS + 1_500, 500, leading=False)
    assert not fence.open(101.6, 3.0, 12, T0_MS + 1_500, 500, leading=False)  # and its time, as after any long gap
    assert fence.open(102.2, 3.0, 13, T0_MS + 2_100, 500, leading=False)
