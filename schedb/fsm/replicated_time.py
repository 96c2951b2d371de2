"""What time a command is applied at: replicated time belongs to the leader.

Pure, like the state machine that calls it (StateMachine.apply): a node's clock enters only as the
`now_ms` a command carries, and only the leader's AssignFires moves replicated time.
"""

from __future__ import annotations

from schedb.commands import AssignFires, Command, RegisterNode, SetDefaultQuotas, SetLimits

# How far past replicated time a command other than the leader's AssignFires may be applied
# (command_time): more than the leader's tick interval, far less than any schedule's period.
PROPOSER_LEAD_MS_MAX = 1_000


def command_time(command: Command, replicated_ms: int, leader_clock: bool) -> int:
    """The time a command is applied at.

    Replicated time is the leader's: the leader's AssignFires advances it (never backwards).
    Any other command may be proposed through any node, whose clock is only an input. A clock
    behind replicated time gets replicated time. One ahead by up to PROPOSER_LEAD_MS_MAX (more
    than the leader's tick, by which replicated time may trail) is used for that command only,
    so a job created through a follower starts from the instant it was created. A clock further
    ahead is wrong (that node stops executing and is not ready, schedb.clockwatch): the command
    gets replicated time, so that a job created through it does not first fire an hour out.

    Before the first tick of a leader of this version (a new cluster's first second, or a log
    of an older version replayed), every command moves time to the largest now_ms seen, as
    older versions did: replicated time is not there yet to be trusted (0 in a new cluster)."""
    if not leader_clock and isinstance(command, RegisterNode | SetLimits | SetDefaultQuotas):
        return replicated_ms  # a node's own start-up, before any clock was judged: moves nothing
    if isinstance(command, AssignFires) or not leader_clock:
        return max(replicated_ms, command.now_ms)
    if replicated_ms <= command.now_ms <= replicated_ms + PROPOSER_LEAD_MS_MAX:
        return command.now_ms
    return replicated_ms
